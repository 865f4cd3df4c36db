#!/usr/bin/env bash
# Issue 14 item 1: does a teacher read another artist's drawings of the 151 species better when it has seen that
# artist's drawings of *other* species? Two arms of the demo's teacher recipe (resnet18, restyle, batch 64, SGD 0.05,
# bf16) on species 1-649 for EPOCHS epochs, SEEDS seeds each:
#   t649     the sprites of species 1-649 (`data build sprites --species 1-649`)
#   t649mix  the same plus the box icons of the 498 species outside 1-151 (both splits of `data build style-icons`
#            on the 649-species index, REPEAT copies each, as train rows; `benchmarks/style_half_mix.py`)
# Both are scored with `benchmarks/superset_teacher.py` (argmax over the 151 species' outputs) on the box icons of
# species 1-151 (none of them seen in that style by either arm) and on the 151-species index's val / test, written
# as results_summary.csv under OUT/cmp_icons_<MIXARM> and OUT/cmp_id_<MIXARM>, then paired by seed with
# `stillroom compare`.
# Needs `make demo` (its 151-species index and style set). Resumable: finished runs are skipped.
# Two lanes of one torch thread each (the two arms side by side): ~25 min per pair of runs at 12 epochs on the
# 2-core box.
#
#   bash benchmarks/style_other_species.sh                 # OUT=artifacts/s39 SEEDS="0 1 2" EPOCHS=12 REPEAT=4
#   SEEDS=0 REPEAT=16 MIXARM=t649mix_r16 THREADS=2 bash benchmarks/style_other_species.sh   # 4x the icons, one run
set -euo pipefail
OUT=${OUT:-artifacts/s39}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-12}
REPEAT=${REPEAT:-4}
SL=${SL:-stillroom}
ID151=${ID151:-artifacts/demo/data/sprites64_1-151}
ICONS151=${ICONS151:-artifacts/demo/data/style_icons_sprites64_1-151}
T=${T:-artifacts/demo/configs/teacher_resnet18_s0.yaml}
MIXARM=${MIXARM:-t649mix}  # the icon arm's run names (give another for another REPEAT)
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$OUT/data"
[ -f "$OUT/data/sprites64_1-649/index.json" ] ||
  $SL data build sprites --size 64 --species 1-649 --out "$OUT/data/sprites64_1-649"
[ -f "$OUT/data/style_icons_1-649/index.json" ] ||
  $SL data build style-icons --id-index "$OUT/data/sprites64_1-649" --out "$OUT/data/style_icons_1-649"
MIX="$OUT/data/mix_other498_r$REPEAT"
[ -f "$MIX/index.json" ] ||
  python benchmarks/style_half_mix.py --id-index "$OUT/data/sprites64_1-649" --style "$OUT/data/style_icons_1-649" \
    --split val --split test --exclude-classes-of "$ID151" --out "$MIX" --repeat "$REPEAT"

lane() {  # $1 = arm, $2 = its training index
  for s in $SEEDS; do
    run="$OUT/$1_e${EPOCHS}_s$s"
    [ -f "$run/metrics.json" ] && continue
    $SL train "$T" --out "$run" --set name="$1_e${EPOCHS}_s$s" --set seed="$s" --set data.index="$2" \
      --set schedule.epochs="$EPOCHS" --set eval_every=4 > "$run.log" 2>&1
  done
}
lane t649 "$OUT/data/sprites64_1-649" &
lane "$MIXARM" "$MIX" &
wait

runs=()
for arm in t649 "$MIXARM"; do for s in $SEEDS; do runs+=("$OUT/${arm}_e${EPOCHS}_s$s"); done; done
python benchmarks/superset_teacher.py --index "$ICONS151" --split val --split test --csv "$OUT/cmp_icons_$MIXARM/results_summary.csv" "${runs[@]}"
python benchmarks/superset_teacher.py --index "$ID151" --split val --split test --csv "$OUT/cmp_id_$MIXARM/results_summary.csv" "${runs[@]}"
for m in val_top1 test_top1 val_top5 test_top5; do
  echo "## icons $m"
  $SL compare "$OUT/cmp_icons_$MIXARM" --metric "$m" --a "t649_e$EPOCHS" --b "${MIXARM}_e$EPOCHS" || true  # < 2 seeds
done
for m in val_top1 test_top1; do
  echo "## ID $m"
  $SL compare "$OUT/cmp_id_$MIXARM" --metric "$m" --a "t649_e$EPOCHS" --b "${MIXARM}_e$EPOCHS" || true
done
