#!/usr/bin/env bash
# Style proxies (issue 16 item 5) on the K+1 students of the leave-one-source-out run (benchmarks/openset_loso.sh),
# with the OOD side taken from the source each student never saw. Per held-out source S and seed:
#   1. the run's files are copied to $W/loso_<S>_s<seed> (style-proxy writes style_proxy.json there, not into the
#      benchmark's run directory);
#   2. `auto` is fitted on the run's merged index, i.e. ID val against the val sink rows of the OTHER sources, and its
#      choice and every candidate's val AUROC are written to $W/loso_<S>_s<seed>/auto_choice.json (S is not read);
#   3. `stillroom style-proxy` on the test split, ID rows from the plain ID index ($ID) and OOD rows from S's own test
#      rows ($OUT/ood_<S>), for each signal of $SIGNALS (thresholds placed on clean ID val only, so no OOD row of S
#      enters a fit; auto is not run on S: it would weigh signals on S's val rows).
# EXPORT=1: first `stillroom export` the copy (fp32 ONNX with model_features.onnx, no ladder), so that the
# knn signal, and knn as a part of the fused signal, can be served and weighed by auto (without it fused is max logit
# and sink only). An auto_choice.json written before the export is fitted again.
# Resumable: a step is skipped when its output exists. Then:
#   python benchmarks/style_proxy.py $W/loso_* --split test
#
#   OUT=artifacts/openset_loso_patient ID=artifacts/demo/data/sprites64_1-151 SEEDS="1 2" \
#   W=artifacts/style_runs/exported_kp1 bash benchmarks/style_proxy_loso.sh
#   ... SEEDS="0 1 2" SIGNALS="fused" EXPORT=1 bash benchmarks/style_proxy_loso.sh   # the fused signal with knn
set -euo pipefail
OUT=${OUT:-artifacts/openset_loso_patient}
ID=${ID:-artifacts/demo/data/sprites64_1-151}
W=${W:-artifacts/style_runs/exported_kp1}
SOURCES=${SOURCES:-emoji chimera game-icons}
SEEDS=${SEEDS:-1 2}
SIGNALS=${SIGNALS:-maxlogit sink}
INPUT=${INPUT:-dataset}
EXPORT=${EXPORT:-0}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
for seed in $SEEDS; do
  for src in $SOURCES; do
    run=$OUT/runs/loso_${src}_s$seed
    [ -f "$run/best.safetensors" ] || { stamp "skip $run: not trained"; continue; }
    dst=$W/loso_${src}_s$seed
    if [ ! -f "$dst/best.safetensors" ]; then
      mkdir -p "$dst.tmp"
      for f in model.json config.json best.safetensors final.safetensors calibration.json; do
        [ -f "$run/$f" ] && cp "$run/$f" "$dst.tmp/"
      done
      rm -rf "$dst"; mv "$dst.tmp" "$dst"
    fi
    if [ "$EXPORT" = 1 ] && [ ! -f "$dst/export/export.json" ]; then
      stamp "$src seed $seed: export (fp32 and features model)"
      stillroom export "$dst" --no-ladder --no-backends --no-dynamic > "$dst/export.log"
      rm -f "$dst/auto_choice.json"  # auto weighs knn and fused with knn now
    fi
    if [ ! -f "$dst/auto_choice.json" ]; then
      stamp "$src seed $seed: auto on the seen sources' val rows"
      python - "$dst" <<'EOF'
import json, sys
from pathlib import Path
from stillroom._io import atomic_write_json
from stillroom.deploy.run_ladder import fit_run_ladder

run = Path(sys.argv[1])
lad = fit_run_ladder(run, signal="auto", save=False)
sel = lad.fit_summary_["signal"]
atomic_write_json(run / "auto_choice.json", {"chosen": lad.signal_, "val_auroc": sel.get("val_auroc"),
                                             "val_fpr_at_95_tpr": sel.get("val_fpr_at_95_tpr"),
                                             "reason": sel.get("reason")})
print(json.dumps({"chosen": lad.signal_, "val_auroc": sel.get("val_auroc")}))
EOF
    fi
    for sig in $SIGNALS; do
      if python -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if 'test/$sig/$INPUT/best' in d else 1)" \
          "$dst/style_proxy.json" 2> /dev/null; then continue; fi
      stamp "$src seed $seed: style-proxy, signal $sig"
      stillroom style-proxy "$dst" --index "$ID" --ood-index "$OUT/ood_$src" --ladder-signal "$sig" --split test \
        --input "$INPUT" > "$dst/style_proxy_${sig}_$INPUT.log"
    done
  done
done
stamp "done: python benchmarks/style_proxy.py $W/loso_* --split test"
