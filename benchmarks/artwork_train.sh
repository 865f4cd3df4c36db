#!/usr/bin/env bash
# Issue 14 item 1: does a second drawing of each *served* species, by another hand, teach a model to read a third
# style? Two arms of the demo's teacher recipe (resnet18, restyle, batch 64, SGD 0.05, bf16, EPOCHS epochs), SEEDS
# seeds each:
#   t0    the demo's 151-species index
#   tart  the same + the official artwork of the 151 species (`stillroom data build style-artwork`, both splits,
#         REPEAT copies each) as labelled train rows (`benchmarks/style_half_mix.py`)
# Scored (`benchmarks/superset_teacher.py`) on the box icons of the 151 species (a third style, in neither arm's data;
# val selects, test reports) and on the ID val / test; t0 also on the artwork set it never saw. Paired by seed with
# `stillroom compare`. With STUDENTS=1, the demo's LumiNet student (EPOCHS_S epochs, 4-view replay store of each
# arm's seed-0 teacher over that arm's index) is trained on each arm, SEEDS seeds, scored the same way.
# Needs `make demo`. Resumable. Two lanes of one torch thread each.
#
#   bash benchmarks/artwork_train.sh                 # OUT=artifacts/s41 SEEDS="0 1 2" EPOCHS=20 REPEAT=8
#   STUDENTS=1 bash benchmarks/artwork_train.sh      # then the students (EPOCHS_S=30)
#   REPEAT=16 ARM=tart16 bash benchmarks/artwork_train.sh   # another dose: its own arm name, t0 reused
set -euo pipefail
OUT=${OUT:-artifacts/s41}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-20}
EPOCHS_S=${EPOCHS_S:-30}
REPEAT=${REPEAT:-8}
STUDENTS=${STUDENTS:-0}
ARM=${ARM:-tart}  # the artwork arm's teacher runs (students: s${ARM#t})
SL=${SL:-stillroom}
DEMO=${DEMO:-artifacts/demo}
ID151=$DEMO/data/sprites64_1-151
ICONS151=$DEMO/data/style_icons_sprites64_1-151
T=$DEMO/configs/teacher_resnet18_s0.yaml
ART=$OUT/data/artwork_1-151
MIX=$OUT/data/mix_artwork_r$REPEAT
export OMP_NUM_THREADS=1
mkdir -p "$OUT/data"
[ -f "$ART/index.json" ] || $SL data build style-artwork --id-index "$ID151" --out "$ART"
[ -f "$MIX/index.json" ] ||
  python benchmarks/style_half_mix.py --id-index "$ID151" --style "$ART" --split val --split test --out "$MIX" \
    --repeat "$REPEAT"
index_of() { if [ "$1" = t0 ] || [ "$1" = s0 ]; then echo "$ID151"; else echo "$MIX"; fi; }

teachers() {  # arm
  for s in $SEEDS; do
    run="$OUT/$1_e${EPOCHS}_s$s"
    [ -f "$run/metrics.json" ] && continue
    $SL train "$T" --out "$run" --set name="$1_e${EPOCHS}_s$s" --set seed="$s" --set data.index="$(index_of "$1")" \
      --set schedule.epochs="$EPOCHS" --set eval_every="$EPOCHS" $([ -f "$run/state.json" ] && echo --resume) \
      > "$run.log" 2>&1
  done
}
teachers t0 & teachers "$ARM" &
wait
score() {  # tag arm-a arm-b epochs
  local runs=(); for arm in "$2" "$3"; do for s in $SEEDS; do runs+=("$OUT/${arm}_e$4_s$s"); done; done
  python benchmarks/superset_teacher.py --index "$ICONS151" --split val --split test \
    --csv "$OUT/cmp_icons_$1/results_summary.csv" "${runs[@]}"
  python benchmarks/superset_teacher.py --index "$ID151" --split val --split test \
    --csv "$OUT/cmp_id_$1/results_summary.csv" "${runs[@]}"
  python benchmarks/superset_teacher.py --index "$ART" --split val --split test "${runs[@]:0:${#runs[@]}/2}"
  for m in val_top1 test_top1; do
    echo "## icons $m"; $SL compare "$OUT/cmp_icons_$1" --metric "$m" --a "$2_e$4" --b "$3_e$4" || true
    echo "## ID $m"; $SL compare "$OUT/cmp_id_$1" --metric "$m" --a "$2_e$4" --b "$3_e$4" || true
  done
}
score "teachers_$ARM" t0 "$ARM" "$EPOCHS" 2>&1 | tee "$OUT/summary_teachers_$ARM.txt"
[ "$STUDENTS" = 1 ] || exit 0

for arm in t0 "$ARM"; do
  store="$OUT/stores/${arm}_v4"
  [ -f "$store/manifest.json" ] || $SL softlabels export --teacher "$OUT/${arm}_e${EPOCHS}_s0" \
    --index "$(index_of "$arm")" --views 4 --augment restyle --augment-seed 0 --out "$store"
done
students() {  # student arm (s0 / sart), its teacher arm
  for s in $SEEDS; do
    run="$OUT/$1_e${EPOCHS_S}_s$s"
    [ -f "$run/metrics.json" ] && continue
    $SL train "$DEMO/configs/student_mnv3s_kd.yaml" --out "$run" --set name="$1_e${EPOCHS_S}_s$s" --set seed="$s" \
      --set data.index="$(index_of "$1")" --set schedule.epochs="$EPOCHS_S" --set eval_every="$EPOCHS_S" \
      --set teachers.replay_seed=0 --set "teachers.cached=[$OUT/stores/$2_v4]" \
      $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
  done
}
students s0 t0 & students "s${ARM#t}" "$ARM" &
wait
score "students_$ARM" s0 "s${ARM#t}" "$EPOCHS_S" 2>&1 | tee "$OUT/summary_students_$ARM.txt"
