#!/usr/bin/env bash
# Issue 16 item 5, both sides of the reserved evaluation with data we may use: the ID species drawn by another
# artist (the box-icon style set, `stillroom data build style-icons`) must be accepted, OOD shapes of other styles
# (the OOD sets in OODS: emoji, game-icons, procedural creatures, ...) rejected. Each run is judged by its post-hoc
# scores (AUROC, FPR@95TPR of icons vs OOD: `stillroom evaluate RUN --index STYLE --ood-index OOD`) and by its served
# ladder, fitted on clean val (`--ladder`, fitted here when the run has none): the share of icons accepted, of OOD
# accepted. Bars (issue 16 item 5): >= 90% of the other style's ID images accepted, AUROC >= 0.95.
#
#   RUNS="artifacts/demo/runs/*" OODS="artifacts/ood/emoji64 artifacts/ood/game_icons64" OUT=artifacts/s28/openset \
#     bash benchmarks/style_openset.sh   # after a demo that left the icons out (`--train-style artwork=8`) and
#                                        # `stillroom data build ood-emoji --size 64 ...`
#   D=artifacts/s56/art_held; RUNS="$D/runs/*" DEMO=$D STYLE=$D/data/style_artwork_sprites64_1-151 OODS=... \
#     bash benchmarks/style_openset.sh   # after `stillroom demo --out $D --train-style icons=3`: the artwork held out
#
# One JSON per run x OOD set x split in OUT (the run's metrics_on_<style> file as written then); table: OUT/summary.md.
set -euo pipefail
OUT=${OUT:-artifacts/style_openset}
DEMO=${DEMO:-artifacts/demo}
INDEX=${INDEX:-$DEMO/data/sprites64_1-151}
STYLE=${STYLE:-$DEMO/data/style_icons_$(basename "$INDEX")}
RUNS=${RUNS:-$DEMO/runs/*}
OODS=${OODS:?OODS: OOD dataset directories (stillroom data build ood-emoji / ood-icons / ood-creatures)}
SPLITS=${SPLITS:-val test}
mkdir -p "$OUT"
[ -f "$STYLE/index.json" ] || stillroom data build style-icons --id-index "$INDEX" --out "$STYLE"
metrics=$(python -c "import sys
from stillroom.data.index import load_index
from stillroom.evaluate.runner import other_metrics_name
print(other_metrics_name(load_index(sys.argv[1])))" "$STYLE")  # RUN/<this>: the runs' figures on the style set
# STYLE must be a style the runs never trained on (the demo trains on every style by default: hold one out with
# `stillroom demo --train-style icons=3`, then STYLE=<its artwork set>); a trained style would read as "another artist"
python -c "import sys
from stillroom.data.index import load_index
from stillroom.data.transfer import extra_train_sources
from stillroom.runs import Run
style = load_index(sys.argv[1])
for run in sys.argv[2:]:
    index = load_index(Run(run).config.data.index)
    if style.content_hash in {e.get('content_hash') for e in extra_train_sources(index.recipe)}:
        sys.exit(f'style_openset: {run} trained on {sys.argv[1]} ({index.root}): not a held-out style; set STYLE')
" "$STYLE" $RUNS
for run in $RUNS; do
  [ -f "$run/ladder.json" ] || stillroom evaluate "$run" --split val --weights best --ladder > /dev/null
  for ood in $OODS; do for split in $SPLITS; do
    dest="$OUT/$(basename "$run")__$(basename "$ood")__$split.json"
    [ -f "$dest" ] && continue
    stillroom evaluate "$run" --index "$STYLE" --ood-index "$ood" --ood-split "$split" --split "$split" \
      --weights best --no-tune-odin > /dev/null
    cp "$run/$metrics" "$dest"
  done; done
done
python benchmarks/style_openset_summary.py "$OUT"/*__*.json | tee "$OUT/summary.md"
