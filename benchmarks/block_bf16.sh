#!/usr/bin/env bash
# Issue 14, the demo's wall time: the demo's one teacher (resnet18, 12 epochs, restyle, both threads) trained with
# bfloat16 autocast on the CPU (configs/block151/teacher_resnet18_e12_bf16.yaml, `amp: bf16`; AMX / AVX512-BF16
# hosts) against the float32 one of benchmarks/block_one_teacher.sh: teacher wall time and accuracy, and the demo's
# LumiNet student (20 epochs, 4 replayed views) of each, 3 seeds (lum_t12bf16x1_e20 vs lum_t12x1_e20 of
# configs/block151/patient.yaml), shift-val of every run, a table and `stillroom compare`; and the same teacher in
# float32 without channels-last (teacher_resnet18_e12_nchw.yaml: wall time and accuracy, no students).
#
#   bash benchmarks/block_bf16.sh   # OUT=artifacts/block151; needs make demo's index and block_one_teacher.sh's runs
#
# Resumable. The teacher trains alone with both threads (as in the demo); the students at one torch thread
# (OMP_NUM_THREADS=1), two copies side by side (LANE=a / LANE=b, then LANE=all for the summary).
set -euo pipefail
OUT=${OUT:-artifacts/block151}
INDEX=${INDEX:-artifacts/demo/data/sprites64_1-151}
SEEDS=${SEEDS:-0 1 2}
LANE=${LANE:-all}
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
[ -f "$INDEX/index.csv" ] || { echo "missing $INDEX: run make demo first" >&2; exit 1; }

T="$OUT/teachers/block_teacher_resnet18_e12_bf16_s0"
if [ "$LANE" = b ]; then  # lane a trains the teacher, exports its store, then measures its shift-val
  while [ ! -f "$T/shift_val.json" ]; do sleep 20; done
fi
if [ ! -f "$T/metrics.json" ]; then
  stamp "teacher $T"
  stillroom train configs/block151/teacher_resnet18_e12_bf16.yaml --out "$T" --resume --quiet
fi
# the same teacher in float32 without channels-last (a resnet18 step is as fast as with bfloat16 autocast on this
# CPU, benchmarks/bench_amp_step.py): wall time and accuracy only
T2="$OUT/teachers/block_teacher_resnet18_e12_nchw_s0"
if [ "$LANE" != b ] && [ ! -f "$T2/metrics.json" ]; then
  stamp "teacher $T2"
  stillroom train configs/block151/teacher_resnet18_e12_nchw.yaml --out "$T2" --resume --quiet
fi
S="$OUT/stores/block_teacher_resnet18_e12_bf16_s0_replay_restyle_v4_s0"
[ -f "$S/manifest.json" ] || stillroom softlabels export --teacher "$T" --index "$INDEX" --out "$S" \
  --views 4 --augment restyle --augment-seed 0
[ -f "$T/shift_val.json" ] || stillroom shift-val "$T" > /dev/null

export OMP_NUM_THREADS=1
i=0
SPECS="lum_t12x1_e20:patient lum_t12bf16x1_e20:patient"
for spec in $SPECS; do
  v=${spec%%:*}; where=${spec##*:}
  for s in $SEEDS; do
    run="$OUT/$where/$v/seed$s"
    [ -f "$run/metrics.json" ] && [ -f "$run/shift_val.json" ] && continue
    i=$((i + 1))
    [ "$LANE" = a ] && [ $((i % 2)) -ne 1 ] && continue
    [ "$LANE" = b ] && [ $((i % 2)) -ne 0 ] && continue
    if [ ! -f "$run/metrics.json" ]; then
      stamp "$v seed $s"
      stillroom sweep "configs/block151/$where.yaml" --out "$OUT/$where" --jobs 1 --variant "$v" --seed "$s"
    fi
    [ -f "$run/shift_val.json" ] || stillroom shift-val "$run" > /dev/null
  done
done
[ "$LANE" = all ] || { stamp "lane $LANE done"; exit 0; }

R="$OUT/bf16"
mkdir -p "$R"
# shellcheck disable=SC2086
python benchmarks/crossview_summary.py table "$OUT" "$R" bf16 $SPECS --teacher "$T"
a=lum_t12x1_e20; b=lum_t12bf16x1_e20
for metric in test_top1 test_macro_f1 shift_mean val_top1; do
  stillroom compare "$R/bf16_summary.csv" --metric "$metric" --a "$a" --b "$b" \
    --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1 || true
done
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
# the teachers: wall seconds of training + validation (log.jsonl), test and val top-1 of the best-val weights
python - "$OUT/teachers" > "$R/teachers.md" <<'PY'
import json, sys
from pathlib import Path
print("| teacher | amp (model.json) | channels-last | train + validation s | test top-1 % | val top-1 % |")
print("|---|---|---|---:|---:|---:|")
for name in ("block_teacher_resnet18_e12_s0", "block_teacher_resnet18_e12_bf16_s0", "block_teacher_resnet18_e12_nchw_s0"):
    run = Path(sys.argv[1]) / name
    if not (run / "metrics.json").is_file():
        continue
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    meta, cfg = json.loads((run / "model.json").read_text()), json.loads((run / "config.json").read_text())
    splits = json.loads((run / "metrics.json").read_text())["splits"]
    wall = sum(r["epoch_seconds"] for r in log)
    print(f"| {name} | {meta.get('amp', 'off')} | {cfg.get('channels_last', True)} | {wall:.0f} |"
          f" {100 * splits['test']['best']['top1']:.2f} | {100 * max(r.get('val_top1') or 0 for r in log):.2f} |")
PY
cat "$R/teachers.md"
stamp "done"
