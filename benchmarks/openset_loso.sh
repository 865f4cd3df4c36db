#!/usr/bin/env bash
# Leave-one-OOD-source-out open-set benchmark (issue 16 item 3): for each OOD source S (emoji, chimeras of ID species,
# game-icons), a K+1 index whose sink train/val rows come from the OTHER sources only while S keeps its test rows
# (`data merge-sink --ood ... --test-only S`, OOD train share capped over the union), the target-dampened K+1
# student of benchmarks/openset_151.sh (configs/openset151/student_td.yaml, preset seed000) trained on it, and per
# held-out source: sink AUROC and FPR@95TPR on S's test rows vs ID test, the share of ID test images sent to the sink
# under the outline rewrites of evaluate/shift.py, and closed-set top-1 against a K-class KD student trained at the
# same budget (benchmarks/openset_loso_report.py). Targets: AUROC >= 0.95, FPR95 <= 0.20, rewrites to sink <= 10%,
# top-1 within 1 point. Resumable: every step is skipped when its output exists.
#
#   bash benchmarks/openset_loso.sh              # OUT=artifacts/openset_loso, ID/teacher from artifacts/openset151
#   QUICK=1 bash benchmarks/openset_loso.sh      # end-to-end smoke: species 1-6, 1-epoch teacher and students
#
# The patient variant (a K+1 sink on top of the recipe that met issue 14's block row): the demo's block index, its
# 32-epoch teacher, 16-view replay stores, 96 epochs, g = 1, and the patient K-class LumiNet students as reference:
#
#   OUT=artifacts/openset_loso_patient ID=artifacts/demo/data/sprites64_1-151 \
#   TEACHER=artifacts/block151/teachers/block_teacher_resnet18_e32_s0 EPOCHS=96 VIEWS=16 SEEDS=1 \
#   KD_FROM=artifacts/block151/patient/lum_t32x1_e96 TD_SETS="loss.params.preset=balanced" \
#   STUDENT_SETS="optim.nesterov=true eval_every=4" LANES=2 bash benchmarks/openset_loso.sh
#
# SOURCES may add `chimera-native` (chimeras cut from the sprites' frames and rendered once) or `blend` (morphs of
# two ID species, `data build ood-chimera --kind blend`), a second near-OOD source.
# ALWAYS: sources in the sink's training for every held-out source, never held out themselves, e.g. ALWAYS=creatures
# (`data build ood-creatures`: procedural creatures drawn as pixel art and rendered once, like the sprites) or
# ALWAYS=species (`data build ood-species`: the sprites of the species the ID index lacks, same artists and rendering).
# HOLD_ALL=1: one K+1 student per seed whose sink sees the ALWAYS sources only, every source of SOURCES held out at
# once (test rows only); the report reads it once per held-out source (runs/loso_<S>_s<seed> link to it).
# It is one claim: with LANES=2 the second lane idles; run two LANES=1 commands with different SEEDS instead
# (the second once the first has written the merged index's store).
# LANES=2: two such commands side by side (OMP_NUM_THREADS=1 each) share the held-out sources as a work queue (each
# claims the next with an atomic mkdir of $OUT/claims/<source>); the report runs once every run is there.
# After an interrupted LANES run, remove $OUT/claims before resuming.
set -euo pipefail
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  OUT=${OUT:-artifacts/openset_loso_quick}
  SPECIES=${SPECIES:-1-6}
  EPOCHS=${EPOCHS:-1}
  TEACHER_EPOCHS=${TEACHER_EPOCHS:-1}
  PER_SPLIT=${PER_SPLIT:-40}
  ID=${ID:-$OUT/id}
  TEACHER=${TEACHER:-$OUT/runs/teacher_s0}
else
  OUT=${OUT:-artifacts/openset_loso}
  SPECIES=${SPECIES:-1-151}
  EPOCHS=${EPOCHS:-16}                # configs/openset151/student_*.yaml
  TEACHER_EPOCHS=${TEACHER_EPOCHS:-8}  # configs/openset151/teacher.yaml (only when TEACHER has to be trained)
  PER_SPLIT=${PER_SPLIT:-600}
  ID=${ID:-artifacts/openset151/id}                                # 64 px block split, as openset_151.sh builds it
  TEACHER=${TEACHER:-artifacts/openset151/runs/os_teacher_resnet18_s0}
