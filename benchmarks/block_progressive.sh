#!/usr/bin/env bash
# Issue 14 item 6, `make demo` under 15 minutes: progressive resizing for the demo's teacher. The demo's resnet18
# teacher trains its first 6 of 12 epochs on views reduced to 32 px (configs/block151/teacher_resnet18_e12_prog32.yaml;
# a resnet18 step at 32 px costs ~0.43x one at 64 px here) instead of all 12 at 64 px. Prints a table of both
# teachers: training wall time, val and test top-1 of the best-val weights (a = the demo's own teacher, as `make demo`
# trained it on this machine).
#
#   bash benchmarks/block_progressive.sh     # artifacts/block151/progressive/teachers.md
#
# Needs `make demo`'s index and teacher. Resumable. The teacher trains alone on both threads: its wall time is the
# point.
set -euo pipefail
OUT=${OUT:-artifacts/block151}
INDEX=${INDEX:-artifacts/demo/data/sprites64_1-151}
DEMO_TEACHER=${DEMO_TEACHER:-artifacts/demo/runs/teacher_resnet18_s0}
[ -f "$INDEX/index.csv" ] && [ -f "$DEMO_TEACHER/metrics.json" ] || { echo "run make demo first" >&2; exit 1; }

T="$OUT/teachers/block_teacher_resnet18_e12_prog32_s0"
[ -f "$T/metrics.json" ] || stillroom train configs/block151/teacher_resnet18_e12_prog32.yaml --out "$T" --resume --quiet
mkdir -p "$OUT/progressive"
python - "$DEMO_TEACHER" "$T" <<'PY' | tee "$OUT/progressive/teachers.md"
import json, sys
from pathlib import Path
print("| teacher | epochs at 32 / 64 px | epoch s at 32 / 64 px (median) | train + validation s | val top-1 % | test top-1 % |")
print("|---|---|---|---:|---:|---:|")
for run in map(Path, sys.argv[1:]):
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    m = json.loads((run / "metrics.json").read_text())["splits"]
    low = sorted(r["train_seconds"] for r in log if r.get("train_size"))
    full = sorted(r["train_seconds"] for r in log if not r.get("train_size"))
    med = lambda v: f"{v[len(v) // 2]:.0f}" if v else "-"  # noqa: E731
    print(f"| {run.name} | {len(low)} / {len(full)} | {med(low)} / {med(full)} | "
          f"{sum(r['epoch_seconds'] for r in log):.0f} | {100 * m['val']['best']['top1']:.2f} | "
          f"{100 * m['test']['best']['top1']:.2f} |")
PY
