#!/usr/bin/env bash
# Issue 14 item 6, `make demo` under 15 minutes: what do fewer epochs cost the demo's LumiNet student? 16 student
# epochs instead of 20 on the demo's 12-epoch bfloat16 teacher (lum_t12bf16x1_e16), and on the same teacher cut to
# 10 epochs (configs/block151/teacher_resnet18_e10_bf16.yaml; lum_t10bf16x1_e16), 3 seeds each, against the demo's
# recipe (lum_t12bf16x1_e20 of benchmarks/block_bf16.sh): a table, shift-val of every run, `stillroom compare`.
#
#   LANE=a bash benchmarks/block_budget.sh & LANE=b bash benchmarks/block_budget.sh; wait; bash benchmarks/block_budget.sh
#
# Needs make demo's index and block_bf16.sh's runs. Resumable. Everything at one torch thread (OMP_NUM_THREADS=1),
# two lanes side by side: lane a trains the 10-epoch teacher, exports its 4-view replay store and trains
# lum_t10bf16x1_e16 seeds 0 and 1; lane b trains lum_t12bf16x1_e16 (its store exists), then lum_t10bf16x1_e16 seed 2.
set -euo pipefail
OUT=${OUT:-artifacts/block151}
INDEX=${INDEX:-artifacts/demo/data/sprites64_1-151}
LANE=${LANE:-all}
export OMP_NUM_THREADS=1
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
[ -f "$INDEX/index.csv" ] || { echo "missing $INDEX: run make demo first" >&2; exit 1; }

T="$OUT/teachers/block_teacher_resnet18_e10_bf16_s0"
S="$OUT/stores/block_teacher_resnet18_e10_bf16_s0_replay_restyle_v4_s0"
student() {  # variant seed
  local run="$OUT/patient/$1/seed$2"
  if [ ! -f "$run/metrics.json" ]; then
    stamp "$1 seed $2"
    stillroom sweep configs/block151/patient.yaml --out "$OUT/patient" --jobs 1 --variant "$1" --seed "$2"
  fi
  [ -f "$run/shift_val.json" ] || stillroom shift-val "$run" > /dev/null
}
if [ "$LANE" = a ]; then
  if [ ! -f "$T/metrics.json" ]; then
    stamp "teacher $T"
    stillroom train configs/block151/teacher_resnet18_e10_bf16.yaml --out "$T" --resume --quiet
  fi
  [ -f "$S/manifest.json" ] || stillroom softlabels export --teacher "$T" --index "$INDEX" --out "$S" \
    --views 4 --augment restyle --augment-seed 0
  [ -f "$T/shift_val.json" ] || stillroom shift-val "$T" > /dev/null
  student lum_t10bf16x1_e16 0
  student lum_t10bf16x1_e16 1
  stamp "lane a done"; exit 0
fi
if [ "$LANE" = b ]; then
  for s in 0 1 2; do student lum_t12bf16x1_e16 "$s"; done
  while [ ! -f "$T/shift_val.json" ]; do sleep 20; done  # lane a's store is complete
  student lum_t10bf16x1_e16 2
  stamp "lane b done"; exit 0
fi

R="$OUT/budget"
mkdir -p "$R"
SPECS="lum_t12bf16x1_e20:patient lum_t12bf16x1_e16:patient lum_t10bf16x1_e16:patient"
# shellcheck disable=SC2086
python benchmarks/crossview_summary.py table "$OUT" "$R" budget $SPECS --teacher "$T"
a=lum_t12bf16x1_e20
for b in lum_t12bf16x1_e16 lum_t10bf16x1_e16; do
  for metric in test_top1 test_macro_f1 shift_mean val_top1; do
    stillroom compare "$R/budget_summary.csv" --metric "$metric" --a "$a" --b "$b" \
      --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1 || true
  done
done
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
stamp "done"
