#!/usr/bin/env bash
# Issue 14, the demo's budget: is the wall time `make demo` spends on two 7-epoch resnet18 teachers (side by side,
# one torch thread each) better spent on one resnet18 trained 12 epochs with both threads
# (configs/block151/teacher_resnet18_e12.yaml)? Students: the demo's LumiNet student (20 epochs, 4 replayed views)
# of (a) the demo's two 7-epoch teachers (luminet_replay4 of configs/block151/sweep.yaml), (b) the one 12-epoch
# teacher (lum_t12x1_e20 of configs/block151/patient.yaml), (c) one 32-epoch teacher (lum_t32x1_e20: the teacher's
# share of the patient recipe's gain); then two changes of the student stage on the 12-epoch teacher, one at a time:
# (d) 8 replayed views instead of 4 (lum_t12x1_v8_e20), (e) peak learning rate 0.1 instead of 0.05
# (lum_t12x1_lr01_e20); 3 seeds each, shift-val of every run, a table and `stillroom compare`.
#
#   bash benchmarks/block_one_teacher.sh   # OUT=artifacts/block151; needs make demo's index, the 7-epoch teachers'
#     stores of benchmarks/block_151.sh and the 32-epoch teacher's store of benchmarks/block_patient.sh (TEACHERS=0)
#
# Resumable. The students run at one torch thread (OMP_NUM_THREADS=1); two copies side by side (LANE=a / LANE=b,
# then LANE=all for the summary) do not slow each other on the 2-core box. The 12-epoch teacher trains with the
# threads it is given (both, alone, as in the demo).
set -euo pipefail
OUT=${OUT:-artifacts/block151}
INDEX=${INDEX:-artifacts/demo/data/sprites64_1-151}
SEEDS=${SEEDS:-0 1 2}
LANE=${LANE:-all}
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
[ -f "$INDEX/index.csv" ] || { echo "missing $INDEX: run make demo first" >&2; exit 1; }

T="$OUT/teachers/block_teacher_resnet18_e12_s0"
if [ "$LANE" = b ]; then  # lane a trains the teacher, exports its stores, then measures its shift-val
  while [ ! -f "$OUT/teachers/block_teacher_resnet18_e12_s0/shift_val.json" ]; do sleep 20; done
fi
if [ ! -f "$T/metrics.json" ]; then
  stamp "teacher $T"
  stillroom train configs/block151/teacher_resnet18_e12.yaml --out "$T" --resume --quiet
fi
for v in 4 8; do
  S="$OUT/stores/block_teacher_resnet18_e12_s0_replay_restyle_v${v}_s0"
  [ -f "$S/manifest.json" ] || stillroom softlabels export --teacher "$T" --index "$INDEX" --out "$S" \
    --views "$v" --augment restyle --augment-seed 0
done
[ -f "$T/shift_val.json" ] || stillroom shift-val "$T" > /dev/null

export OMP_NUM_THREADS=1
i=0
SPECS="luminet_replay4:sweep lum_t12x1_e20:patient lum_t32x1_e20:patient lum_t12x1_v8_e20:patient lum_t12x1_lr01_e20:patient"
for spec in $SPECS; do
  v=${spec%%:*}; where=${spec##*:}
  for s in $SEEDS; do
    i=$((i + 1))
    [ "$LANE" = a ] && [ $((i % 2)) -ne 1 ] && continue
    [ "$LANE" = b ] && [ $((i % 2)) -ne 0 ] && continue
    run="$OUT/$where/$v/seed$s"
    if [ ! -f "$run/metrics.json" ]; then
      stamp "$v seed $s"
      stillroom sweep "configs/block151/$where.yaml" --out "$OUT/$where" --jobs 1 --variant "$v" --seed "$s"
    fi
    [ -f "$run/shift_val.json" ] || stillroom shift-val "$run" > /dev/null
  done
done
[ "$LANE" = all ] || { stamp "lane $LANE done"; exit 0; }

R="$OUT/one_teacher"
mkdir -p "$R"
# shellcheck disable=SC2086
python benchmarks/crossview_summary.py table "$OUT" "$R" one_teacher $SPECS --teacher "$T"
for pair in "luminet_replay4 lum_t12x1_e20" "lum_t12x1_e20 lum_t32x1_e20" "lum_t12x1_e20 lum_t12x1_v8_e20" \
  "lum_t12x1_e20 lum_t12x1_lr01_e20"; do
  read -r a b <<< "$pair"
  for metric in test_top1 test_macro_f1 shift_mean val_top1; do
    stillroom compare "$R/one_teacher_summary.csv" --metric "$metric" --a "$a" --b "$b" \
      --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1 || true
  done
done
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
stamp "done"
