#!/usr/bin/env bash
# Issue 14 item 1: do ImageNet starting weights teach a teacher (and through it a student) to read a third drawing
# style? The demo's teacher recipe (restyle, batch 64, SGD 0.05, bf16, EPOCHS epochs), SEEDS seeds per arm; an arm is
# name:model:start:data with start imagenet | scratch and data t0 (the demo's sprites) | tart (sprites + the artwork
# x REPEAT, the demo's training data, as benchmarks/artwork_train.sh built it in BASE). Scored
# (`benchmarks/superset_teacher.py`) on the box icons of the 151 species (a third style in no arm's data; val selects,
# test reports) and on ID val / test; paired by seed with `stillroom compare` against BASE_ARM (resnet18 from scratch
# on tart, the runs of benchmarks/artwork_train.sh in BASE). With STUDENTS=1 the demo's LumiNet student (EPOCHS_S
# epochs, 4-view replay store of STUDENT_OF's seed-0 teacher) is trained on tart, SEEDS seeds, and paired against
# artwork_train.sh's students (sart). Needs `make demo`. Resumable. Two lanes of one torch thread each (an odd
# teacher out trains alone on two).
#
#   bash benchmarks/pretrained_teacher.sh                    # OUT=artifacts/s42, BASE=artifacts/s41, SEEDS="0 1 2"
#   ARMS="lite0pt_t0:efficientnet_lite0:imagenet:t0" SEEDS=0 bash benchmarks/pretrained_teacher.sh
#   ARMS="blur:timm:resnetblur18:scratch:tart" ...          # any timm architecture by name (anti-aliased resnet18)
#   STUDENTS=1 bash benchmarks/pretrained_teacher.sh        # then the students of lite0pt_tart's seed-0 teacher
#   STUDENTS=1 STUDENT_MODEL=resnet18 ...                   # another student architecture (STUDENT_START=imagenet:
#                                                           # from ImageNet weights), runs s_<STUDENT_OF>_<model>[pt]
#   STUDENTS=1 TEACHER_SEEDS="0 1 2" ...                    # students of the fused ensemble of STUDENT_OF's seeds
#                                                           # (one 4-view store each), runs s_<STUDENT_OF>x3_...
#   STUDENTS=1 ARM_SEEDS="0 1 2" SEEDS="0 1 2 3 4" ...      # five student seeds of three teachers (default ARM_SEEDS:
#                                                           # SEEDS, the teachers trained and scored)
#   STUDENTS=1 EPOCHS_S=60 BASE_STUDENTS=OUT/<run prefix> ... # longer students (runs ..._e60), paired with another arm
#   ARMS="ms:resnet18:scratch:tart" SETS_ms="model.mixstyle.p=0.5" ... # extra --set key=value for one arm's teachers
#   HELD=<index> HELD_TAG=artwork ...                       # score on another held-out style than the box icons
#                                                           # (e.g. MIX=sprites + the icons, HELD=the artwork)
# (keep ARMS the same in both calls: every call scores all its arms again into OUT/cmp_*_teachers)
set -euo pipefail
source "$(dirname "$0")/_pairs.sh"
OUT=${OUT:-artifacts/s42}
BASE=${BASE:-artifacts/s41}
SEEDS=${SEEDS:-"0 1 2"}
ARM_SEEDS=${ARM_SEEDS:-$SEEDS}  # the arms' teachers trained and scored (students may have more seeds than them)
EPOCHS=${EPOCHS:-20}
EPOCHS_S=${EPOCHS_S:-30}
REPEAT=${REPEAT:-8}
ARMS=${ARMS:-"lite0pt_tart:efficientnet_lite0:imagenet:tart lite0_tart:efficientnet_lite0:scratch:tart"}
BASE_ARM=${BASE_ARM:-tart_e20}
PAIRS=${PAIRS-"lite0_tart:lite0pt_tart"}  # a:b pairs of arms compared too (set but empty: none)
STUDENTS=${STUDENTS:-0}
STUDENT_OF=${STUDENT_OF:-lite0pt_tart}
STUDENT_MODEL=${STUDENT_MODEL:-}  # empty: the demo student's mobilenet_v3_small
STUDENT_START=${STUDENT_START:-scratch}
BASE_STUDENTS=${BASE_STUDENTS:-}  # the students' comparison arm (run prefix); empty: BASE/sart_e<EPOCHS_S>
TEACHER_SEEDS=${TEACHER_SEEDS:-0}  # the students' teachers: STUDENT_OF's runs of these seeds (several: fused)
SL=${SL:-stillroom}
DEMO=${DEMO:-artifacts/demo}
ID151=$DEMO/data/sprites64_1-151
ICONS151=$DEMO/data/style_icons_sprites64_1-151
T=$DEMO/configs/teacher_resnet18_s0.yaml
MIX=${MIX:-$BASE/data/mix_artwork_r$REPEAT}  # or the demo's own sprites64_1-151_artwork_r8 (same rows, same hash)
HELD=${HELD:-$ICONS151}  # the held-out style the teachers are scored on (in no arm's data)
HELD_TAG=${HELD_TAG:-icons}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
# the artwork-mixed index and the baseline runs are benchmarks/artwork_train.sh's (OUT=$BASE)
[ -f "$MIX/index.json" ] || { echo "no $MIX: run OUT=$BASE bash benchmarks/artwork_train.sh first" >&2; exit 2; }
index_of() { if [ "$1" = t0 ]; then echo "$ID151"; else echo "$MIX"; fi; }

