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
for arch in "${TEACHERS[@]}"; do runs+=("$OUT/runs/cv_teacher_${arch}_s0"); done
teacher() {  # train (resume) and export one teacher
  local arch=$1 run="$OUT/runs/cv_teacher_$1_s0"
  if [ ! -f "$run/metrics.json" ]; then
    stamp "teacher $arch"
    /usr/bin/time -f "teacher $arch wall %e s" stillroom train "$CFG/teacher_${arch}.yaml" --out "$run" --resume --quiet
  fi
  if [ ! -f "$OUT/stores/cv_teacher_${arch}_s0/manifest.json" ]; then
    stillroom softlabels export --teacher "$run" --index "$OUT/data" --out "$OUT/stores/cv_teacher_${arch}_s0"
  fi
}
# two teachers at a time, one torch thread each (two 2-thread torch processes on 2 cores slow each other 5-15x)
for pair in "resnet18 vit_tiny" "efficientnet_b0 convnext_tiny"; do
  for arch in $pair; do OMP_NUM_THREADS=1 teacher "$arch" & done
  wait
done
stillroom softlabels check "$OUT"/stores/cv_teacher_*_s0 --index "$OUT/data" --strict --out "$OUT/alignment_check.json"
stamp "teacher selection scores (val split)"
stillroom score-teachers "${runs[@]}" --split val --out "$OUT/teacher_scores.json" > "$OUT/teacher_scores.txt"

JOBS=${JOBS:-2}  # student runs side by side (the sweep gives each cpu_count // JOBS torch threads)
SEEDS=${SEEDS:-0 1 2}  # every comparison row gets these seeds (issue 13: at least 3)
seed_args=(); for s in $SEEDS; do seed_args+=(--seed "$s"); done
stamp "students: scratch vs KD from the teacher ranked first by val top-1 (resnet18), seeds: $SEEDS"
stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --jobs "$JOBS" --variant ce_scratch --variant kd_r18 "${seed_args[@]}"
stamp "students from the 4-teacher pool: KD fused / split, DKD, LumiNet, seeds: $SEEDS"
stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --jobs "$JOBS" --variant kd_fused_pool4 --variant kd_split_pool4 \
  --variant dkd_fused_pool4 --variant luminet_fused_pool4 "${seed_args[@]}"

stamp "teacher selection check: one KD student per teacher, seeds: $SEEDS; Spearman rho of each score vs top-1"
stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --jobs "$JOBS" --variant kd_r18 --variant kd_effb0 \
  --variant kd_convnext --variant kd_vit "${seed_args[@]}"
for s in $SEEDS; do
  stillroom validate-selection --scores "$OUT/teacher_scores.json" --teachers "${runs[@]}" \
    --students "$OUT"/sweep/{kd_r18,kd_effb0,kd_convnext,kd_vit}/seed$s --out "$OUT/selection_validation_seed$s.json" \
    > "$OUT/selection_validation_seed$s.txt"
done
# the same check on each teacher's student top-1 averaged over the seeds (exact p over all 4! orderings)
python - "$OUT" $SEEDS <<'PY' | tee "$OUT/selection_validation_mean.txt"
import itertools, json, sys
from pathlib import Path
from scipy.stats import spearmanr
out, seeds = Path(sys.argv[1]), sys.argv[2:]
variants = {"resnet18": "kd_r18", "efficientnet_b0": "kd_effb0", "convnext_tiny": "kd_convnext", "vit_tiny": "kd_vit"}
scores = {Path(e["run"]).name: e for e in json.loads((out / "teacher_scores.json").read_text())["teachers"]}
acc = {}
for arch, v in variants.items():
    vals = [json.loads((out / "sweep" / v / f"seed{s}" / "metrics.json").read_text())["splits"]["test"]["best"]["top1"]
            for s in seeds]
    acc[arch] = sum(vals) / len(vals)
archs = list(variants)
y = [acc[a] for a in archs]
print("student test top-1, mean over seeds " + " ".join(seeds) + ": " + ", ".join(f"{a} {acc[a]:.4f}" for a in archs))
for metric in ("tac", "ssp", "r12", "margin", "logprob_gap", "prob_gap", "ece", "nll"):
    x = [scores[f"cv_teacher_{a}_s0"][metric] for a in archs]
    rho = spearmanr(x, y).statistic
    perms = [spearmanr(x, [y[i] for i in p]).statistic for p in itertools.permutations(range(len(y)))]
    p_exact = sum(abs(r) >= abs(rho) - 1e-12 for r in perms) / len(perms)
    print(f"{metric}: rho {rho:+.3f} (raw orientation; exact two-sided p {p_exact:.3f}, n = {len(y)})")
PY

stamp "comparisons"
# a b pairs: KD vs scratch, split vs fused, DKD vs KD, LumiNet vs KD, the pool vs the best single teacher
for pair in "ce_scratch kd_r18" "kd_fused_pool4 kd_split_pool4" "kd_fused_pool4 dkd_fused_pool4" \
            "kd_fused_pool4 luminet_fused_pool4" "kd_r18 kd_fused_pool4" "ce_scratch luminet_fused_pool4"; do
  read -r a b <<< "$pair"
  for metric in top1 macro_f1; do
    stillroom compare "$OUT/sweep" --metric "$metric" --a "$a" --b "$b" --json "$OUT/compare_${a}_vs_${b}_${metric}.json" \
      2>&1 | tee "$OUT/compare_${a}_vs_${b}_${metric}.txt"
  done
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
