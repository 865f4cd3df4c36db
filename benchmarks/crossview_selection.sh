#!/usr/bin/env bash
# Issue 14 item 4: can teacher selection be checked? Six teachers on the cross-view split (species 1-151, 64 px):
# resnet18, efficientnet_b0, convnext_tiny, vit_tiny (crossview_151.sh), resnet18 trained with `restyle`
# (crossview_kd_sources.sh) and mobilenet_v3_large (trained here). One KD student per teacher (sweep.yaml kd_*:
# mobilenet_v3_small, 24 epochs, a = 0.5, T = 4), 3 seeds each. Spearman rho of every teacher score computed on val
# BEFORE distillation (TAC, SSP, R12, margin, ...; seed 004 §3) against the students' test top-1, per seed and on
# the mean over seeds, with the exact two-sided p over all 6! = 720 pairings (`stillroom validate-selection`).
#
#   bash benchmarks/crossview_selection.sh      # OUT=artifacts/crossview151; after crossview_151.sh and
#                                               # crossview_kd_sources.sh (the restyle teacher and its store)
#
# Resumable; one torch thread, one job at a time (shared 2-core box).
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
CFG=configs/crossview151
SEEDS=${SEEDS:-0 1 2}
NICE=${NICE:-5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R="$OUT/selection6"
mkdir -p "$R"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
# teacher run name -> its KD student variant in sweep.yaml
declare -A VARIANT=([resnet18]=kd_r18 [efficientnet_b0]=kd_effb0 [convnext_tiny]=kd_convnext [vit_tiny]=kd_vit
                    [resnet18_restyle]=kd_r18restyle [mobilenet_v3_large]=kd_mnv3l)
TEACHERS=(resnet18 efficientnet_b0 convnext_tiny vit_tiny resnet18_restyle mobilenet_v3_large)

run="$OUT/runs/cv_teacher_mobilenet_v3_large_s0"
if [ ! -f "$run/metrics.json" ]; then
  stamp "teacher mobilenet_v3_large"
  nice -n "$NICE" stillroom train "$CFG/teacher_mobilenet_v3_large.yaml" --out "$run" --resume --quiet
fi
store="$OUT/stores/cv_teacher_mobilenet_v3_large_s0"
[ -f "$store/manifest.json" ] || nice -n "$NICE" stillroom softlabels export --teacher "$run" --index "$OUT/data" --out "$store"
for t in "${TEACHERS[@]}"; do
  [ -f "$OUT/runs/cv_teacher_${t}_s0/metrics.json" ] || { echo "missing teacher $t: see the header" >&2; exit 1; }
done
runs=(); for t in "${TEACHERS[@]}"; do runs+=("$OUT/runs/cv_teacher_${t}_s0"); done
if [ ! -f "$R/teacher_scores.json" ]; then
  stamp "teacher scores (val split, before distillation)"
  nice -n "$NICE" stillroom score-teachers "${runs[@]}" --split val --out "$R/teacher_scores.json" > "$R/teacher_scores.txt"
fi

for s in $SEEDS; do
  for t in "${TEACHERS[@]}"; do
    v=${VARIANT[$t]}
    if [ ! -f "$OUT/sweep/$v/seed$s/metrics.json" ]; then
      stamp "KD student from $t, seed $s"
      nice -n "$NICE" stillroom sweep "$CFG/sweep.yaml" --out "$OUT/sweep" --jobs 1 --variant "$v" --seed "$s"
    fi
  done
done

students_for() {  # SEED... -> one --students entry per teacher (comma-joined seeds = their mean)
  local t s entry out=()
  for t in "${TEACHERS[@]}"; do
    entry=""; for s in "$@"; do entry+="${entry:+,}$OUT/sweep/${VARIANT[$t]}/seed$s"; done
    out+=("$entry")
  done
  printf '%s\n' "${out[@]}"
}
stamp "validate-selection: per seed and on the mean over seeds"
for s in $SEEDS; do
  mapfile -t st < <(students_for "$s")
  stillroom validate-selection --scores "$R/teacher_scores.json" --teachers "${runs[@]}" --students "${st[@]}" \
    --out "$R/selection_seed$s.json" > "$R/selection_seed$s.txt"
done
# shellcheck disable=SC2086
mapfile -t st < <(students_for $SEEDS)
stillroom validate-selection --scores "$R/teacher_scores.json" --teachers "${runs[@]}" --students "${st[@]}" \
  --out "$R/selection_mean.json" > "$R/selection_mean.txt"
python - "$R" $SEEDS <<'PY' | tee "$R/selection.md"
import json, sys
from pathlib import Path
r, seeds = Path(sys.argv[1]), sys.argv[2:]
mean = json.loads((r / "selection_mean.json").read_text())
per = {s: json.loads((r / f"selection_seed{s}.json").read_text()) for s in seeds}
print("| teacher | " + " | ".join(["TAC", "SSP", "R12", "margin"]) + " | student test top-1 % (mean of seeds " + ",".join(seeds) + ") |")
print("|---|---:|---:|---:|---:|---:|")
for p in mean["pairs"]:
    print(f"| {Path(p['teacher']).name} | {p['tac']:.4f} | {p['ssp']:.4f} | "
          + (f"{p['r12']:.3f}" if p["r12"] is not None else "nan") + f" | {p['margin']:.3f} | {100 * p['student_accuracy']:.2f} |")
print()
print("| score | rho (mean of seeds) | exact p | rho oriented (+ = as seed 004 expects) | " + " | ".join(f"rho seed {s} (exact p)" for s in seeds) + " |")
print("|---|---:|---:|---:|" + "---:|" * len(seeds))
for m, c in mean["correlations"].items():
    cells = [f"{per[s]['correlations'][m]['rho']:+.3f} ({per[s]['correlations'][m]['p_value_exact']:.3f})"
             if per[s]["correlations"][m]["p_value_exact"] is not None else "nan" for s in seeds]
    ex = f"{c['p_value_exact']:.3f}" if c["p_value_exact"] is not None else "-"
    print(f"| {m} | {c['rho']:+.3f} | {ex} | {c['rho_oriented']:+.3f} | " + " | ".join(cells) + " |")
PY
stamp "done"
