#!/usr/bin/env bash
# Issue 14 item 1: should `stillroom demo --budget best` train ResNet-D teachers? The `best` recipe of a finished
# `stillroom demo --budget best` run (BEST: its configs, data, resnet18 teachers and seed-0 student) with only the
# teachers' architecture swapped (ARCH, default resnet18d): three 60-epoch teachers (seeds 0 and 1 side by side on
# one torch thread each, seed 2 alone on two, as the demo's rounds train them), one 4-view replay store each
# (restyle, augment seed 0, the demo's), and the efficientnet_lite0 students (ImageNet start, LumiNet over the
# three fused stores, 60 epochs) of SEEDS. Scored (`benchmarks/superset_teacher.py`) on the box icons of the 151
# species (a third style in no model's data; val selects, test reports) and on ID val / test, against BEST's own
# resnet18 teachers and student; the mean-softmax ensemble of each teacher trio too. Resumable: finished runs are
# kept. ~2 h on the 2-core box (teachers ~45 min, stores ~3, students ~35 min a pair).
#
#   bash benchmarks/best_teacher_arch.sh                       # BEST=artifacts/s46/best OUT=artifacts/s49
#   STUDENTS=0 bash benchmarks/best_teacher_arch.sh            # the teachers only (~45 min), scored
#   SEEDS="0 1 2" bash benchmarks/best_teacher_arch.sh         # the third student seed (alone, on two threads)
set -euo pipefail
source "$(dirname "$0")/_pairs.sh"
BEST=${BEST:-artifacts/s46/best}
OUT=${OUT:-artifacts/s49}
ARCH=${ARCH:-resnet18d}
SEEDS=${SEEDS:-"0 1"}
STUDENTS=${STUDENTS:-1}  # 0: stop after the teachers and their scores
SL=${SL:-stillroom}
MIX=$BEST/data/sprites64_1-151_artwork_r8
ID151=$BEST/data/sprites64_1-151
ICONS151=$BEST/data/style_icons_sprites64_1-151
mkdir -p "$OUT"
[ -f "$BEST/configs/student_lite0_pt_kd.yaml" ] || { echo "no $BEST: run stillroom demo --budget best" >&2; exit 2; }

teacher() {  # seed threads
  local run="$OUT/best_${ARCH}_s$1"
  [ -f "$run/metrics.json" ] && return 0
  OMP_NUM_THREADS=$2 $SL train "$BEST/configs/teacher_resnet18_s$1.yaml" --out "$run" --quiet \
    --set name="best_${ARCH}_s$1" --set model.name="$ARCH" \
    $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
}
in_pairs teacher "0 1" "1 1" "2 2"  # the pair on one thread each, then the third alone on both
export OMP_NUM_THREADS=2
{
  for t in icons id; do
    idx=$ICONS151; [ "$t" = id ] && idx=$ID151
    echo "## $t"  # per teacher, paired by seed; then each trio's mean-softmax ensemble, the targets a student distils
    python benchmarks/superset_teacher.py --index "$idx" --split val --split test \
      --csv "$OUT/cmp_${t}_best_teachers/results_summary.csv" "$BEST"/runs/teacher_resnet18_s{0,1,2} \
      "$OUT"/best_"${ARCH}"_s{0,1,2}
    for m in val_top1 test_top1; do
      $SL compare "$OUT/cmp_${t}_best_teachers" --metric "$m" --a teacher_resnet18 --b "best_$ARCH" || true
    done
    for trio in "$BEST/runs/teacher_resnet18" "$OUT/best_${ARCH}"; do
      python benchmarks/superset_teacher.py --index "$idx" --split val --split test --ensemble "$trio"_s{0,1,2}
    done
  done
  python benchmarks/run_progress.py "$OUT"  # wall_s of each run (BEST's: run_progress.py BEST/runs)
} 2>&1 | tee "$OUT/summary_best_${ARCH}_teachers.txt"
[ "$STUDENTS" = 1 ] || exit 0

stores=()
for s in 0 1 2; do
  store="$OUT/best_${ARCH}_s$s/softlabels/replay_v4"
  [ -f "$store/manifest.json" ] || $SL softlabels export --teacher "$OUT/best_${ARCH}_s$s" \
    --index "$MIX" --views 4 --augment restyle --augment-seed 0 --out "$store"
  stores+=("$store")
done
cached=$(IFS=,; echo "${stores[*]}")

student() {  # seed threads
  local run="$OUT/s_${ARCH}x3_lite0pt_s$1"
  [ -f "$run/metrics.json" ] && return 0
  OMP_NUM_THREADS=$2 $SL train "$BEST/configs/student_lite0_pt_kd.yaml" --out "$run" --quiet \
    --set name="s_${ARCH}x3_lite0pt_s$1" --set seed="$1" --set teachers.replay_seed=0 \
    --set "teachers.cached=[$cached]" $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
}
specs=()
set -- $SEEDS
while [ $# -gt 0 ]; do  # pairs on one thread each; an odd last seed alone on both
  if [ $# -gt 1 ]; then specs+=("$1 1" "$2 1"); shift 2; else specs+=("$1 2"); shift; fi
done
in_pairs student "${specs[@]}"

for idx in "$ICONS151" "$ID151"; do
  python benchmarks/superset_teacher.py --index "$idx" --split val --split test \
    "$BEST/runs/student_lite0_pt_kd" "$OUT"/s_"${ARCH}"x3_lite0pt_s*[0-9]
done 2>&1 | tee "$OUT/summary_best_${ARCH}_students.txt"
