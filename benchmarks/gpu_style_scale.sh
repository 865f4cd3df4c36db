#!/usr/bin/env bash
# Issue 14 item 1 (the other-artist row) on one GPU: does scale move another artist's drawings? On the CPU box the
# box-icon proxy stays at 20-30% for every teacher and student tried (BENCHMARKS "Teachers for another artist"):
# patience was the only lever that moved it (12 -> 24 teacher epochs: +5 points), and the heavier shape recipes
# (`shape`, `deform`) cost in-domain accuracy at 20 epochs, perhaps because they need longer training. Here every
# run the CPU could not afford, side by side on one GPU (the demo's resnet18 teacher recipe: SGD 0.05, batch 64,
# bf16; `deterministic: false`, so reruns differ in the last digits):
#   - resnet18 at 100 epochs with `restyle` (the default) and `deform`, three seeds each, against the 24-epoch anchor;
#   - resnet18 and the mobilenet_v3_small student recipe (scratch) at 128 px against 64 px (resolution).
# Each run is scored with its best weights (selected on ID val) on the ID val/test splits, the box icons' val (odd
# national ids: select) and test (even ids: report), and shift-val; summary.md / results_summary.csv by
# benchmarks/style_summary.py (the layout `stillroom compare` reads).
#
# Data, built on the CPU machine (seconds) and carried without the decode caches:
#   stillroom data build sprites --size 128 --species 1-151 --split blocks --out artifacts/s37/data/sprites128_1-151
#   stillroom data build style-icons --id-index artifacts/s37/data/sprites128_1-151 --out artifacts/s37/data/style_icons128
#   D=artifacts/s37/gpu; mkdir -p $D; for s in artifacts/demo/data/sprites64_1-151:sprites64 \
#     artifacts/demo/data/style_icons_sprites64_1-151:icons64 artifacts/s37/data/sprites128_1-151:sprites128 \
#     artifacts/s37/data/style_icons128:icons128; do mkdir -p $D/${s##*:}; tar -C ${s%%:*} --exclude=.cache -cf - . | tar -C $D/${s##*:} -xf -; done
# Then, on the GPU machine (device tool; pydantic travels as wheels in .whl, README of the device tool):
#   D=artifacts/s37/gpu RES=$OUT SL="python3 -m stillroom" DEADLINE=420 bash benchmarks/gpu_style_scale.sh
# JOBS picks runs by name (default: all below); EXTRA adds overrides. On an H200 with 16 cores (2026-12-04) the 11
# jobs side by side took 2.5-4 s per epoch each (one sample 90 s in: GPU 94% busy, load average 10.6); the two 128 px runs and
# the 64 px scratch student passed DEADLINE=420 at epochs 93-97 and finished in a second call (`--resume`), and the
# whole script then takes about 10 min. Resumable: runs with metrics on both sets are skipped.
set -uo pipefail
D=${D:-artifacts/s37/gpu}
RUNS=${RUNS:-$D/runs}
RES=${RES:-$D/results}
DEADLINE=${DEADLINE:-420}  # seconds a training job may run; a job past it is stopped and left out of the tables
SL=${SL:-stillroom}
EXTRA=${EXTRA:-}  # overrides after each job's own (a smoke run: EXTRA="schedule.epochs=1 eval_every=1")
T=configs/block151/teacher_resnet18_e32.yaml
S=configs/block151/student.yaml
mkdir -p "$RUNS" "$RES"
LOG="$RES/stages.log"
stamp() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
# name | config | data (sprites64 or sprites128) | DataLoader workers | more --set overrides
SPEC="
t18_restyle_e24_s0|$T|sprites64|0|schedule.epochs=24 eval_every=4
t18_restyle_e100_s0|$T|sprites64|0|schedule.epochs=100 eval_every=10
t18_restyle_e100_s1|$T|sprites64|0|schedule.epochs=100 eval_every=10 seed=1
t18_restyle_e100_s2|$T|sprites64|0|schedule.epochs=100 eval_every=10 seed=2
t18_deform_e100_s0|$T|sprites64|0|schedule.epochs=100 eval_every=10 augment=deform
t18_deform_e100_s1|$T|sprites64|0|schedule.epochs=100 eval_every=10 augment=deform seed=1
t18_deform_e100_s2|$T|sprites64|0|schedule.epochs=100 eval_every=10 augment=deform seed=2
t18px128_restyle_e100_s0|$T|sprites128|1|schedule.epochs=100 eval_every=10
t18px128_deform_e100_s0|$T|sprites128|2|schedule.epochs=100 eval_every=10 augment=deform
scr_restyle_e100_s0|$S|sprites64|0|schedule.epochs=100 eval_every=10
scrpx128_restyle_e100_s0|$S|sprites128|1|schedule.epochs=100 eval_every=10
"
JOBS=${JOBS:-$(echo "$SPEC" | cut -d'|' -f1 | xargs)}
picked() { [[ " $JOBS " == *" $1 "* ]]; }
icons() { [ "$1" = sprites128 ] && echo icons128 || echo icons64; }

stamp "decode caches (once, before the jobs race for them)"
python3 -c "
import sys
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
for d in sys.argv[1:]:
    print(d, load_images(load_index(d)).shape)
" "$D/sprites64" "$D/sprites128" "$D/icons64" "$D/icons128" 2>&1 | tee -a "$LOG"

stamp "train (side by side, $DEADLINE s each at most)"
(sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime) >> "$LOG" 2>&1 &
pids=()
while IFS='|' read -r name cfg data workers sets; do
  [ -n "$name" ] && picked "$name" || continue
  run=$RUNS/$name
  [ -f "$run/metrics.json" ] && continue
  mkdir -p "$run"
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=1 timeout "$DEADLINE" $SL train "$cfg" --out "$run" --quiet --set name="$name" \
    --set data.index="$D/$data" --set num_workers="$workers" --set deterministic=false \
    $(for kv in $sets $EXTRA; do printf -- '--set %s ' "$kv"; done) $([ -f "$run/state.json" ] && echo --resume) \
    > "$RUNS/$name.log" 2>&1 &
  pids+=($!)
done <<< "$SPEC"
for p in "${pids[@]}"; do wait "$p"; done
stamp "trained: $(ls "$RUNS"/*/metrics.json 2>/dev/null | wc -l) runs finished"

stamp "evaluate: best weights on ID val/test, the icons (same size), shift-val"
while IFS='|' read -r name cfg data workers sets; do
  [ -n "$name" ] && picked "$name" || continue
  run=$RUNS/$name
  [ -f "$run/metrics.json" ] || { echo "not finished: $name" | tee -a "$LOG"; continue; }
  (
    $SL evaluate "$run" --split val --split test --weights best
    $SL evaluate "$run" --index "$D/$(icons "$data")" --split val --split test --weights best
    $SL shift-val "$run"
  ) >> "$RUNS/$name.log" 2>&1 &
done <<< "$SPEC"
wait
for px in 64 128; do
  python3 benchmarks/style_summary.py "$RUNS/*" --style "$D/icons$px" --csv "$RES/results_summary_px$px.csv" \
    > "$RES/summary_px$px.md" 2>&1
done
cat "$RES"/summary_px*.md
stamp "done"
