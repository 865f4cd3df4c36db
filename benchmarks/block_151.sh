#!/usr/bin/env bash
# Block split (species 1-151, 64 px: the `make demo` split, 4,178 / 557 / 557; 1-NN leakage probe 96.1%): KD vs
# scratch at the demo's budget with 3 seeds, and the seeds' other claims (split vs fused, DKD, LumiNet; issue 14
# item 5, block-split part), so the demo's one-seed comparison
# can be read. Teachers: the two resnet18 teachers `make demo` trained until it switched to one 12-epoch teacher
# (configs/block151/teacher_resnet18_e7.yaml, seeds 0 and 1; trained into $OUT/teachers when missing, their clean and
# 4-view replay stores into $OUT/stores, as the demo exported them); students: configs/block151/sweep.yaml (the demo
# student recipe, 20 epochs, restyle, batch 64),
# then `stillroom compare` on test top-1 and macro-F1 (b - a, paired seeds) and the outline-rewrite proxy
# (`stillroom shift-val`, val only) of every student.
#
#   bash benchmarks/block_151.sh                 # OUT=artifacts/block151; needs make demo's index
#
# Resumable: finished runs and evaluations are skipped. One torch thread (shared 2-core box).
set -euo pipefail
INDEX=artifacts/demo/data/sprites64_1-151  # configs/block151/*.yaml read it there
OUT=artifacts/block151  # and the teachers' stores under it
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-ce_scratch kd_t4 kd_replay4 kd_split_replay4 dkd_replay4 luminet_replay4}
# a:b pairs for `stillroom compare` (b - a); pairs with a variant not in VARIANTS are skipped
PAIRS=${PAIRS:-ce_scratch:kd_t4 ce_scratch:kd_replay4 kd_t4:kd_replay4 kd_replay4:kd_split_replay4 kd_replay4:dkd_replay4 kd_replay4:luminet_replay4 dkd_replay4:luminet_replay4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
mkdir -p "$OUT/teachers" "$OUT/stores"
[ -f "$INDEX/index.csv" ] || { echo "missing $INDEX: run make demo first" >&2; exit 1; }
for s in 0 1; do
  t="block_teacher_resnet18_e7_s$s"
  if [ ! -f "$OUT/teachers/$t/metrics.json" ]; then
    stamp "teacher $t"
    stillroom train configs/block151/teacher_resnet18_e7.yaml --out "$OUT/teachers/$t" --set "seed=$s" \
      --set "name=$t" --resume --quiet
  fi
  [ -f "$OUT/stores/${t}_clean/manifest.json" ] || stillroom softlabels export --teacher "$OUT/teachers/$t" \
    --index "$INDEX" --out "$OUT/stores/${t}_clean"
  [ -f "$OUT/stores/${t}_replay_restyle_v4_s0/manifest.json" ] || stillroom softlabels export \
    --teacher "$OUT/teachers/$t" --index "$INDEX" --out "$OUT/stores/${t}_replay_restyle_v4_s0" --views 4 \
    --augment restyle --augment-seed 0
done
for s in $SEEDS; do
  for v in $VARIANTS; do
    [ -f "$OUT/sweep/$v/seed$s/metrics.json" ] && continue
    stamp "$v seed $s"
    stillroom sweep configs/block151/sweep.yaml --out "$OUT/sweep" --jobs 1 --variant "$v" --seed "$s"
  done
done
for s in $SEEDS; do
  for v in $VARIANTS; do
    [ -f "$OUT/sweep/$v/seed$s/shift_val.json" ] || stillroom shift-val "$OUT/sweep/$v/seed$s" > /dev/null
  done
done
teacher="$OUT/teachers/block_teacher_resnet18_e7_s0"
[ -f "$teacher/shift_val.json" ] || stillroom shift-val "$teacher" > /dev/null
specs=(); for v in $VARIANTS; do specs+=("$v:sweep"); done
python benchmarks/crossview_summary.py table "$OUT" "$OUT" block "${specs[@]}" --teacher "$teacher"
for pair in $PAIRS; do
  a=${pair%%:*} b=${pair#*:}
  case " $VARIANTS " in *" $a "*) ;; *) continue ;; esac
  case " $VARIANTS " in *" $b "*) ;; *) continue ;; esac
  for metric in top1 macro_f1; do
    stillroom compare "$OUT/sweep" --metric "$metric" --a "$a" --b "$b" --json "$OUT/compare_${a}_vs_${b}_${metric}.json" \
      > "$OUT/compare_${a}_vs_${b}_${metric}.txt" 2>&1
  done
done
python benchmarks/crossview_summary.py compares "$OUT" | tee "$OUT/compare.md"
stamp "done"
