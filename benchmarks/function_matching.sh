#!/usr/bin/env bash
# Function matching on CutMix batches (configs/openset151/student_kd_fm_cutmix.yaml; Beyer et al. 2022 §3) against
# the patient K-class KD reference of benchmarks/openset_loso.sh, one factor changed: the teacher runs online on
# mixed batches. Question (issue 16 item 3): the 32-epoch teacher rejects held-out blends at MaxLogit FPR@95 0.17,
# its replay-distilled students at 0.24; does a student that matched the teacher on silhouettes cut together keep
# more of that? And (issue 14) does it read another artist's drawings better? Resumable.
#
#   TEACHER=artifacts/s31/teachers/block_teacher_resnet18_e32_s0 REFS="artifacts/s32/fm/kd_s0 ..." \
#     OODS="blend=DIR chimera-native=DIR ..." OUT=artifacts/s32/fm SEEDS="0 1 2" bash benchmarks/function_matching.sh
#
# Other one-factor variants of the same reference run through it too: CFG (the config), VARIANT (run name prefix),
# TABLE (table prefix), TEACHERS (the teachers' --set), SETS (more `--set` overrides, space-separated), e.g.
# logit matching from the replay store:
#   CFG=configs/openset151/student_logit_mse.yaml VARIANT=logit_mse TABLE=mse \
#     TEACHERS="teachers.cached=[artifacts/s31/loso_spe_near/stores_id_v16/block_teacher_resnet18_e32_s0]" ...
#
# STAGE=train trains only (run two one-thread lanes with different SEEDS side by side), STAGE=eval evaluates every
# run of SEEDS and every REFS run (`stillroom evaluate RUN --ood-index` per source: one ood_metrics_vs_<source>.json
# each; the icons with --index STYLE) and writes one `stillroom ood-table` per source and group; all (default): both.
set -euo pipefail
OUT=${OUT:-artifacts/fm}
ID=${ID:-artifacts/demo/data/sprites64_1-151}
CFG=${CFG:-configs/openset151/student_kd_fm_cutmix.yaml}
VARIANT=${VARIANT:-fm_cutmix}
TABLE=${TABLE:-fm}
if [ -z "${TEACHERS:-}" ]; then
  TEACHER=${TEACHER:?set TEACHER to the K-class teacher run (the one the REFS were distilled from), or TEACHERS}
  TEACHERS="teachers.online=[$TEACHER]"
fi
SEEDS=${SEEDS:-0 1 2}
SETS=${SETS:-}   # more overrides, e.g. "loss.params.kd_weight=1.0"
OODS=${OODS:-}   # NAME=DIR of OOD source indexes built against ID (as benchmarks/openset_loso.sh builds them)
REFS=${REFS:-}   # reference runs (e.g. copies of openset_loso.sh's kd_s<seed>), evaluated the same way
STYLE=${STYLE:-artifacts/demo/data/style_icons_sprites64_1-151}
STAGE=${STAGE:-all}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
mkdir -p "$OUT/runs"

if [ "$STAGE" != eval ]; then
  for seed in $SEEDS; do
    run="$OUT/runs/${VARIANT}_s$seed"
    [ -f "$run/metrics.json" ] && continue
    stamp "$VARIANT ($CFG $SETS), seed $seed"
    extra=(); for kv in $SETS; do extra+=(--set "$kv"); done
    stillroom train "$CFG" --out "$run" --resume --quiet --set seed="$seed" --set name="${VARIANT}_s$seed" \
      --set data.index="$ID" --set "$TEACHERS" ${extra[@]+"${extra[@]}"}
  done
fi
[ "$STAGE" = train ] && exit 0

fm=(); for seed in $SEEDS; do fm+=("$OUT/runs/${VARIANT}_s$seed"); done
refs=($REFS)
for run in "${fm[@]}" "${refs[@]}"; do
  for spec in $OODS; do
    [ -s "$run/eval_${spec%%=*}.txt" ] && continue  # resumable: evaluated before
    stamp "evaluate $run vs ${spec%%=*}"
    stillroom evaluate "$run" --split test --weights best --ood-split test --ood-index "${spec#*=}" --no-tune-odin \
      > "$run/eval_${spec%%=*}.txt"
  done
  [ -f "$STYLE/index.json" ] && [ ! -s "$run/eval_style.txt" ] && stillroom evaluate "$run" --index "$STYLE" --split val --split test --weights best \
    --no-tune-odin > "$run/eval_style.txt"
done
for spec in $OODS; do
  name=${spec%%=*}
  stillroom ood-table "${fm[@]}" --ood-index "${spec#*=}" --markdown "$OUT/${TABLE}_$name.md" > /dev/null
  [ ${#refs[@]} -gt 0 ] && stillroom ood-table "${refs[@]}" --ood-index "${spec#*=}" --markdown "$OUT/ref_$name.md" > /dev/null
done
stamp "done: $OUT/${TABLE}_<source>.md, $OUT/ref_<source>.md"
