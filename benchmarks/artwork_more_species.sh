#!/usr/bin/env bash
# Issue 14 item 1: does a teacher read a third drawing style of the served species better when it has learned the
# sprite <-> artwork pairing for more species than it serves? The artwork of the 151 served species lifted the box
# icons by +8.8 points (benchmarks/artwork_train.sh); the `pokemon` sdist has the artwork of species 1-1008, so the
# pairing can be taught on species the student never serves. Two arms of the demo's teacher recipe (resnet18,
# restyle, batch 64, SGD 0.05, bf16, EPOCHS epochs) on the sprites of species 1-N (a superset teacher: its store
# serves the 151 by class name, `softlabels export`):
#   art151  the sprites of 1-N + the artwork of 1-151 (8 copies each), the demo's second style as it is today
#   artN    the sprites of 1-N + the artwork of 1-N (8 copies each): the pairing on N species
# SEEDS seeds each, scored (`benchmarks/superset_teacher.py`, argmax over the 151 served classes) on the box icons
# of 1-151 (in neither arm's data; val selects, test reports) and on the 151-species index's val / test, paired by
# seed with `stillroom compare`. Resumable. Two lanes of one torch thread each; ~1 h for N = 300 on the 2-core box.
#
#   bash benchmarks/artwork_more_species.sh                  # BEST=artifacts/s46/best OUT=artifacts/s49 N=300
set -euo pipefail
source "$(dirname "$0")/_pairs.sh"
BEST=${BEST:-artifacts/s46/best}  # a `stillroom demo --budget best` run: its teacher config and 151-species data
OUT=${OUT:-artifacts/s49}
N=${N:-300}
EPOCHS=${EPOCHS:-20}
SEEDS=${SEEDS:-"0 1 2"}
SL=${SL:-stillroom}
D=$OUT/data
ID151=$BEST/data/sprites64_1-151
ICONS151=$BEST/data/style_icons_sprites64_1-151
export OMP_NUM_THREADS=1
mkdir -p "$D"
[ -f "$BEST/configs/teacher_resnet18_s0.yaml" ] || { echo "no $BEST: run stillroom demo --budget best" >&2; exit 2; }
[ -f "$D/sprites64_1-$N/index.json" ] || $SL data build sprites --size 64 --species "1-$N" --out "$D/sprites64_1-$N"
[ -f "$D/style_artwork_sprites64_1-$N/index.json" ] ||
  $SL data build style-artwork --id-index "$D/sprites64_1-$N" --out "$D/style_artwork_sprites64_1-$N"
[ -f "$D/s${N}_art151_r8/index.json" ] || $SL data add-style "$D/sprites64_1-$N" \
  "$BEST/data/style_artwork_sprites64_1-151" --repeat 8 --out "$D/s${N}_art151_r8"
[ -f "$D/s${N}_art${N}_r8/index.json" ] || $SL data add-style "$D/sprites64_1-$N" \
  "$D/style_artwork_sprites64_1-$N" --repeat 8 --out "$D/s${N}_art${N}_r8"

teacher() {  # arm seed
  local run="$OUT/t${N}_$1_s$2"
  [ -f "$run/metrics.json" ] && return 0
  $SL train "$BEST/configs/teacher_resnet18_s0.yaml" --out "$run" --quiet --set name="t${N}_$1_s$2" \
    --set data.index="$D/s${N}_$1_r8" --set seed="$2" --set schedule.epochs="$EPOCHS" --set eval_every="$EPOCHS" \
    $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
}
jobs=()
for s in $SEEDS; do jobs+=("art151 $s" "art$N $s"); done  # the two arms of a seed side by side
in_pairs teacher "${jobs[@]}"

runs=()
for s in $SEEDS; do runs+=("$OUT/t${N}_art151_s$s" "$OUT/t${N}_art${N}_s$s"); done
{
  for t in icons id; do
    idx=$ICONS151; [ "$t" = id ] && idx=$ID151
    python benchmarks/superset_teacher.py --index "$idx" --split val --split test \
      --csv "$OUT/cmp_${t}_t$N/results_summary.csv" "${runs[@]}"
    for m in val_top1 test_top1; do
      echo "## $t $m"; $SL compare "$OUT/cmp_${t}_t$N" --metric "$m" --a "t${N}_art151" --b "t${N}_art$N" || true
    done
  done
  python benchmarks/run_progress.py "$OUT"  # seconds an epoch and wall_s of each run
} 2>&1 | tee "$OUT/summary_t$N.txt"
