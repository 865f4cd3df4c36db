#!/usr/bin/env bash
# Issue 14 ablation: does the `shape` augmentation recipe (scale, shear / perspective warp, stroke thickness,
# re-rendering at 24-48 px, occlusion; src/stillroom/data/augment.py) close part of the student's gap on the unseen
# view and on other drawing styles? Cross-view split of species 1-151 at 64 px, the scratch and KD-from-resnet18
# students of crossview_151.sh (their runs in $OUT/sweep are the `silhouette` baseline and are not retrained), 3
# seeds each, judged on test top-1 / macro-F1 and on the domain-shift validation proxy (`stillroom shift-val RUN`,
# evaluate/shift.py: val images with rewritten outlines, resolutions and stroke widths; val only, never test).
#
#   bash benchmarks/crossview_recipe.sh      # OUT=artifacts/crossview151; needs crossview_151.sh's data, resnet18
#                                            # teacher run and store, and its ce_scratch / kd_r18 runs
#
# Steps: (1) shape students at the baseline's 24 epochs (SEEDS); (2) KD students at 48 epochs, silhouette and
# shape (E48_SEEDS), because the shape students are still improving at epoch 24; (3) one-seed diagnostics
# (DIAG_SEEDS; "" skips): restyle (shape without scale / shear / warp) and KD from a replay store (the teacher's
# logits of the very shape view); (4) shift-val of every run and of the teacher; (5) summaries (mean ± sd) and
# `stillroom compare` verdicts. Resumable: finished runs and evaluations are skipped. Runs train one at a time with
# one torch thread (`OMP_NUM_THREADS`, `NICE`) since the 2-core box is shared: 3-9 min per 24-epoch student.
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
CFG=configs/crossview151
SEEDS=${SEEDS:-0 1 2}
E48_SEEDS=${E48_SEEDS-0 1 2}
DIAG_SEEDS=${DIAG_SEEDS-0}
NICE=${NICE:-5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R="$OUT/recipe"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
for need in "$OUT/data/index.json" "$OUT/stores/cv_teacher_resnet18_s0/manifest.json"; do
  [ -f "$need" ] || { echo "missing $need: run benchmarks/crossview_151.sh first" >&2; exit 1; }
done
sweep() { nice -n "$NICE" stillroom sweep "$CFG/recipe.yaml" --out "$R" --jobs 1 "$@"; }
shift_val() { [ -f "$1/shift_val.json" ] || nice -n "$NICE" stillroom shift-val "$1" >> "$R/shift_val.log" 2>&1; }

# (1) seed by seed, so a partial sweep already pairs scratch with KD
for s in $SEEDS; do
  stamp "students with augment: shape, 24 epochs, seed $s"
  sweep --variant ce_scratch_shape --variant kd_r18_shape --seed "$s"
done
# (2) the budget: KD at 48 epochs with either recipe
for s in $E48_SEEDS; do
  stamp "KD students at 48 epochs, silhouette and shape, seed $s"
  sweep --variant kd_r18_e48 --variant kd_r18_shape_e48 --seed "$s"
done
# (3) diagnostics
for s in $DIAG_SEEDS; do
  stamp "diagnostics, seed $s: kd_r18_restyle"
  sweep --variant kd_r18_restyle --seed "$s"
done
# replay: 8 views per row; the store's augment seed is the student's seed, so seed 0 only
if [[ " $DIAG_SEEDS " == *" 0 "* ]]; then
  store="$OUT/stores/cv_teacher_resnet18_s0_replay_shape_v8_s0"
  if [ ! -f "$store/manifest.json" ]; then
    stamp "replay store: resnet18, 8 shape views per row, augment seed 0"
    nice -n "$NICE" stillroom softlabels export --teacher "$OUT/runs/cv_teacher_resnet18_s0" --index "$OUT/data" \
      --out "$store" --views 8 --augment shape --augment-seed 0
  fi
  stamp "diagnostics, seed 0: kd_r18_shape_replay"
  sweep --variant kd_r18_shape_replay --seed 0
fi

# (4) the domain-shift proxy on val (best weights) for every run, baseline (silhouette) runs included
stamp "shift-val (val split, best weights)"
shift_val "$OUT/runs/cv_teacher_resnet18_s0"
for run in "$OUT"/sweep/*/seed* "$R"/*/seed*; do  # every crossview_151.sh student too (for the proxy check)
  if [ -f "$run/metrics.json" ]; then shift_val "$run"; fi
done

# (5) one row per (variant, seed) with test metrics of the best-val weights and the shift-val columns, and tables
summarize() {  # NAME VARIANT:DIR... -> $R/NAME_summary.csv and $R/NAME.md (runs with shift_val.json only)
  python benchmarks/crossview_summary.py table "$OUT" "$R" "$@" --teacher "$OUT/runs/cv_teacher_resnet18_s0"
}
compare_pairs() {  # NAME "A B"...: stillroom compare on $R/NAME_summary.csv, paired by seed
  local name=$1 a b metric; shift
  for pair in "$@"; do
    read -r a b <<< "$pair"
    for metric in test_top1 test_macro_f1 shift_mean shift_held_out_mean; do
      stillroom compare "$R/${name}_summary.csv" --metric "$metric" --a "$a" --b "$b" \
        --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1
    done
  done
}
stamp "summaries and comparisons"
summarize ablation ce_scratch:sweep ce_scratch_shape:recipe kd_r18:sweep kd_r18_shape:recipe
compare_pairs ablation "ce_scratch ce_scratch_shape" "kd_r18 kd_r18_shape" "ce_scratch_shape kd_r18_shape"
if [ -n "$E48_SEEDS" ]; then
  summarize epochs48 kd_r18:sweep kd_r18_shape:recipe kd_r18_e48:recipe kd_r18_shape_e48:recipe
  compare_pairs epochs48 "kd_r18_e48 kd_r18_shape_e48" "kd_r18 kd_r18_e48" "kd_r18 kd_r18_shape_e48"
fi
if [ -n "$DIAG_SEEDS" ]; then
  summarize diagnostics kd_r18:sweep kd_r18_shape:recipe kd_r18_restyle:recipe kd_r18_shape_replay:recipe \
    kd_r18_e48:recipe kd_r18_shape_e48:recipe > /dev/null
fi
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
# does the proxy track the unseen view? Spearman over the silhouette-trained students of crossview_151.sh
python - "$OUT/sweep" <<'PY' | tee "$R/proxy_check.md"
import json, statistics, sys
from pathlib import Path
from scipy.stats import spearmanr
runs = [r for r in sorted(Path(sys.argv[1]).glob("*/seed*")) if (r / "shift_val.json").is_file()]
rows = []
for r in runs:
    sh = json.loads((r / "shift_val.json").read_text())["best"]
    test = json.loads((r / "metrics.json").read_text())["splits"]["test"]["best"]["top1"]
    rows.append((r.parent.name, sh["clean"]["top1"], sh["mean"], sh["held_out_mean"], test))
print("| variant | runs | val top-1 % | shift-val % | shift-val not in recipe % | test top-1 % |")
print("|---|---:|---:|---:|---:|---:|")
for v in dict.fromkeys(x[0] for x in rows):
    sel = [x for x in rows if x[0] == v]
    print(f"| {v} | {len(sel)} | " + " | ".join(f"{100 * statistics.mean(x[i] for x in sel):.2f}" for i in (1, 2, 3, 4)) + " |")
test = [x[4] for x in rows]
for i, name in ((1, "val top-1 (clean)"), (2, "shift-val"), (3, "shift-val not in recipe")):
    print(f"\nSpearman rho of {name} vs test top-1 over {len(rows)} runs: {spearmanr([x[i] for x in rows], test).statistic:+.3f}", end="")
print()
PY
stamp "done"
