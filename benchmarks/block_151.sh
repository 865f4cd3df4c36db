#!/usr/bin/env bash
# Block split (species 1-151, 64 px: the `make demo` split, 4,178 / 557 / 557; 1-NN leakage probe 96.1%): KD vs
# scratch at the demo's budget with 3 seeds, and the seeds' other claims (split vs fused, DKD, LumiNet; issue 14
# item 5, block-split part), so the demo's one-seed comparison
# can be read. Teachers: the demo's two resnet18 teachers (restyle, 7 epochs), trained by `stillroom demo` into
# $DEMO when missing; students: configs/block151/sweep.yaml (the demo student recipe, 20 epochs, restyle, batch 64),
# then `stillroom compare` on test top-1 and macro-F1 (b - a, paired seeds) and the outline-rewrite proxy
# (`stillroom shift-val`, val only) of every student.
#
#   bash benchmarks/block_151.sh                 # DEMO=artifacts/demo, OUT=artifacts/block151
#
# Resumable: finished runs and evaluations are skipped. One torch thread (shared 2-core box).
set -euo pipefail
DEMO=${DEMO:-artifacts/demo}
OUT=${OUT:-artifacts/block151}
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-ce_scratch kd_t4 kd_replay4 kd_split_replay4 dkd_replay4 luminet_replay4}
# a:b pairs for `stillroom compare` (b - a); pairs with a variant not in VARIANTS are skipped
PAIRS=${PAIRS:-ce_scratch:kd_t4 ce_scratch:kd_replay4 kd_t4:kd_replay4 kd_replay4:kd_split_replay4 kd_replay4:dkd_replay4 kd_replay4:luminet_replay4 dkd_replay4:luminet_replay4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
mkdir -p "$OUT"
if [ "$DEMO" != artifacts/demo ]; then
  echo "configs/block151/sweep.yaml reads the teachers' stores under artifacts/demo" >&2; exit 1
fi
for s in 0 1; do
  [ -f "$DEMO/runs/teacher_resnet18_s$s/metrics.json" ] || { stamp "teachers: stillroom demo"; stillroom demo --out "$DEMO"; break; }
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
teacher="$DEMO/runs/teacher_resnet18_s0"
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