fi
SOURCES=${SOURCES:-emoji chimera game-icons}
ALWAYS=${ALWAYS:-}
HOLD_ALL=${HOLD_ALL:-0}
if [ "$HOLD_ALL" = 1 ] && [ -z "$ALWAYS" ]; then echo "HOLD_ALL=1 needs ALWAYS sources to train the sink on" >&2; exit 1; fi
SEEDS=${SEEDS:-0}
FRACTION=${FRACTION:-0.036}  # OOD share of train rows over all sources together (seed 000 §2.5's ~3.6%)
# BALANCE=1 shares those rows equally among the training sources (merge-sink --balance-sources); 0 draws from the
# union, which gives each source a share proportional to its pool (the 600 train chimeras got 21-48 of 156 rows)
BALANCE=${BALANCE:-1}
balance=(); [ "$BALANCE" = 1 ] && balance=(--balance-sources)
CFG=configs/openset151
mkdir -p "$OUT/runs"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
# Augmentation of every student (K-class and K+1 alike, ID and sink rows alike): restyle, the train default since
# issue 14 (stroke thickness, re-rendering at other resolutions: the rewrites the "sent to the sink" target measures),
# at batch 64 (at 128, 16 epochs are too few steps for restyle). AUGMENT=silhouette BATCH=128 is the recipe of
# configs/openset151 and benchmarks/openset_151.sh.
AUGMENT=${AUGMENT:-restyle}
BATCH=${BATCH:-64}
budget=(--set "schedule.epochs=$EPOCHS" --set "augment=$AUGMENT" --set "batch_size=$BATCH")
# TD_SETS: extra overrides of the K+1 student only, e.g. TD_SETS="loss.params.ood_weight=1.0" (the sink's weight g;
# seed000's 7.8 makes 156 OOD rows weigh as much as ~1,200 ID rows, a prior no single species has)
td_sets=(); for kv in ${TD_SETS:-}; do td_sets+=(--set "$kv"); done
# STUDENT_SETS: overrides of both students (K-class and K+1), e.g. the patient recipe's optimizer
for kv in ${STUDENT_SETS:-}; do budget+=(--set "$kv"); done
# VIEWS > 0: replay stores of V augmented views per row (augment seed 0, the students' augmentation) instead of the
# teacher's logits of the un-augmented images; the stores get their own directories
VIEWS=${VIEWS:-0}
store_args=(); sfx=""
if [ "$VIEWS" -gt 0 ]; then  # every seed's student replays the views of augment seed 0
  store_args=(--views "$VIEWS" --augment "$AUGMENT" --augment-seed 0); sfx="_v$VIEWS"; budget+=(--set teachers.replay_seed=0)
fi
# KD_FROM: reuse finished K-class runs as the reference (KD_FROM/seed<S> linked as runs/kd_s<S>), e.g. the patient
# LumiNet students of benchmarks/block_patient.sh, instead of training a KD student here
KD_FROM=${KD_FROM:-}
LANES=${LANES:-1}
claim() {  # true when this process should train run $1 (always, unless LANES > 1 and another lane claimed it)
  [ "$LANES" -gt 1 ] || return 0
  mkdir -p "$OUT/claims"; mkdir "$OUT/claims/$1" 2> /dev/null
}
[ "$EPOCHS" -lt 2 ] && budget+=(--set eval_every=1)

stamp "students: augment=$AUGMENT batch=$BATCH epochs=$EPOCHS seeds=$SEEDS"
stamp "data: ID index, OOD sources ($SOURCES) rendered like the ID index"
[ -f "$ID/index.json" ] || stillroom data build sprites --size 64 --species "$SPECIES" --out "$ID"
src_dir() { echo "$OUT/ood_$1"; }
for s in $SOURCES $ALWAYS; do
  d=$(src_dir "$s")
  [ -f "$d/index.json" ] && continue
  if ! claim "src_$s"; then  # another lane builds it
    while [ ! -f "$d/index.json" ]; do sleep 10; done
    continue
  fi
  case "$s" in
    # chimera / blend: from the ID images, rendered again, as BENCHMARKS' tables measured them; chimera-native:
    # from the sprites' own frames, rendered once (issue 16 item 1; the library's default since it was added)
    chimera) stillroom data build ood-chimera --parents rendered --id-index "$ID" --out "$d" --per-split "$PER_SPLIT" ;;
    chimera-native) stillroom data build ood-chimera --parents native --id-index "$ID" --out "$d" --per-split "$PER_SPLIT" ;;
    blend) stillroom data build ood-chimera --kind blend --parents rendered --id-index "$ID" --out "$d" \
      --per-split "$PER_SPLIT" ;;
    creatures) stillroom data build ood-creatures --id-index "$ID" --out "$d" --per-split "$PER_SPLIT" ;;
    # species: the sprites of the species the ID index lacks (152-649 for a 1-151 index), rendered by the ID
    # builder's own call and split by whole species (`data build ood-species`): no rendering cue at all
    species) stillroom data build ood-species --id-index "$ID" --out "$d" ;;
    *) stillroom data build ood-icons --source "$s" --size 64 --id-index "$ID" --out "$d" ;;
  esac
