#!/usr/bin/env bash
# Issue 14 item 3: what augmentation replay (exact augmented KD, issue 7) is for. Cross-view split of species 1-151
# at 64 px, mobilenet_v3_small students trained 48 epochs with the `restyle` augmentation, KD (a = 0.5, T = 4) from a
# resnet18 teacher that was itself trained with `restyle` (configs/crossview151/teacher_resnet18_restyle.yaml), with
# the teacher's logits taken from (configs/crossview151/kd_sources.yaml):
#   kdr_cached  a store of the clean images' logits (what the student sees and the target disagree)
#   kdr_replay  a replay store of V = 16 restyled views per row (one export, augment seed 0, used by every seed)
#   kdr_online  the teacher run on every augmented batch
# plus kdr_silhouette (same teacher and store, silhouette augmentation) for the effect of restyle on the student.
# 3 seeds each, judged on test top-1 / macro-F1 and shift-val (val only); the cost of each source is the store
# export wall time plus the students' training wall time (sum of epoch_seconds), measured on this box.
#
#   bash benchmarks/crossview_kd_sources.sh     # OUT=artifacts/crossview151; needs crossview_151.sh's data
#
# Resumable: finished runs, stores and evaluations are skipped. One torch thread, one job at a time (shared box);
# wall times are therefore comparable only within one run of this script on an otherwise idle box: the load
# average at each step is logged beside them.
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
CFG=configs/crossview151
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-kdr_cached kdr_replay kdr_online kdr_silhouette}
VIEWS=${VIEWS:-16}
NICE=${NICE:-5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R="$OUT/kd_sources"
TEACHER="$OUT/runs/cv_teacher_resnet18_restyle_s0"
STORE="$OUT/stores/cv_teacher_resnet18_restyle_s0"
REPLAY="${STORE}_replay_restyle_v${VIEWS}_s0"
mkdir -p "$R"
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
timed() {  # NAME CMD...: run CMD, append "NAME wall_seconds" to $R/costs.tsv
  local name=$1 t0 t1; shift
  t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N)
  printf '%s\t%.1f\t%s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(cut -d' ' -f1 /proc/loadavg)" >> "$R/costs.tsv"
}
[ -f "$OUT/data/index.json" ] || { echo "missing $OUT/data: run benchmarks/crossview_151.sh first" >&2; exit 1; }

if [ ! -f "$TEACHER/metrics.json" ]; then
  stamp "teacher: resnet18, augment restyle, 32 epochs"
  timed teacher nice -n "$NICE" stillroom train "$CFG/teacher_resnet18_restyle.yaml" --out "$TEACHER" --resume --quiet
fi
if [ ! -f "$STORE/manifest.json" ]; then
  stamp "cached store (clean images)"
  timed store_cached nice -n "$NICE" stillroom softlabels export --teacher "$TEACHER" --index "$OUT/data" --out "$STORE"
fi
if [ ! -f "$REPLAY/manifest.json" ]; then
  stamp "replay store: $VIEWS restyled views per row, augment seed 0"
  timed store_replay nice -n "$NICE" stillroom softlabels export --teacher "$TEACHER" --index "$OUT/data" --out "$REPLAY" \
    --views "$VIEWS" --augment restyle --augment-seed 0
fi
[ -f "$TEACHER/shift_val.json" ] || nice -n "$NICE" stillroom shift-val "$TEACHER" >> "$R/shift_val.log" 2>&1

# seed by seed, so a partial run already pairs every source
for s in $SEEDS; do
  for v in $VARIANTS; do
    if [ ! -f "$R/$v/seed$s/metrics.json" ]; then
      stamp "$v seed $s"
      nice -n "$NICE" stillroom sweep "$CFG/kd_sources.yaml" --out "$R" --jobs 1 --variant "$v" --seed "$s"
    fi
    [ -f "$R/$v/seed$s/shift_val.json" ] || nice -n "$NICE" stillroom shift-val "$R/$v/seed$s" >> "$R/shift_val.log" 2>&1
  done
done

stamp "summaries and comparisons"
specs=(); for v in $VARIANTS; do specs+=("$v:kd_sources"); done
python benchmarks/crossview_summary.py table "$OUT" "$R" kd_sources kd_r18_e48:recipe "${specs[@]}" --teacher "$TEACHER"
for pair in "kdr_cached kdr_replay" "kdr_online kdr_replay" "kdr_cached kdr_online" "kdr_silhouette kdr_cached" \
            "kd_r18_e48 kdr_silhouette"; do
  read -r a b <<< "$pair"
  for metric in test_top1 test_macro_f1 shift_mean val_top1; do
    stillroom compare "$R/kd_sources_summary.csv" --metric "$metric" --a "$a" --b "$b" \
      --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1 || true
  done
done
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
echo "costs (name, wall s, 1-min load at the end):"; cat "$R/costs.tsv"
stamp "done"
