#!/usr/bin/env bash
# Issue 14 items 1 and 4: which teachers, alone or averaged, recognize the same species drawn by another artist?
# Every teacher run given in RUNS is run once over the box-icon style set (`stillroom data build style-icons`) and
# over the ID index (un-augmented logits, `stillroom softlabels export`, best weights), and every subset of up to
# MAX teachers is scored as the mean of its members' softmax (the target the fused KD losses distil) by
# benchmarks/teacher_ensembles.py: on the style set (val = odd national ids selects, test = even ids reports) and
# on the ID index's own val / test. Results: OUT/ensembles_style.md and OUT/ensembles_id.md.
#
#   RUNS="artifacts/demo/runs/teacher_resnet18_s0 artifacts/s28/t_*_s0" OUT=artifacts/s28 \
#     bash benchmarks/style_ensembles.sh   # after make demo and style_augment.sh with CFG=<the demo teacher config>
#
# Resumable (exported stores are kept and reused).
set -euo pipefail
OUT=${OUT:-artifacts/style_ensembles}
DEMO=${DEMO:-artifacts/demo}
INDEX=${INDEX:-$DEMO/data/sprites64_1-151}
STYLE=${STYLE:-$DEMO/data/style_icons_$(basename "$INDEX")}
RUNS=${RUNS:?RUNS: the teacher run directories (globs allowed)}
MAX=${MAX:-4}
[ -f "$STYLE/index.json" ] || stillroom data build style-icons --id-index "$INDEX" --out "$STYLE"
style=(); own=()
for run in $RUNS; do
  name=$(basename "$run")
  for pair in "$STYLE:style_stores" "$INDEX:id_stores"; do
    store="$OUT/${pair#*:}/$name"
    [ -f "$store/manifest.json" ] || stillroom softlabels export --teacher "$run" --index "${pair%%:*}" --out "$store" \
      > /dev/null
  done
  style+=("$OUT/style_stores/$name"); own+=("$OUT/id_stores/$name")
done
python benchmarks/teacher_ensembles.py --index "$STYLE" --max-size "$MAX" "${style[@]}" --out "$OUT/ensembles_style.md"
python benchmarks/teacher_ensembles.py --index "$INDEX" --max-size "$MAX" "${own[@]}" --out "$OUT/ensembles_id.md"
