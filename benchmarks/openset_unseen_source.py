"""Every leave-one-source-out K+1 student against an OOD source that NO run saw (issue 16 items 3-4).

``benchmarks/openset_loso.sh`` holds one source out per run; the fused ladder signal was looked for on those
held-out test rows. A source built afterwards, which neither the sinks nor the choice of signal ever touched, is a
fresh check: per run ``OUT/runs/loso_<S>_s<seed>``, ID test rows of the run's merged index vs the test rows of
``--ood`` (same ID recipe: e.g. ``stillroom data build ood-chimera --kind blend --id-index ID``), held-out AUROC
and FPR@95TPR of the ladder's signals (``openset_loso_report.ladder_metrics``: sink, fused max logit + sink, fused
with KNN, fitted on clean ID val) and of the K+1 student's energy and KNN (bank: the ID train rows of the run's
K-class reference ``runs/kd_s<seed>``, as the LOSO report fits it).

    OUT=artifacts/openset_loso_patient; python benchmarks/openset_unseen_source.py $OUT --ood $OUT/ood_blend
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling report module
from openset_loso_report import ladder_metrics, posthoc_metrics  # noqa: E402

from stillroom.data.dataset import load_images  # noqa: E402
from stillroom.data.index import load_index  # noqa: E402
from stillroom.runs import Run  # noqa: E402

SIGNALS = ("sink", "fused_logits", "fused", "energy", "knn")


def run_row(run_dir: Path, ood_images: np.ndarray) -> dict:
    """``{signal: ood_metrics}`` of one K+1 run, its ID test rows vs ``ood_images``."""
    index = Run(run_dir).index()
    k = int(index.recipe["sink_class"])
    test = index.split_indices("test")
    id_images = np.asarray(load_images(index)[test[index.labels[test] < k]])
    out = ladder_metrics(run_dir, id_images, ood_images)
    # energy and KNN as the LOSO report computes them: the bank from the K-class reference's (ID-only) train rows
    kd_run = run_dir.parent / f"kd_{run_dir.name.rsplit('_', 1)[1]}"
    post = posthoc_metrics(run_dir, kd_run, id_images, ood_images, k)
    return {**out, "energy": post["energy"], "knn": post["knn"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="OUT of benchmarks/openset_loso.sh")
    ap.add_argument("--ood", type=Path, required=True, help="OOD dataset directory no run was trained on")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ood = load_index(args.ood)
    ood_images = np.asarray(load_images(ood)[ood.split_indices("test")])
    rows = {}
    for run_dir in sorted((args.out / "runs").glob("loso_*_s*")):
        if not (run_dir / "best.safetensors").is_file():
            continue
        rows[run_dir.name] = run_row(run_dir, ood_images)
        cells = ", ".join(f"{s} {rows[run_dir.name][s]['auroc']:.4f}" for s in SIGNALS)
        print(f"{run_dir.name}: {cells}", flush=True)
    name = args.ood.name
    (args.out / f"unseen_{name}.json").write_text(json.dumps({"ood": str(args.ood), "n_ood_test": len(ood_images),
                                                              "rows": rows}, indent=1))  # fmt: skip
    lines = [
        f"{args.out} vs {args.ood} ({len(ood_images)} test rows, never trained on): AUROC / FPR@95TPR",
        "",
        "| run | " + " | ".join(SIGNALS) + " |",
        "|---|" + "---:|" * len(SIGNALS),
    ]
    for run, r in rows.items():
        lines.append(
            f"| {run} | " + " | ".join(f"{r[s]['auroc']:.4f} / {r[s]['fpr_at_95_tpr']:.3f}" for s in SIGNALS) + " |"
        )
    if len(rows) > 1:
        cells = []
        for s in SIGNALS:
            a = [r[s]["auroc"] for r in rows.values()]
            cells.append(f"{statistics.mean(a):.4f} (min {min(a):.4f})")
        lines.append("| mean over runs | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / f"unseen_{name}.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
