#!/usr/bin/env bash
# Issue 14 items 1-2: the demo's recipe with another teacher architecture. Does a teacher that reads another
# artist's drawings better (benchmarks/pretrained_teacher.sh with a timm ARMS entry, 20 epochs) give the demo's
# students more of it? The demo's teacher config (12 epochs, both threads, bf16) with model.name=ARCH, its 4-view
# replay store (restyle, augment seed 0, strict check by the export), then the demo's LumiNet mobilenet_v3_small
# student (20 epochs, one torch thread each, two side by side) of it, SEEDS seeds, beside the same students of the
# demo's own resnet18 teacher store (seed 0 is the demo's run, linked as OUT/ds_r18_s0). Scored on the box icons and
# ID val / test (`benchmarks/superset_teacher.py`) and paired by seed with `stillroom compare`. Run in a clone after
# `make demo`. Resumable.
#
#   OUT=artifacts/s47 bash benchmarks/demo_teacher_arch.sh             # ARCH=resnet18d TAG=r18d
set -euo pipefail
source "$(dirname "$0")/_pairs.sh"
OUT=${OUT:-artifacts/s47}
ARCH=${ARCH:-resnet18d}
TAG=${TAG:-r18d}
SEEDS=${SEEDS:-"0 1 2"}
SL=${SL:-stillroom}
DEMO=${DEMO:-artifacts/demo}
IDX=$DEMO/data/sprites64_1-151_artwork_r8
mkdir -p "$OUT/stores"
T=$OUT/dt_${TAG}_s0
[ -f "$T/metrics.json" ] || $SL train "$DEMO/configs/teacher_resnet18_s0.yaml" --out "$T" --set name="dt_${TAG}_s0" \
  --set model.name="$ARCH" $([ -f "$T/state.json" ] && echo --resume) > "$T.log" 2>&1
S=$OUT/stores/dt_${TAG}_v4
[ -f "$S/manifest.json" ] || $SL softlabels export --teacher "$T" --index "$IDX" --views 4 --augment restyle \
  --augment-seed 0 --out "$S"
DS=$(ls -d "$DEMO"/runs/teacher_resnet18_s0/softlabels/*_replay_v4)  # the demo teacher's store
ln -sfn "$(realpath "$DEMO/runs/student_mnv3s_kd")" "$OUT/ds_r18_s0"  # the demo's own student: seed 0 of the base arm
ln -sfn "$(realpath "$DEMO/runs/teacher_resnet18_s0")" "$OUT/dt_r18_s0"
student() {  # name store seed
  local run=$OUT/$1_s$3
  [ -f "$run/metrics.json" ] && return 0
  OMP_NUM_THREADS=1 $SL train "$DEMO/configs/student_mnv3s_kd.yaml" --out "$run" --set name="$1_s$3" --set seed="$3" \
    --set teachers.replay_seed=0 --set "teachers.cached=[$2]" $([ -f "$run/state.json" ] && echo --resume) \
    > "$run.log" 2>&1
}
jobs=()
for s in $SEEDS; do jobs+=("ds_$TAG $S $s"); [ "$s" = 0 ] || jobs+=("ds_r18 $DS $s"); done
in_pairs student "${jobs[@]}"
{
  python benchmarks/superset_teacher.py --index "$DEMO/data/style_icons_sprites64_1-151" --split val --split test \
    "$OUT/dt_r18_s0" "$T"
  python benchmarks/superset_teacher.py --index "$DEMO/data/sprites64_1-151" --split val --split test "$OUT/dt_r18_s0" "$T"
  for t in icons:style_icons_sprites64_1-151 id:sprites64_1-151; do
    runs=(); for s in $SEEDS; do runs+=("$OUT/ds_r18_s$s" "$OUT/ds_${TAG}_s$s"); done
    python benchmarks/superset_teacher.py --index "$DEMO/data/${t#*:}" --split val --split test \
      --csv "$OUT/cmp_${t%%:*}_demo_students/results_summary.csv" "${runs[@]}"
    for m in val_top1 test_top1; do
      echo "## ${t%%:*} $m"; $SL compare "$OUT/cmp_${t%%:*}_demo_students" --metric "$m" --a ds_r18 --b "ds_$TAG" || true
    done
  done
} 2>&1 | tee "$OUT/summary_demo_students_$TAG.txt"
