#!/usr/bin/env bash
# Issue 14 item 1: does a student read another artist's drawings of its species better when it is distilled on that
# artist's drawings of *other* species too, labelled by nobody, through its teacher's targets only (a KD transfer
# set, `stillroom data add-transfer`)? Two arms of the demo's distilled student (LumiNet, mobilenet_v3_small,
# restyle, 4-view replay store of the demo's teacher, EPOCHS epochs), SEEDS seeds each, one teacher for all:
#   b0  the demo's 151-species index
#   b1  the same + the box icons of the 498 species outside 1-151 (720 icons, REPEAT copies each) as transfer rows
# Scored on the box icons of species 1-151 (val selects, test reports; none in either arm's data) and on the ID
# val / test (`benchmarks/style_augment.sh`), summarised into OUT/cmp/results_summary.csv and paired by seed with
# `stillroom compare`. The b1 arm takes 1.7x the steps of b0 per epoch (the transfer rows are part of each epoch).
# Needs `make demo`. The 649-species style set is built here when absent (ICONS649, e.g. from
# benchmarks/style_other_species.sh). Resumable. Two lanes of one torch thread: ~40 min on the 2-core box.
#
#   bash benchmarks/transfer_set.sh            # OUT=artifacts/s40 SEEDS="0 1 2" EPOCHS=60 REPEAT=4
#   B0_EPOCHS=102 bash benchmarks/transfer_set.sh   # control: b0 with as many steps as b1 (60 x 7058 / 4178 rows)
set -euo pipefail
OUT=${OUT:-artifacts/s40}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-60}
B0_EPOCHS=${B0_EPOCHS:-$EPOCHS}
REPEAT=${REPEAT:-4}
SL=${SL:-stillroom}
DEMO=${DEMO:-artifacts/demo}
ID151=$DEMO/data/sprites64_1-151
ICONS151=$DEMO/data/style_icons_sprites64_1-151
TEACHER=${TEACHER:-$DEMO/runs/teacher_resnet18_s0}
ICONS649=${ICONS649:-$OUT/data/style_icons_1-649}
export OMP_NUM_THREADS=1
mkdir -p "$OUT/data" "$OUT/stores"
if [ ! -f "$ICONS649/index.json" ]; then
  [ -f "$OUT/data/sprites64_1-649/index.json" ] ||
    $SL data build sprites --size 64 --species 1-649 --out "$OUT/data/sprites64_1-649"
  $SL data build style-icons --id-index "$OUT/data/sprites64_1-649" --out "$ICONS649"
fi
TR="$OUT/data/transfer498_r$REPEAT"
[ -f "$TR/index.json" ] ||
  $SL data add-transfer "$ID151" "$ICONS649" --exclude-classes-of "$ID151" --repeat "$REPEAT" --out "$TR"
for arm in b0:"$ID151" b1:"$TR"; do
  store="$OUT/stores/${arm%%:*}_v4"
  [ -f "$store/manifest.json" ] || $SL softlabels export --teacher "$TEACHER" --index "${arm#*:}" --views 4 \
    --augment restyle --augment-seed 0 --out "$store"
done

job() {  # arm seed
  local idx=$ID151 e=$B0_EPOCHS store=$OUT/stores/$1_v4; [ "$1" = b1 ] && idx=$TR e=$EPOCHS
  PREFIX=$1 OUT=$OUT/$1 INDEX=$idx STYLE=$ICONS151 CFG=$DEMO/configs/student_mnv3s_kd.yaml \
    SETS="teachers.replay_seed=0 teachers.cached=[$store]" EPOCHS=$e SEEDS=$2 LANES=1 \
    AUGMENTS=restyle bash benchmarks/style_augment.sh > "$OUT/$1_e${e}_s$2.log" 2>&1
}
k=0; jobs=()  # the longer b1 runs alternate between the lanes
for s in $SEEDS; do if ((k++ % 2)); then jobs+=("b0 $s" "b1 $s"); else jobs+=("b1 $s" "b0 $s"); fi; done
lane() { for ((i = $1; i < ${#jobs[@]}; i += 2)); do job ${jobs[$i]}; done; }
lane 0 & lane 1 &
wait
mkdir -p "$OUT/cmp"
python benchmarks/style_summary.py "$OUT/b0/b0_*_s[0-9]" "$OUT/b1/b1_*_s[0-9]" --style "$ICONS151" \
  --csv "$OUT/cmp/results_summary.csv" | tee "$OUT/cmp/summary.md"  # every b0 / b1 variant run so far
for m in style_val_top1 style_test_top1 id_val_top1 id_test_top1; do
  $SL compare "$OUT/cmp" --metric $m --a "b0_restyle_e$B0_EPOCHS" --b "b1_restyle_e$EPOCHS" || true  # < 2 seeds
done 2>&1 | tee "$OUT/cmp/compare_e$B0_EPOCHS.txt"