jobs=()  # "arm model start data seed", run two at a time
for spec in $ARMS; do
  # name:model:start:data; the model may hold a colon itself (timm:<name>)
  arm=${spec%%:*} rest=${spec#*:} data=${spec##*:}
  rest=${rest%:*} start=${rest##*:} model=${rest%:*}
  for s in $ARM_SEEDS; do jobs+=("$arm $model $start $data $s"); done
done
teacher() {  # arm model start data seed
  local run="$OUT/$1_s$5" pre=()
  [ -f "$run/metrics.json" ] && return 0
  [ "$3" = imagenet ] && pre=(--set model.pretrained=imagenet)
  local sets="SETS_$1"
  for kv in ${!sets:-}; do pre+=(--set "$kv"); done
  $SL train "$T" --out "$run" --set name="$1_s$5" --set data.index="$(index_of "$4")" --set seed="$5" \
    --set schedule.epochs="$EPOCHS" --set eval_every="$EPOCHS" --set model.name="$2" "${pre[@]}" \
    $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
}
paired=$((${#jobs[@]} / 2 * 2))
lane() {  # every other job of the paired ones, from $1
  for ((i = $1; i < paired; i += 2)); do
    # shellcheck disable=SC2086
    teacher ${jobs[$i]}
  done
}
lane 0 & lane 1 &
wait
if [ "$paired" -lt ${#jobs[@]} ]; then  # an odd job out trains alone: both cores (~1.6x faster than one)
  # shellcheck disable=SC2086
  (export OMP_NUM_THREADS=2; teacher ${jobs[$paired]})
fi

score() {  # seeds tag base-prefix arm-prefix... (run dirs are <prefix>_s<seed>)
  local seeds=$1 tag=$2 runs=(); shift 2
  for p in "$@"; do for s in $seeds; do  # once each: the base arm may also be one of ARMS
    [[ " ${runs[*]} " == *" ${p}_s$s "* ]] || runs+=("${p}_s$s")
  done; done
  python benchmarks/superset_teacher.py --index "$HELD" --split val --split test \
    --csv "$OUT/cmp_${HELD_TAG}_$tag/results_summary.csv" "${runs[@]}"
  python benchmarks/superset_teacher.py --index "$ID151" --split val --split test \
    --csv "$OUT/cmp_id_$tag/results_summary.csv" "${runs[@]}"
  local a; a=$(basename "$1")
  for p in "${@:2}"; do
    [ "$(basename "$p")" = "$a" ] && continue
    for m in val_top1 test_top1; do
      echo "## $HELD_TAG $m"; $SL compare "$OUT/cmp_${HELD_TAG}_$tag" --metric "$m" --a "$a" --b "$(basename "$p")" || true
      echo "## ID $m"; $SL compare "$OUT/cmp_id_$tag" --metric "$m" --a "$a" --b "$(basename "$p")" || true
    done
  done
}
arms=(); for spec in $ARMS; do arms+=("$OUT/${spec%%:*}"); done
{
  score "$ARM_SEEDS" teachers "$BASE/$BASE_ARM" "${arms[@]}"
  for pair in $PAIRS; do
    for m in val_top1 test_top1; do
      for t in "$HELD_TAG" id; do
        echo "## $t $m"; $SL compare "$OUT/cmp_${t}_teachers" --metric "$m" --a "${pair%%:*}" --b "${pair#*:}" || true
      done
    done
  done
} 2>&1 | tee "$OUT/summary_teachers.txt"
[ "$STUDENTS" = 1 ] || exit 0

stores=()
for ts in $TEACHER_SEEDS; do
  store="$OUT/stores/${STUDENT_OF}_v4$([ "$ts" = 0 ] || echo "_s$ts")"  # seed 0's name as before
  [ -f "$store/manifest.json" ] || $SL softlabels export --teacher "$OUT/${STUDENT_OF}_s$ts" --index "$MIX" \
    --views 4 --augment restyle --augment-seed 0 --out "$store"
  stores+=("$store")
done
cached=$(IFS=,; echo "${stores[*]}")
nt=$(wc -w <<< "$TEACHER_SEEDS")
sname="s_${STUDENT_OF}$([ "$nt" = 1 ] || echo "x$nt")${STUDENT_MODEL:+_$STUDENT_MODEL}"
smodel=()
[ -n "$STUDENT_MODEL" ] && smodel=(--set model.name="$STUDENT_MODEL")
[ "$STUDENT_START" = imagenet ] && { sname+=pt; smodel+=(--set model.pretrained=imagenet); }
[ "$EPOCHS_S" = 30 ] || sname+="_e$EPOCHS_S"  # 30: the names of the first runs
student() {  # seed
  local run="$OUT/${sname}_s$1"
  [ -f "$run/metrics.json" ] && return 0
  $SL train "$DEMO/configs/student_mnv3s_kd.yaml" --out "$run" --set name="${sname}_s$1" --set seed="$1" \
    --set data.index="$MIX" --set schedule.epochs="$EPOCHS_S" --set eval_every="$EPOCHS_S" "${smodel[@]}" \
    --set teachers.replay_seed=0 --set "teachers.cached=[$cached]" \
    $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
}
# shellcheck disable=SC2086
in_pairs student $SEEDS
score "$SEEDS" "students${sname#s_"$STUDENT_OF"}" "${BASE_STUDENTS:-$BASE/sart_e$EPOCHS_S}" "$OUT/$sname" 2>&1 |
  tee "$OUT/summary_students${sname#s_"$STUDENT_OF"}.txt"
