#!/usr/bin/env bash
# Post-hoc OOD detection (energy, KNN, ASH-S) of K-class runs of the species 1-151 block index on each OOD source of
# the leave-one-source-out benchmark (issue 16 items 3-4): the sources are built against the same ID index with the
# same commands as benchmarks/openset_loso.sh, then benchmarks/posthoc_sources.py scores ID test vs each source's
# test rows. No run here saw an OOD row, so every source is held out.
#
#   bash benchmarks/posthoc_sources.sh     # OUT=artifacts/posthoc_block; RUNS: the patient block students and teacher
#
# RUNS: run directories (default: every finished run of benchmarks/block_patient.sh's lum_t32x1_e96 and its teacher).
set -euo pipefail
OUT=${OUT:-artifacts/posthoc_block}
INDEX=${INDEX:-artifacts/demo/data/sprites64_1-151}  # the demo's block index = openset151/id (same build command)
SOURCES=${SOURCES:-emoji chimera game-icons}
PER_SPLIT=${PER_SPLIT:-600}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$INDEX/index.json" ] || { echo "missing $INDEX: run make demo first" >&2; exit 1; }
mkdir -p "$OUT"
oods=()
for s in $SOURCES; do
  d="$OUT/ood_$s"
  if [ ! -f "$d/index.json" ]; then
    case "$s" in
      # chimera: cut from the ID images and rendered again, as every table of BENCHMARKS measured it;
      # chimera-native: cut from the sprites' own frames and rendered once (issue 16 item 1, the library's default)
      chimera) stillroom data build ood-chimera --parents rendered --id-index "$INDEX" --out "$d" --per-split "$PER_SPLIT" ;;
      chimera-native) stillroom data build ood-chimera --parents native --id-index "$INDEX" --out "$d" --per-split "$PER_SPLIT" ;;
      *) stillroom data build ood-icons --source "$s" --size 64 --id-index "$INDEX" --out "$d" ;;
    esac
  fi
  oods+=(--ood "$s=$d")
done
if [ -z "${RUNS:-}" ]; then
  RUNS=$(ls -d artifacts/block151/teachers/block_teacher_resnet18_e32_s*/ \
    artifacts/block151/patient/lum_t32x1_e96/seed*/ 2>/dev/null | sed 's:/$::' || true)
fi
runs=()
for r in $RUNS; do [ -f "$r/metrics.json" ] && runs+=(--run "$r"); done
[ ${#runs[@]} -gt 0 ] || { echo "no finished run among: $RUNS" >&2; exit 1; }
python benchmarks/posthoc_sources.py "${runs[@]}" "${oods[@]}" --json "$OUT/posthoc.json" --md "$OUT/posthoc.md"
