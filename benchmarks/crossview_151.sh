#!/usr/bin/env bash
# Cross-view comparisons on species 1-151 at 64 px (issues 4 and 5): a teacher pool of four architectures, its
# teacher-selection scores, and mobilenet_v3_small students (scratch, KD fused / split, DKD, LumiNet) over seeds.
# Cross-view split: train/val on one view of each species, test on the other view (1-NN pixel probe ~20% on test),
# so scores are not saturated the way the block split's are. Resumable: finished steps are skipped on re-run.
#
#   bash benchmarks/crossview_151.sh            # OUT=artifacts/crossview151 by default
#
# Wall time on the 2-core CPU box: see BENCHMARKS.md ("Cross-view, species 1-151").
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
CFG=configs/crossview151
TEACHERS=(resnet18 efficientnet_b0 convnext_tiny vit_tiny)
mkdir -p "$OUT"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

if [ ! -f "$OUT/data/index.json" ]; then
  stamp "data"
  stillroom data build sprites --size 64 --species 1-151 --split cross-view --out "$OUT/data"
fi

runs=()
for arch in "${TEACHERS[@]}"; do
  run="$OUT/runs/cv_teacher_${arch}_s0"
  runs+=("$run")
  if [ ! -f "$run/metrics.json" ]; then
    stamp "teacher $arch"
    /usr/bin/time -f "teacher $arch wall %e s" stillroom train "$CFG/teacher_${arch}.yaml" --out "$run" --resume --quiet
  fi
  if [ ! -f "$OUT/stores/cv_teacher_${arch}_s0/manifest.json" ]; then
    stillroom softlabels export --teacher "$run" --index "$OUT/data" --out "$OUT/stores/cv_teacher_${arch}_s0"
  fi
done
stillroom softlabels check "$OUT"/stores/cv_teacher_*_s0 --index "$OUT/data" --strict --out "$OUT/alignment_check.json"
stamp "teacher selection scores (val split)"
stillroom score-teachers "${runs[@]}" --split val --out "$OUT/teacher_scores.json" > "$OUT/teacher_scores.txt"

stamp "students: scratch vs KD from the teacher ranked first by val top-1 (resnet18), 3 seeds"
stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --variant ce_scratch --variant kd_r18
SEEDS=${SEEDS:-0}  # of the method comparison; SEEDS="0 1 2" for the full grid
seed_args=(); for s in $SEEDS; do seed_args+=(--seed "$s"); done
stamp "students from the 4-teacher pool: KD fused / split, DKD, LumiNet, seeds: $SEEDS"
stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --variant kd_fused_pool4 --variant kd_split_pool4 --variant dkd_fused_pool4 \
  --variant luminet_fused_pool4 "${seed_args[@]}"

stamp "teacher selection check: one KD student per teacher (seed 0), Spearman rho of each score vs student top-1"
stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --variant kd_r18 --variant kd_effb0 --variant kd_convnext \
  --variant kd_vit --seed 0
stillroom validate-selection --scores "$OUT/teacher_scores.json" --teachers "${runs[@]}" \
  --students "$OUT"/sweep/{kd_r18,kd_effb0,kd_convnext,kd_vit}/seed0 --out "$OUT/selection_validation.json" \
  > "$OUT/selection_validation.txt"

stamp "comparisons"
for metric in top1 macro_f1; do
  stillroom compare "$OUT/sweep" --metric "$metric" --a ce_scratch --b kd_r18 --json "$OUT/compare_kd_r18_${metric}.json" \
    | tee "$OUT/compare_kd_r18_${metric}.txt"
done
# one row per run (variant, seed, test top-1 / macro-F1 / ECE), for the method comparison
python - "$OUT/sweep/results_summary.csv" <<'PY' | tee "$OUT/methods_test.md"
import csv, sys
cols = ("test_top1", "test_macro_f1", "test_ece", "test_ece_ts", "temperature", "wall_seconds")
print("| variant | seed | " + " | ".join(cols) + " |")
print("|---|---:|" + "---:|" * len(cols))
for r in csv.DictReader(open(sys.argv[1])):
    print(f"| {r['variant']} | {r['seed']} | " + " | ".join(f"{float(r[c]):.4f}" if r[c] else "-" for c in cols) + " |")
PY
stamp "done"
