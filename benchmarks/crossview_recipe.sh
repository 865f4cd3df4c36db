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

# the domain-shift proxy on val for every run, baseline (silhouette) runs included, and the resnet18 teacher
stamp "shift-val (val split, best weights)"
runs=()
for s in $SEEDS; do
  runs+=("$OUT/sweep/ce_scratch/seed$s" "$OUT/recipe/ce_scratch_shape/seed$s" "$OUT/sweep/kd_r18/seed$s" \
         "$OUT/recipe/kd_r18_shape/seed$s")
done
runs+=("$OUT/runs/cv_teacher_resnet18_s0")
for run in "${runs[@]}"; do
  [ -f "$run/shift_val.json" ] || nice -n "$NICE" stillroom shift-val "$run" >> "$OUT/recipe/shift_val.log" 2>&1
done

# one row per (variant, seed): test metrics of the best-val weights (metrics.json) and the shift-val columns
stamp "summary: $OUT/recipe/ablation_summary.csv, $OUT/recipe/ablation.md"
python - "$OUT" $SEEDS <<'PY'
import csv, json, statistics, sys
from pathlib import Path
out, seeds = Path(sys.argv[1]), sys.argv[2:]
dirs = {"ce_scratch": "sweep", "ce_scratch_shape": "recipe", "kd_r18": "sweep", "kd_r18_shape": "recipe"}
rows = []
for variant, where in dirs.items():
    for s in seeds:
        run = out / where / variant / f"seed{s}"
        m = json.loads((run / "metrics.json").read_text())["splits"]
        sh = json.loads((run / "shift_val.json").read_text())["best"]
        row = {"variant": variant, "seed": s, "run_dir": str(run), "test_top1": m["test"]["best"]["top1"],
               "test_macro_f1": m["test"]["best"]["macro_f1"], "val_top1": sh["clean"]["top1"],
               "shift_mean": sh["mean"], "shift_held_out_mean": sh["held_out_mean"]}
        row.update({f"shift_{k}": v["top1"] for k, v in sh["rewrites"].items()})
        rows.append(row)
