#!/usr/bin/env bash
# Issue 14 item 1: which training augmentation carries over to the same species drawn by another artist? The
# demo's scratch student (mobilenet_v3_small, 20 epochs, batch 64, SGD 0.05; make demo's
# configs/student_mnv3s_scratch.yaml) trained with each recipe of AUGMENTS x SEEDS, then scored on the demo's
# block split and on the box-icon style set (`stillroom data build style-icons`, built here when absent): val
# (odd national ids) selects, test (even ids) reports. Table (summary.md) and `stillroom compare` of every recipe
# against restyle on style val and ID val (compare.txt); shift-val of every run, to see whether the outline-rewrite
# proxy ranks runs as the real other artist does (Spearman rho in summary.md).
#
#   AUGMENTS="restyle shape deform" SEEDS="0 1 2" bash benchmarks/style_augment.sh   # after make demo
#   PREFIX=kd CFG=artifacts/demo/configs/student_mnv3s_kd.yaml SETS=teachers.replay_seed=0 AUGMENTS=restyle \
#     EPOCHS=60 bash benchmarks/style_augment.sh   # the demo's distilled student on the demo's replay store
#   PREFIX=t CFG=artifacts/demo/configs/teacher_resnet18_s0.yaml MODELS="resnet18 efficientnet_b0" AUGMENTS=restyle \
#     bash benchmarks/style_augment.sh   # teachers of several families at the demo's teacher budget (<PREFIX>_<model>_..)
#
# Resumable (finished runs are skipped). One torch thread per run; LANES runs side by side (2 on the 2-core box).
set -euo pipefail
OUT=${OUT:-artifacts/style_augment}
DEMO=${DEMO:-artifacts/demo}
INDEX=${INDEX:-$DEMO/data/sprites64_1-151}
STYLE=${STYLE:-artifacts/style_icons64}
AUGMENTS=${AUGMENTS:-restyle shape deform}
SEEDS=${SEEDS:-0 1 2}
LANES=${LANES:-2}
EPOCHS=${EPOCHS:-}  # empty: the demo config's 20; else runs are named scr_<augment>_e<EPOCHS>_s<seed>
CFG=${CFG:-$DEMO/configs/student_mnv3s_scratch.yaml}  # or the demo's KD student config, with PREFIX=kd
PREFIX=${PREFIX:-scr}
SETS=${SETS:-}  # more config overrides, key=value separated by spaces (KD: teachers.replay_seed=0)
MODELS=${MODELS:-}  # empty: the config's model; else one run per model (model.name), named <PREFIX>_<model>_<augment>..
export OMP_NUM_THREADS=1
[ -f "$CFG" ] || { echo "missing $CFG: run make demo first" >&2; exit 1; }
mkdir -p "$OUT"
[ -f "$STYLE/index.json" ] || stillroom data build style-icons --id-index "$INDEX" --out "$STYLE"
jobs=(); for m in ${MODELS:--}; do for a in $AUGMENTS; do for s in $SEEDS; do jobs+=("$m:$a:$s"); done; done; done
lane() {
  local k=$1
  for ((i = k; i < ${#jobs[@]}; i += LANES)); do
    local m aug s; IFS=: read -r m aug s <<< "${jobs[$i]}"
    local tag; tag=$([ "$m" = - ] || echo "${m}_")
    local run="$OUT/${PREFIX}_${tag}${aug}${EPOCHS:+_e$EPOCHS}_s$s"
    if ! compgen -G "$run/metrics_on_$(basename "$STYLE")-*.json" > /dev/null; then
      stillroom train "$CFG" --out "$run" --set augment="$aug" --set seed="$s" --set data.index="$INDEX" --quiet \
        ${EPOCHS:+--set schedule.epochs=$EPOCHS} $([ "$m" = - ] || echo --set model.name="$m") \
        $(for kv in $SETS; do printf -- '--set %s ' "$kv"; done) \
        $( [ -f "$run/state.json" ] && echo --resume ) > "$run.log" 2>&1
      stillroom evaluate "$run" --split val --split test --weights best >> "$run.log" 2>&1
      stillroom evaluate "$run" --index "$STYLE" --split val --split test --weights best >> "$run.log" 2>&1
    fi
    [ -f "$run/shift_val.json" ] || stillroom shift-val "$run" >> "$run.log" 2>&1
    echo "[$(date -u +%T)] $run"
  done
}
for ((k = 0; k < LANES; k++)); do lane $k & done
wait
python benchmarks/style_summary.py "$OUT/${PREFIX}_*" --style "$STYLE" --csv "$OUT/results_summary.csv" | tee "$OUT/summary_${PREFIX}.md"
[ -z "$MODELS" ] && for b in $AUGMENTS; do [ "$b" = restyle ] && continue
  for m in style_val_top1 id_val_top1; do
    stillroom compare "$OUT" --metric $m --a "${PREFIX}_restyle${EPOCHS:+_e$EPOCHS}" --b "${PREFIX}_$b${EPOCHS:+_e$EPOCHS}"
  done
done 2>&1 | tee "$OUT/compare_${PREFIX}.txt"
first=${MODELS%% *}  # with MODELS: every other family against the first one, per augment
for m in $MODELS; do [ "$m" = "$first" ] && continue
  for a in $AUGMENTS; do for met in style_val_top1 id_val_top1; do
    stillroom compare "$OUT" --metric $met --a "${PREFIX}_${first}_$a${EPOCHS:+_e$EPOCHS}" \
      --b "${PREFIX}_${m}_$a${EPOCHS:+_e$EPOCHS}"
  done; done
done 2>&1 | tee -a "$OUT/compare_${PREFIX}.txt"
