#!/usr/bin/env bash
# Issue 14 item 1, issue 16 item 5: does one canonical rendering for every image (train *and* evaluation, the
# canonical outline of issue 16: `data/outline.py`) let a teacher read a third drawing style? The demo's teacher
# recipe (resnet18, restyle, batch 64, SGD 0.05, bf16, EPOCHS epochs) on the demo's training data (sprites of species
# 1-151 + their official artwork x REPEAT, `stillroom data add-style`), every image of it, and of the box icons it is
# scored on, rendered through the canonical outline of one arm (grid G: the object's longer side in canonical pixels;
# blur SIGMA). 128 px made the icons worse (BENCHMARKS "Teachers trained four times longer"): outline detail belongs
# to the artist; a coarser common grid removes it from both sides instead of teaching invariance to it.
#
# ARMS are name:G:SIGMA (G = 0: the plain rendering, built the same way: with EPOCHS=60 the demo's teacher trained
# three times longer). The plain 20-epoch arm of `benchmarks/artwork_train.sh` (BASE_RUNS_s*, the same recipe) is
# scored beside them. Scored (`benchmarks/superset_teacher.py`) on each arm's own box icons (val selects, test
# reports) and ID val / test, compared with `stillroom compare` against BASE_RUNS. Needs `make demo`. Resumable. One
# lane of one torch thread per arm, side by side.
#
#   bash benchmarks/canonical_style.sh                          # OUT=artifacts/s43 SEEDS=0 ARMS="c32:32:0.8 c24:24:0.8"
#   ARMS="p:0:0" EPOCHS=60 SEEDS=0 bash benchmarks/canonical_style.sh   # and SEEDS=1, SEEDS=2 beside it (one lane each)
set -euo pipefail
OUT=${OUT:-artifacts/s43}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-20}
REPEAT=${REPEAT:-8}
ARMS=${ARMS:-"c32:32:0.8 c24:24:0.8"}
BASE=${BASE:-artifacts/s41}
BASE_RUNS=${BASE_RUNS:-$BASE/tart_e20}  # run directories BASE_RUNS_s<seed>
SL=${SL:-stillroom}
DEMO=${DEMO:-artifacts/demo}
T=$DEMO/configs/teacher_resnet18_s0.yaml
export OMP_NUM_THREADS=1
mkdir -p "$OUT/data"

build() {  # name grid sigma -> OUT/data/name/{sprites,icons,artwork,mix}
  local d="$OUT/data/$1" outline=(--outline canonical --outline-grid "$2" --outline-sigma "$3")
  [ "$2" = 0 ] && outline=()
  [ -f "$d/sprites/index.json" ] ||
    $SL data build sprites --species 1-151 --size 64 --split blocks "${outline[@]}" --out "$d/sprites"
  [ -f "$d/icons/index.json" ] || $SL data build style-icons --id-index "$d/sprites" --out "$d/icons"
  [ -f "$d/artwork/index.json" ] || $SL data build style-artwork --id-index "$d/sprites" --out "$d/artwork"
  [ -f "$d/mix/index.json" ] || $SL data add-style "$d/sprites" "$d/artwork" --out "$d/mix" --repeat "$REPEAT"
}
teachers() {  # arm name
  for s in $SEEDS; do
    local run="$OUT/$1_e${EPOCHS}_s$s"
    [ -f "$run/metrics.json" ] && continue
    $SL train "$T" --out "$run" --set name="$1_e${EPOCHS}_s$s" --set seed="$s" --set data.index="$OUT/data/$1/mix" \
      --set schedule.epochs="$EPOCHS" --set eval_every="$EPOCHS" $([ -f "$run/state.json" ] && echo --resume) \
      > "$run.log" 2>&1
  done
}
for arm in $ARMS; do IFS=: read -r name grid sigma <<< "$arm"; build "$name" "$grid" "$sigma"; done
for arm in $ARMS; do teachers "${arm%%:*}" & done
wait

# score every arm's runs (all seeds on disk) on its own icons and ID index; one CSV per metric set for `compare`
mkdir -p "$OUT/cmp_icons" "$OUT/cmp_id"  # one CSV per arm (earlier calls' arms stay), merged below
names=()
for arm in $ARMS; do names+=("${arm%%:*}"); done
score_arm() {  # name icons-index id-index runs...
  local name=$1 icons=$2 id=$3; shift 3
  python benchmarks/superset_teacher.py --index "$icons" --split val --split test --csv "$OUT/cmp_icons/$name.csv" "$@"
  python benchmarks/superset_teacher.py --index "$id" --split val --split test --csv "$OUT/cmp_id/$name.csv" "$@"
}
base=$(basename "$BASE_RUNS") base_runs=("$BASE_RUNS"_s[0-9])
[ -f "${base_runs[0]}/metrics.json" ] &&
  score_arm "$base" "$DEMO/data/style_icons_sprites64_1-151" "$DEMO/data/sprites64_1-151" "${base_runs[@]}"
for name in "${names[@]}"; do
  runs=()
  for r in "$OUT/${name}_e${EPOCHS}"_s[0-9]; do [ -f "$r/metrics.json" ] && runs+=("$r"); done  # finished runs
  score_arm "${name}_e$EPOCHS" "$OUT/data/$name/icons" "$OUT/data/$name/sprites" "${runs[@]}"
done
for c in cmp_icons cmp_id; do  # one results_summary.csv per folder: the arms' CSVs, one header
  parts=()
  for f in "$OUT/$c"/*.csv; do [ "$(basename "$f")" = results_summary.csv ] || parts+=("$f"); done
  awk 'FNR > 1 || NR == 1' "${parts[@]}" > "$OUT/$c/results_summary.csv.tmp"
  mv "$OUT/$c/results_summary.csv.tmp" "$OUT/$c/results_summary.csv"
done
[ -f "${base_runs[0]}/metrics.json" ] || exit 0
for name in "${names[@]}"; do
  for m in val_top1 test_top1; do
    for t in icons id; do
      echo "## $t $m: $base -> ${name}_e$EPOCHS"
      $SL compare "$OUT/cmp_$t" --metric "$m" --a "$base" --b "${name}_e$EPOCHS" || true
    done
  done
done 2>&1 | tee "$OUT/summary_e$EPOCHS.txt"
