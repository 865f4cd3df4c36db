#!/usr/bin/env bash
# Issue 14 items 1 and 6: the demo's recipe with its two training styles swapped for another pair. The demo trains
# on the sprites + the official artwork and is scored on the box icons; here it trains on the sprites + the icons
# (benchmarks/style_half_mix.py, REPEAT copies each) and is scored on the artwork, the held-out style closest to
# smooth vector drawings. The demo's teacher config (12 epochs, both threads, bf16) on that index, its 4-view replay
# store (restyle, augment seed 0), then the demo's LumiNet mobilenet_v3_small student (20 epochs, one torch thread
# each, two side by side), SEEDS seeds. Scored on the artwork and on ID val / test (`benchmarks/superset_teacher.py`):
# how much of its teacher's reading of a held-out style the demo's student keeps. Run in a clone after `make demo`.
# Resumable.
#
#   OUT=artifacts/s48 bash benchmarks/demo_style_swap.sh                # REPEAT=5 SEEDS="0 1 2"
set -euo pipefail
source "$(dirname "$0")/_pairs.sh"
OUT=${OUT:-artifacts/s48}
REPEAT=${REPEAT:-5}
SEEDS=${SEEDS:-"0 1 2"}
SL=${SL:-stillroom}
DEMO=${DEMO:-artifacts/demo}
ID151=$DEMO/data/sprites64_1-151
MIX=$OUT/data/mix_icons_r$REPEAT
HELD=$DEMO/data/style_artwork_sprites64_1-151
mkdir -p "$OUT/stores"
[ -f "$MIX/index.json" ] || python benchmarks/style_half_mix.py --id-index "$ID151" \
  --style "$DEMO/data/style_icons_sprites64_1-151" --split val --split test --out "$MIX" --repeat "$REPEAT"
T=$OUT/dti_s0
[ -f "$T/metrics.json" ] || $SL train "$DEMO/configs/teacher_resnet18_s0.yaml" --out "$T" --set name=dti_s0 \
  --set data.index="$MIX" $([ -f "$T/state.json" ] && echo --resume) > "$T.log" 2>&1
S=$OUT/stores/dti_v4
[ -f "$S/manifest.json" ] || $SL softlabels export --teacher "$T" --index "$MIX" --views 4 --augment restyle \
  --augment-seed 0 --out "$S"
student() {  # seed
  local run=$OUT/dsi_s$1
  [ -f "$run/metrics.json" ] && return 0
  OMP_NUM_THREADS=1 $SL train "$DEMO/configs/student_mnv3s_kd.yaml" --out "$run" --set name="dsi_s$1" --set seed="$1" \
    --set data.index="$MIX" --set teachers.replay_seed=0 --set "teachers.cached=[$S]" \
    $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
}
# shellcheck disable=SC2086
in_pairs student $SEEDS
runs=("$T"); for s in $SEEDS; do runs+=("$OUT/dsi_s$s"); done
{
  python benchmarks/superset_teacher.py --index "$HELD" --split val --split test "${runs[@]}"
  python benchmarks/superset_teacher.py --index "$ID151" --split val --split test "${runs[@]}"
} 2>&1 | tee "$OUT/summary_demo_style_swap.txt"
