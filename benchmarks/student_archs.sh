#!/usr/bin/env bash
# Issue 14 (row "other art style") and issue 16 item 5: which student network keeps the most of the demo's teacher
# on a drawing style it never trained on, at the demo's cost? Trains ARMS x SEEDS students from a demo built with
# one style held out (`stillroom demo --minutes 0 --train-style ...`: the fixed 12 + 20 plan), each from that demo's
# own student config, teacher and 4-view replay store (`teachers.replay_seed=0`), one after the other on every
# thread (runs are deterministic per thread count on one host). Arms (the run directory's name is ARM_s<seed>):
#   kd          the demo's mobilenet_v3_small student, 20 epochs (seed 0 is the demo's own run, copied: trained on
#               one thread beside its scratch twin, where the other runs here have both threads)
#   kd26        mobilenet_v3_small for 26 epochs: the wall time of a 20-epoch RegNetX-200MF (8.8 vs 6.8 s an epoch)
#   regnetx002  RegNetX-200MF (`regnetx_002`), 20 epochs
#   regnetx002_lr10 / _lr20   the same with peak lr 0.1 / 0.2 instead of the demo's 0.05
#   regnetx004  RegNetX-400MF (`regnetx_004`), 20 epochs
#   mnv4        MobileNetV4-conv-small (`timm:mobilenetv4_conv_small`), 20 epochs
#   r18         the teacher's network, resnet18 in bfloat16, 20 epochs
# and from scratch (the demo's scratch config: the same data, augmentation and schedule, no teacher), the twin the
# demo's report sets beside its KD student:
#   scratch     mobilenet_v3_small, 20 epochs (seed 0 is the demo's own run, copied); scratch_lr10 / scratch_lr20:
#               the same with peak lr 0.1 / 0.2 instead of the demo's 0.05
#   rxscratch   RegNetX-200MF, 20 epochs, the demo's SGD (lr 0.05, 1 warm-up epoch)
#   rxscratch_lr02 / _lr10 / _lr20 / _lr40 / _wu3   the same with peak lr 0.02 / 0.1 / 0.2 / 0.4 / with 3 warm-up
#               epochs
# Scored with `benchmarks/superset_teacher.py` (teacher row first) on the held-out style HELD and on ID val / test
# into OUT/score/{held,id}/results_summary.csv, then each arm paired by seed against BASE with `stillroom compare`
# (METRICS). Resumable: a run with metrics.json is kept.
#
#   stillroom demo --out artifacts/s69/art --minutes 0 --train-style icons=3        # the artwork held out, 8-11 min
#   DEMO=artifacts/s69/art HELD=artwork OUT=artifacts/s69/art_archs bash benchmarks/student_archs.sh
#   stillroom demo --out artifacts/s69/ico --minutes 0 --train-style artwork=4      # the box icons held out
#   ARMS="kd26 regnetx002" DEMO=artifacts/s69/ico HELD=icons OUT=artifacts/s69/ico_archs \
#     bash benchmarks/student_archs.sh
set -euo pipefail
source "$(dirname "$0")/_pairs.sh"
DEMO=${DEMO:?DEMO: a demo directory built with --minutes 0 and a held-out style}
HELD=${HELD:?HELD: the held-out style, artwork or icons}
OUT=${OUT:?OUT: where the students and scores go}
SEEDS=${SEEDS:-"0 1 2 3 4"}
ARMS=${ARMS:-"kd kd26 regnetx002"}
BASE=${BASE:-kd26}
METRICS=${METRICS:-"val_top1 test_top1"}
SL=${SL:-stillroom}
CFG=$DEMO/configs/student_mnv3s_kd.yaml
SCRATCH_CFG=$DEMO/configs/student_mnv3s_scratch.yaml
TEACHER=$DEMO/runs/teacher_resnet18_s0
HELD_INDEX=$DEMO/data/style_${HELD}_sprites64_1-151
[ -d "$HELD_INDEX" ] || { echo "no $HELD_INDEX: build DEMO with --train-style leaving $HELD out" >&2; exit 2; }
mkdir -p "$OUT/runs"

arm_args() {  # arm -> extra --set arguments
  case $1 in
    kd) ;;
    kd26) echo "--set schedule.epochs=26" ;;
    regnetx002) echo "--set model.name=regnetx_002" ;;
    regnetx002_lr10) echo "--set model.name=regnetx_002 --set optim.lr=0.1" ;;
    regnetx002_lr20) echo "--set model.name=regnetx_002 --set optim.lr=0.2" ;;
    regnetx004) echo "--set model.name=regnetx_004" ;;
    mnv4) echo "--set model.name=timm:mobilenetv4_conv_small" ;;
    r18) echo "--set model.name=resnet18 --set amp=bf16" ;;
    scratch) ;;
    scratch_lr10) echo "--set optim.lr=0.1" ;;
    scratch_lr20) echo "--set optim.lr=0.2" ;;
    rxscratch) echo "--set model.name=regnetx_002" ;;
    rxscratch_lr02) echo "--set model.name=regnetx_002 --set optim.lr=0.02" ;;
    rxscratch_lr10) echo "--set model.name=regnetx_002 --set optim.lr=0.1" ;;
    rxscratch_lr20) echo "--set model.name=regnetx_002 --set optim.lr=0.2" ;;
    rxscratch_lr40) echo "--set model.name=regnetx_002 --set optim.lr=0.4" ;;
    rxscratch_wu3) echo "--set model.name=regnetx_002 --set schedule.warmup_epochs=3" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}
for a in $ARMS; do arm_args "$a" > /dev/null; done  # an unknown arm stops here, not as a default run
runs=("$TEACHER")
for s in $SEEDS; do
  for a in $ARMS; do
    run=$OUT/runs/${a}_s$s
    runs+=("$run")
    [ -f "$run/metrics.json" ] && continue
    demo_run=$DEMO/runs/student_mnv3s_$a  # the demo's own kd and scratch students are seed 0
    if [ "$s" = 0 ] && [ -f "$demo_run/metrics.json" ]; then
      rm -rf "$run"; cp -r "$demo_run" "$run"; continue
    fi
    case $a in
      *scratch*) cfg=$SCRATCH_CFG; teacher_args=() ;;
      *) cfg=$CFG; teacher_args=(--set teachers.replay_seed=0) ;;
    esac
    # shellcheck disable=SC2046
    $SL train "$cfg" --out "$run" --set name="${a}_s$s" --set seed="$s" "${teacher_args[@]}" \
      $(arm_args "$a") $([ -f "$run/state.json" ] && echo --resume) > "$run.log" 2>&1
  done
done
mkdir -p "$OUT/score/held" "$OUT/score/id"
{
  python benchmarks/superset_teacher.py --index "$HELD_INDEX" --split val --split test \
    --csv "$OUT/score/held/results_summary.csv" "${runs[@]}"
  python benchmarks/superset_teacher.py --index "$DEMO/data/sprites64_1-151" --split val --split test \
    --csv "$OUT/score/id/results_summary.csv" "${runs[@]}"
  for where in held id; do
    echo "# $where"
    # shellcheck disable=SC2086
    compare_arms "$OUT/score/$where" "$BASE" "" "$METRICS" $ARMS
  done
} 2>&1 | tee "$OUT/summary_student_archs.txt"
