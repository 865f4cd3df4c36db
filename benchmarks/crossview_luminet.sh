#!/usr/bin/env bash
# Issue 14, cross-view split: does the block split's recipe (LumiNet on replayed views) close the gap between the
# student and the teacher ensemble on the unseen view? configs/crossview151/luminet_replay.yaml: LumiNet from the one
# restyle teacher, KD and LumiNet from the val-chosen three-teacher ensemble, 3 seeds each, 48 epochs, restyle, and
# the last at 96 and 192 epochs (a patient student); compared with kdr_replay (KD, one teacher) of
# crossview_kd_sources.sh. A 192-epoch student takes ~20 min at one thread.
#
#   bash benchmarks/crossview_luminet.sh     # OUT=artifacts/crossview151; needs crossview_kd_sources.sh's replay
#                                            # store and the teachers of crossview_151.sh / teacher_resnet18_restyle_s1
#
# Resumable: finished stores, runs and evaluations are skipped. LANE=a|b splits the student runs between two
# one-thread processes (seed-major order); LANE=all (default) runs everything then the summary.
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
CFG=configs/crossview151
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-lum_replay_r1 kd_replay_ens3 lum_replay_ens3 lum_replay_ens3_e96 lum_replay_ens3_e192}
LANE=${LANE:-all}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R="$OUT/luminet"
mkdir -p "$R"
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }

export_replay() {  # TEACHER_NAME: its replay store of 16 restyled views per row, augment seed 0
  local t=$1 store="$OUT/stores/$1_replay_restyle_v16_s0"
  [ -f "$OUT/runs/$t/metrics.json" ] || { echo "missing teacher $OUT/runs/$t" >&2; exit 1; }
  if [ ! -f "$store/manifest.json" ]; then
    stamp "replay store of $t"
    stillroom softlabels export --teacher "$OUT/runs/$t" --index "$OUT/data" --out "$store" \
      --views 16 --augment restyle --augment-seed 0
  fi
}
case $LANE in
  a) export_replay cv_teacher_resnet18_s0 ;;
  b) export_replay cv_teacher_resnet18_restyle_s1 ;;
  *) for t in cv_teacher_resnet18_restyle_s0 cv_teacher_resnet18_s0 cv_teacher_resnet18_restyle_s1; do
       export_replay "$t"; done ;;
esac
# wait for the other lane's store before any ensemble student
for t in cv_teacher_resnet18_restyle_s0 cv_teacher_resnet18_s0 cv_teacher_resnet18_restyle_s1; do
  while [ ! -f "$OUT/stores/${t}_replay_restyle_v16_s0/manifest.json" ]; do sleep 20; done
done

i=0
for s in $SEEDS; do
  for v in $VARIANTS; do
    i=$((i + 1))
    [ "$LANE" = a ] && [ $((i % 2)) -ne 1 ] && continue
    [ "$LANE" = b ] && [ $((i % 2)) -ne 0 ] && continue
    if [ ! -f "$R/$v/seed$s/metrics.json" ]; then
      stamp "$v seed $s"
      stillroom sweep "$CFG/luminet_replay.yaml" --out "$R" --jobs 1 --variant "$v" --seed "$s"
    fi
    [ -f "$R/$v/seed$s/shift_val.json" ] || stillroom shift-val "$R/$v/seed$s" >> "$R/shift_val.log" 2>&1
  done
done
[ "$LANE" = all ] || { stamp "lane $LANE done"; exit 0; }

stamp "summaries and comparisons"
specs=(kdr_replay:kd_sources); for v in $VARIANTS; do specs+=("$v:luminet"); done
python benchmarks/crossview_summary.py table "$OUT" "$R" luminet "${specs[@]}" \
  --teacher "$OUT/runs/cv_teacher_resnet18_restyle_s0"
for pair in "kdr_replay lum_replay_r1" "kdr_replay kd_replay_ens3" "kd_replay_ens3 lum_replay_ens3" \
            "lum_replay_r1 lum_replay_ens3" "lum_replay_ens3 lum_replay_ens3_e96" \
            "lum_replay_ens3_e96 lum_replay_ens3_e192"; do
  read -r a b <<< "$pair"
  for metric in test_top1 test_macro_f1 shift_mean val_top1; do
    stillroom compare "$R/luminet_summary.csv" --metric "$metric" --a "$a" --b "$b" \
      --json "$R/compare_${a}_vs_${b}_${metric}.json" > "$R/compare_${a}_vs_${b}_${metric}.txt" 2>&1 || true
  done
done
python benchmarks/crossview_summary.py compares "$R" | tee "$R/compare.md"
stamp "done"
