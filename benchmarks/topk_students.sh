#!/usr/bin/env bash
# Top-k soft-label stores: effect on student accuracy (issue 7). The same KD student (mobilenet_v3_small, kd_weight
# 0.5, T 4, 24 epochs) from one resnet18 teacher's full float32 store and from top-k stores (k = 5, 20: the k largest
# logits + the rest's log-sum-exp) on species 1-151 at 64 px, block split, seeds 0, 1 and 2. Needs the teacher and ID
# index of benchmarks/openset_151.sh. Resumable; two runs side by side with one thread each.
#
#   bash benchmarks/topk_students.sh        # then: python benchmarks/seed000_table.py artifacts/topk151/runs
set -euo pipefail
SRC=${SRC:-artifacts/openset151}
OUT=${OUT:-artifacts/topk151}
TEACHER=$SRC/runs/os_teacher_resnet18_s0
KS=${KS:-"5 20"}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-24}
mkdir -p "$OUT/runs" "$OUT/stores"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -f "$OUT/stores/full/manifest.json" ] || \
  stillroom softlabels export --teacher "$TEACHER" --index "$SRC/id" --out "$OUT/stores/full" > /dev/null
for k in $KS; do
  [ -f "$OUT/stores/top$k/manifest.json" ] || \
    stillroom softlabels export --teacher "$TEACHER" --index "$SRC/id" --out "$OUT/stores/top$k" --topk "$k" > /dev/null
done
train() {  # train NAME STORE SEED
  local run="$OUT/runs/$1"
  [ -f "$run/metrics.json" ] && return 0
  stillroom train configs/student_kd.yaml --out "$run" --resume --quiet --set name="$1" --set seed="$3" \
    --set data.index="$SRC/id" --set "teachers.cached=[$2]" --set schedule.epochs="$EPOCHS" --set eval_every=4 \
    > "$run.stdout.txt" 2>&1
}
jobs=()
for s in $SEEDS; do
  jobs+=("kd_full_s$s $OUT/stores/full $s")
  for k in $KS; do jobs+=("kd_top${k}_s$s $OUT/stores/top$k $s"); done
done
for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  # shellcheck disable=SC2086
  train ${jobs[$i]} &
  [ $((i + 1)) -lt ${#jobs[@]} ] && train ${jobs[$((i + 1))]} &
  wait
done
python3 benchmarks/seed000_table.py "$OUT/runs" --out "$OUT/table.md"
# one CSV of the per-seed test metrics, then `stillroom compare` of each top-k store against the full one
python - "$OUT" <<'PY'
import csv, json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for run in sorted((out / "runs").glob("kd_*_s*")):
    if not (run / "metrics.json").is_file():
        continue
    variant, seed = re.fullmatch(r"(kd_\w+?)_s(\d+)", run.name).groups()
    rep = json.loads((run / "metrics.json").read_text())["splits"]["test"]["best"]
    rows.append({"variant": variant, "seed": seed, "run_dir": str(run), "test_top1": rep["top1"],
                 "test_top5": rep["top5"], "test_macro_f1": rep["macro_f1"], "test_nll": rep["nll"]})
with open(out / "summary.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
print(f"wrote {out / 'summary.csv'}: {len(rows)} runs")
PY
for k in $KS; do
  for m in top1 macro_f1; do
    stillroom compare "$OUT/summary.csv" --metric "$m" --a kd_full --b "kd_top$k" \
      --json "$OUT/compare_full_vs_top${k}_$m.json" 2>&1 | tee "$OUT/compare_full_vs_top${k}_$m.txt"
  done
done
