#!/usr/bin/env bash
# Issue 14 item 6, `make demo` under 15 minutes: progressive resizing for the demo's teacher. The demo's resnet18
# teacher trains its first 6 of 12 epochs on views reduced to 32 px (configs/block151/teacher_resnet18_e12_prog32.yaml;
# a resnet18 step at 32 px costs ~0.36x one at 64 px here, an epoch 0.44x) instead of all 12 at 64 px. Prints a
# table of both
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
python benchmarks/crossview_summary.py teachers "$DEMO_TEACHER" "$T" | tee "$OUT/progressive/teachers.md"