done

if [ ! -f "$TEACHER/metrics.json" ]; then
  stamp "teacher (K classes, ID only) -> $TEACHER"
  stillroom train "$CFG/teacher.yaml" --out "$TEACHER" --resume --quiet --set name=loso_teacher \
    --set data.index="$ID" --set "schedule.epochs=$TEACHER_EPOCHS" --set eval_every=1
fi
tname=$(basename "$TEACHER")

for seed in $SEEDS; do
  run="$OUT/runs/kd_s$seed"
  if [ -n "$KD_FROM" ]; then
    [ -f "$KD_FROM/seed$seed/metrics.json" ] || { echo "missing $KD_FROM/seed$seed/metrics.json" >&2; exit 1; }
    ln -sfn "$(realpath "$KD_FROM/seed$seed")" "$run"  # -f: two lanes may link it at the same moment
  elif [ ! -f "$run/metrics.json" ] && claim "kd_s$seed"; then
    [ -f "$OUT/stores_id$sfx/$tname/manifest.json" ] || stillroom softlabels export --teacher "$TEACHER" \
      --index "$ID" --out "$OUT/stores_id$sfx/$tname" "${store_args[@]}"
    stamp "K-class KD student, seed $seed, $EPOCHS epochs (the top-1 reference at the same budget)"
    stillroom train "$CFG/student_kd.yaml" --out "$run" --resume --quiet --set name=loso_kd_s$seed --set seed=$seed \
      --set data.index="$ID" --set "teachers.cached=[$OUT/stores_id$sfx/$tname]" "${budget[@]}"
  fi
done

oods=(); for s in $SOURCES $ALWAYS; do oods+=(--ood "$s=$(src_dir "$s")"); done
held_sets=$SOURCES
if [ "$HOLD_ALL" = 1 ]; then held_sets=all; fi
for held in $held_sets; do
  claim "$held" || continue
  merged="$OUT/merged_no_$held"
  if [ "$held" = all ]; then held_args=(); for s in $SOURCES; do held_args+=(--test-only "$s"); done
  else held_args=(--test-only "$held"); fi
  if [ ! -f "$merged/index.json" ]; then
    stamp "merged index: sink trained on all sources but $held ($held keeps its test rows)"
    stillroom data merge-sink "$ID" "${oods[@]}" "${held_args[@]}" --ood-train-fraction "$FRACTION" \
      "${balance[@]}" --out "$merged"
  fi
  store="$OUT/stores_merged_no_$held$sfx/$tname"
  [ -f "$store/manifest.json" ] || \
    stillroom softlabels export --teacher "$TEACHER" --index "$merged" --out "$store" "${store_args[@]}"
  for seed in $SEEDS; do
    run="$OUT/runs/loso_${held}_s$seed"
    if [ ! -f "$run/metrics.json" ]; then
      stamp "K+1 target-dampened student without $held, seed $seed, $EPOCHS epochs"
      stillroom train "$CFG/student_td.yaml" --out "$run" --resume --quiet --set name=loso_${held}_s$seed \
        --set seed=$seed --set data.index="$merged" --set "teachers.cached=[$store]" \
        "${budget[@]}" "${td_sets[@]}"
    fi
    if [ "$held" = all ]; then for s in $SOURCES; do ln -sfn "$(realpath "$run")" "$OUT/runs/loso_${s}_s$seed"; done; fi
  done
done

if [ "$LANES" -gt 1 ]; then  # the last lane to finish writes the report
  for held in $SOURCES; do for seed in $SEEDS; do
    [ -f "$OUT/runs/loso_${held}_s$seed/metrics.json" ] || { stamp "lane done; $held seed $seed not finished yet"; exit 0; }
  done; done
fi
stamp "report: per held-out source (test split, best weights)"
for seed in $SEEDS; do
  # shellcheck disable=SC2086
  python benchmarks/openset_loso_report.py --out "$OUT" --sources $SOURCES --kd-run "$OUT/runs/kd_s$seed" \
    --seed "$seed" | tee "$OUT/loso_s$seed.txt"
done
# every seed of OUT so far (also those of earlier invocations with other SEEDS): mean ± sd, targets met on every seed
python benchmarks/openset_loso_seeds.py "$OUT" --md "$OUT/loso_seeds.md"
stamp "done"
