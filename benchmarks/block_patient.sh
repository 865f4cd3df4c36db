#!/usr/bin/env bash
# Issue 14, block-split row: can a student of the demo's recipe reach the 1-NN pixel probe (96.1% test) when its
# teachers and itself train longer? Two resnet18 teachers at 32 epochs (configs/block151/teacher_resnet18_e32.yaml,
# seeds 0, 1), their replay stores (16 restyled views per row, augment seed 0), then configs/block151/patient.yaml:
# LumiNet students at the demo's 20 epochs and at 96 epochs, 3 seeds each; shift-val of every run; a table beside
# the demo recipe's luminet_replay4 (benchmarks/block_151.sh) and `stillroom compare`.
#
#   bash benchmarks/block_patient.sh     # OUT=artifacts/block151; needs the demo's index (make demo)
#
#   TEACHERS=0 VARIANTS=lum_t32x1_e96 SEEDS=0 bash benchmarks/block_patient.sh   # one teacher, one student
#
# Resumable: finished teachers, stores, runs and evaluations are skipped. LANE=a|b splits the work between two
# one-thread processes (a: teacher seed 0; b: teacher seed 1, or TEACHERS="0 1"; students alternate); LANE=all runs
# everything then the summary (the default). Students wait for the stores of TEACHERS (both by default). Measured at
# one thread beside another such job (2026-12-01 box): a teacher epoch ~2 min (32 epochs ~65 min), its 16-view store
# ~11 min, a student epoch ~35 s.
set -euo pipefail
OUT=${OUT:-artifacts/block151}
INDEX=${INDEX:-artifacts/demo/data/sprites64_1-151}
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-lum_t32_e20 lum_t32_e96}
LANE=${LANE:-all}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R="$OUT/patient"
mkdir -p "$R" "$OUT/teachers" "$OUT/stores"
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
[ -f "$INDEX/index.csv" ] || { echo "missing $INDEX: run make demo first" >&2; exit 1; }

teacher() {  # SEED: train the 32-epoch teacher, then export its replay store
  local t="block_teacher_resnet18_e32_s$1"
  if [ ! -f "$OUT/teachers/$t/metrics.json" ]; then
    stamp "teacher $t"
    stillroom train configs/block151/teacher_resnet18_e32.yaml --out "$OUT/teachers/$t" --set "seed=$1" \
      --set "name=$t" --resume --quiet
  fi
  local store="$OUT/stores/${t}_replay_restyle_v16_s0"
  if [ ! -f "$store/manifest.json" ]; then
    stamp "replay store of $t"
    stillroom softlabels export --teacher "$OUT/teachers/$t" --index "$INDEX" --out "$store" \
      --views 16 --augment restyle --augment-seed 0
  fi
}
case $LANE in a) dflt=0 ;; b) dflt=1 ;; *) dflt="0 1" ;; esac
for t in ${TEACHERS:-$dflt}; do teacher "$t"; done  # TEACHERS="0 1" lets one lane train both
for s in ${TEACHERS:-0 1}; do
  while [ ! -f "$OUT/stores/block_teacher_resnet18_e32_s${s}_replay_restyle_v16_s0/manifest.json" ]; do sleep 20; done
done

i=0
for v in $VARIANTS; do
  for s in $SEEDS; do
    i=$((i + 1))
    [ "$LANE" = a ] && [ $((i % 2)) -ne 1 ] && continue
    [ "$LANE" = b ] && [ $((i % 2)) -ne 0 ] && continue
    if [ ! -f "$R/$v/seed$s/metrics.json" ]; then
      stamp "$v seed $s"
      stillroom sweep configs/block151/patient.yaml --out "$R" --jobs 1 --variant "$v" --seed "$s"
    fi
    [ -f "$R/$v/seed$s/shift_val.json" ] || stillroom shift-val "$R/$v/seed$s" >> "$R/shift_val.log" 2>&1
  done
done
[ "$LANE" = all ] || { stamp "lane $LANE done"; exit 0; }

stamp "summaries and comparisons"
for s in ${TEACHERS:-0 1}; do
  t="$OUT/teachers/block_teacher_resnet18_e32_s$s"
  [ -f "$t/shift_val.json" ] || stillroom shift-val "$t" > /dev/null
done
specs=(luminet_replay4:sweep); for v in $VARIANTS; do specs+=("$v:patient"); done
python benchmarks/crossview_summary.py table "$OUT" "$R" patient "${specs[@]}" \
  --teacher "$OUT/teachers/block_teacher_resnet18_e32_s0"
for pair in "luminet_replay4 lum_t32_e20" "lum_t32_e20 lum_t32_e96" "luminet_replay4 lum_t32x1_e96"; do
  read -r a b <<< "$pair"
  for metric in test_top1 test_macro_f1 shift_mean val_top1; do
    stillroom compare "$R/patient_summary.csv" --metric "$metric" --a "$a" --b "$b" \
      --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1 || true
  done
done
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
stamp "done"
