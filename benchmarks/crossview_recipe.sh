#!/usr/bin/env bash
# Issue 14 ablation: does the `shape` augmentation recipe (scale, shear / perspective warp, stroke thickness,
# re-rendering at 24-48 px, occlusion; src/stillroom/data/augment.py) close part of the student's gap on the unseen
# view? Cross-view split of species 1-151 at 64 px, the scratch and KD-from-resnet18 students of crossview_151.sh
# (their runs in $OUT/sweep are the `silhouette` baseline and are not retrained), 3 seeds each, judged on test top-1
# / macro-F1 and on the domain-shift validation proxy (`stillroom evaluate RUN --shift`, evaluate/shift.py: val
# images with rewritten outlines, resolutions and stroke widths; val only, never test).
#
#   bash benchmarks/crossview_recipe.sh      # OUT=artifacts/crossview151; needs crossview_151.sh's data, resnet18
#                                            # store and ce_scratch / kd_r18 runs
#
# Resumable: finished runs and evaluations are skipped. Runs train one at a time with one torch thread
# (`OMP_NUM_THREADS`, `NICE`), since the 2-core box is shared; about 8-10 min per student.
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
CFG=configs/crossview151
SEEDS=${SEEDS:-0 1 2}
NICE=${NICE:-5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
for need in "$OUT/data/index.json" "$OUT/stores/cv_teacher_resnet18_s0/manifest.json"; do
  [ -f "$need" ] || { echo "missing $need: run benchmarks/crossview_151.sh first" >&2; exit 1; }
done

# one run at a time, seed by seed, so a partial sweep already pairs scratch with KD
for s in $SEEDS; do
  stamp "students with augment: shape, seed $s"
  nice -n "$NICE" stillroom sweep "$CFG/recipe.yaml" --out "$OUT/recipe" --jobs 1 \
    --variant ce_scratch_shape --variant kd_r18_shape --seed "$s"
done