with open(out / "recipe" / "ablation_summary.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
def ms(vals, pct=True):
    f = 100 if pct else 1
    return f"{f * statistics.mean(vals):.2f} ± {f * statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{f * vals[0]:.2f}"
cols = [("test_top1", "test top-1 %"), ("test_macro_f1", "test macro-F1 x100"), ("val_top1", "val top-1 %"),
        ("shift_mean", "shift-val % (mean of 11)"), ("shift_held_out_mean", "shift-val not in recipe % (4)")]
lines = ["| variant | augment | " + " | ".join(c[1] for c in cols) + " |", "|---|---|" + "---:|" * len(cols)]
for v in dirs:
    sel = [r for r in rows if r["variant"] == v]
    aug = "shape" if v.endswith("_shape") else "silhouette"
    lines.append(f"| {v} | {aug} | " + " | ".join(ms([r[c] for r in sel]) for c, _ in cols) + " |")
rewrites = [k[len("shift_"):] for k in rows[0] if k.startswith("shift_") and k not in ("shift_mean", "shift_held_out_mean")]
teacher = json.loads((out / "runs" / "cv_teacher_resnet18_s0" / "shift_val.json").read_text())["best"]
lines += ["", "| rewrite (val, top-1 %) | " + " | ".join(dirs) + " | resnet18 teacher |", "|---|" + "---:|" * (len(dirs) + 1)]
lines.append("| clean | " + " | ".join(ms([r["val_top1"] for r in rows if r["variant"] == v]) for v in dirs)
             + f" | {100 * teacher['clean']['top1']:.2f} |")
for k in rewrites:
    lines.append(f"| {k} | " + " | ".join(ms([r[f'shift_{k}'] for r in rows if r["variant"] == v]) for v in dirs)
                 + f" | {100 * teacher['rewrites'][k]['top1']:.2f} |")
lines.append("| mean (shift-val) | " + " | ".join(ms([r["shift_mean"] for r in rows if r["variant"] == v]) for v in dirs)
             + f" | {100 * teacher['mean']:.2f} |")
lines.append("| mean, not in shape recipe | " + " | ".join(ms([r["shift_held_out_mean"] for r in rows if r["variant"] == v]) for v in dirs)
             + f" | {100 * teacher['held_out_mean']:.2f} |")
text = "\n".join(lines) + "\n"
(out / "recipe" / "ablation.md").write_text(text)
print(text, end="")
PY

stamp "comparisons: silhouette -> shape, paired by seed"
for pair in "ce_scratch ce_scratch_shape" "kd_r18 kd_r18_shape" "ce_scratch_shape kd_r18_shape"; do
  read -r a b <<< "$pair"
  for metric in test_top1 test_macro_f1 shift_mean shift_held_out_mean; do
    stillroom compare "$OUT/recipe/ablation_summary.csv" --metric "$metric" --a "$a" --b "$b" \
      --json "$OUT/recipe/compare_${a}_vs_${b}_${metric}.json" > "$OUT/recipe/compare_${a}_vs_${b}_${metric}.txt" 2>&1
  done
done
python - "$OUT/recipe" <<'PY' | tee "$OUT/recipe/compare.md"
import json, sys
from pathlib import Path
print("| a -> b | metric | b - a (x100) | bootstrap 95% CI (x100) | b ahead in | permutation p | verdict |")
print("|---|---|---:|---|---:|---:|---|")
for path in sorted(Path(sys.argv[1]).glob("compare_*.json")):
    r = json.loads(path.read_text())
    a, b, ci = r["a"], r["b"], r["bootstrap_ci"]
    ahead = sum(vb > va for va, vb in zip(a["values"], b["values"]))
    f, verdict = 100, r["verdict"].split("Verdict: ")[-1]
    print(f"| {a['name']} -> {b['name']} | {r['metric']} | {f * r['mean_diff']:+.2f} | [{f * ci['low']:+.2f}, "
          f"{f * ci['high']:+.2f}] | {ahead} of {len(a['values'])} | {r['permutation']['p_value']:.3g} | {verdict} |")
PY

# diagnostics of the gap, one seed by default (DIAG_SEEDS="": skip): restyle (shape without scale / shear / warp)
# and the budget (shape and silhouette at 48 epochs), all KD from resnet18
DIAG_SEEDS=${DIAG_SEEDS-0}
if [ -n "$DIAG_SEEDS" ]; then
  for s in $DIAG_SEEDS; do
    stamp "diagnostics, seed $s: kd_r18_restyle, kd_r18_shape_e48, kd_r18_e48"
    nice -n "$NICE" stillroom sweep "$CFG/recipe.yaml" --out "$OUT/recipe" --jobs 1 \
      --variant kd_r18_restyle --variant kd_r18_shape_e48 --variant kd_r18_e48 --seed "$s"
    for v in kd_r18_restyle kd_r18_shape_e48 kd_r18_e48; do
      run="$OUT/recipe/$v/seed$s"
      [ -f "$run/shift_val.json" ] || nice -n "$NICE" stillroom shift-val "$run" >> "$OUT/recipe/shift_val.log" 2>&1
    done
  done
  # replay: the teacher's logits of the very `shape` view the student sees (8 views; the store's augment seed is the
  # student's seed, so seed 0 only)
  if [[ " $DIAG_SEEDS " == *" 0 "* ]]; then
    store="$OUT/stores/cv_teacher_resnet18_s0_replay_shape_v8_s0"
    if [ ! -f "$store/manifest.json" ]; then
      stamp "replay store: resnet18, 8 shape views per row, augment seed 0"
      nice -n "$NICE" stillroom softlabels export --teacher "$OUT/runs/cv_teacher_resnet18_s0" --index "$OUT/data" \
        --out "$store" --views 8 --augment shape --augment-seed 0
    fi
    stamp "diagnostics, seed 0: kd_r18_shape_replay"
    nice -n "$NICE" stillroom sweep "$CFG/recipe.yaml" --out "$OUT/recipe" --jobs 1 --variant kd_r18_shape_replay --seed 0
    run="$OUT/recipe/kd_r18_shape_replay/seed0"
    [ -f "$run/shift_val.json" ] || nice -n "$NICE" stillroom shift-val "$run" >> "$OUT/recipe/shift_val.log" 2>&1
  fi
  python - "$OUT" $DIAG_SEEDS <<'PY' | tee "$OUT/recipe/diagnostics.md"
import json, sys
from pathlib import Path
out, seeds = Path(sys.argv[1]), sys.argv[2:]
runs = [("kd_r18", "sweep", "silhouette", 24), ("kd_r18_shape", "recipe", "shape", 24),
        ("kd_r18_restyle", "recipe", "restyle", 24), ("kd_r18_e48", "recipe", "silhouette", 48),
        ("kd_r18_shape_e48", "recipe", "shape", 48), ("kd_r18_shape_replay", "recipe", "shape, replayed teacher", 24)]
print("| variant | seed | augment | epochs | best epoch | val top-1 % | test top-1 % | test macro-F1 | shift-val % | "
      "shift-val not in recipe % |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for s in seeds:
    for v, where, aug, ep in runs:
        run = out / where / v / f"seed{s}"
        if not (run / "shift_val.json").is_file():  # replay: seed 0 only
            continue
        m = json.loads((run / "metrics.json").read_text())
        sh = json.loads((run / "shift_val.json").read_text())["best"]
        best = json.loads((run / "state.json").read_text()).get("best", {}).get("epoch", "-")
        t = m["splits"]["test"]["best"]
        print(f"| {v} | {s} | {aug} | {ep} | {best} | {100 * sh['clean']['top1']:.2f} | {100 * t['top1']:.2f} | "
              f"{t['macro_f1']:.4f} | {100 * sh['mean']:.2f} | {100 * sh['held_out_mean']:.2f} |")
PY
fi
stamp "done"
