#!/usr/bin/env bash
# Issue 14, cross-view: the patient LumiNet student (192 epochs, replayed views) distilled from the two 160-epoch
# restyle teachers (configs/crossview151/luminet_e160pair.yaml), 4 seeds, then the table beside the earlier patient
# student of crossview_luminet.sh when its runs are present. Needs the teachers of
# configs/crossview151/teacher_resnet18_restyle_e160_s{5,6}.yaml (BENCHMARKS "Patient students and longer-trained
# teachers"). Measured with two one-thread lanes side by side: replay export ~8 min per teacher, ~39 min per student.
#
#   LANE=a bash benchmarks/crossview_patient_pair.sh & LANE=b bash benchmarks/crossview_patient_pair.sh; wait
#   bash benchmarks/crossview_patient_pair.sh          # LANE=all (default): everything left, then the summary
#
# Resumable: finished stores, runs and evaluations are skipped. LANE=a|b: one teacher's store each, then alternate
# seeds, one thread each.
set -euo pipefail
OUT=${OUT:-artifacts/crossview151}
SEEDS=${SEEDS:-0 1 2 3}
LANE=${LANE:-all}
V=lum_replay_e160pair_e192
TEACHERS=(cv_teacher_resnet18_restyle_e160_s5 cv_teacher_resnet18_restyle_e160_s6)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R="$OUT/luminet"
mkdir -p "$R"
stamp() { echo "[$(date -u +%H:%M:%S)] $* (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
store_of() { echo "$OUT/stores/$1_replay_restyle_v16_s0"; }

i=0
for t in "${TEACHERS[@]}"; do
  i=$((i + 1))
  { [ "$LANE" = a ] && [ $i -ne 1 ]; } || { [ "$LANE" = b ] && [ $i -ne 2 ]; } && continue
  [ -f "$OUT/runs/$t/metrics.json" ] || { echo "missing teacher $OUT/runs/$t" >&2; exit 1; }
  [ -f "$(store_of "$t")/manifest.json" ] && continue
  stamp "replay store of $t"
  stillroom softlabels export --teacher "$OUT/runs/$t" --index "$OUT/data" --out "$(store_of "$t")" \
    --views 16 --augment restyle --augment-seed 0
done
for t in "${TEACHERS[@]}"; do  # the other lane's store
  while [ ! -f "$(store_of "$t")/manifest.json" ]; do sleep 20; done
done

i=0
for s in $SEEDS; do
  i=$((i + 1))
  { [ "$LANE" = a ] && [ $((i % 2)) -ne 1 ]; } || { [ "$LANE" = b ] && [ $((i % 2)) -ne 0 ]; } && continue
  if [ ! -f "$R/$V/seed$s/metrics.json" ]; then
    stamp "$V seed $s"
    stillroom sweep configs/crossview151/luminet_e160pair.yaml --out "$R" --jobs 1 --variant "$V" --seed "$s"
  fi
  [ -f "$R/$V/seed$s/shift_val.json" ] || stillroom shift-val "$R/$V/seed$s" >> "$R/shift_val.log" 2>&1
done
[ "$LANE" = all ] || { stamp "lane $LANE done"; exit 0; }

stamp "summary"
[ -f "$OUT/runs/${TEACHERS[0]}/shift_val.json" ] || stillroom shift-val "$OUT/runs/${TEACHERS[0]}" >> "$R/shift_val.log" 2>&1
specs=("$V:luminet")
[ -d "$R/lum_replay_ens3_e192" ] && specs=("lum_replay_ens3_e192:luminet" "${specs[@]}")
python benchmarks/crossview_summary.py table "$OUT" "$R" e160pair "${specs[@]}" \
  --teacher "$OUT/runs/${TEACHERS[0]}"
stamp "done"
