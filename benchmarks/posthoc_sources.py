"""Post-hoc OOD detection of K-class runs on every OOD source, no OOD row seen in training (issue 16 items 3-4).

For each run (a K-class model on the species index) and each OOD source index (``stillroom data build ood-icons`` /
``ood-chimera`` against the same ID index, as ``benchmarks/openset_loso.sh`` builds them): energy, KNN on the pooled
penultimate features (fitted on the run's clean ID train rows) and ASH-S (``evaluate.feature_ood``, pytorch-ood),
ID test rows vs the source's test rows, through ``openset_loso_report.posthoc_metrics``, the function behind the
leave-one-source-out report's post-hoc table. For a model that never saw an OOD row every source is "held out",
so each row reads against issue 16 item 3's bars (AUROC >= 0.95, FPR@95TPR <= 0.20) and against the sink.

The question it answers: does a better-trained K-class model (more teacher and student epochs) give a better KNN
detector? The LOSO KD students (16 epochs) reached KNN AUROC 0.86 / 0.87 / 0.94 (emoji / chimera / game-icons).

    python benchmarks/posthoc_sources.py --ood emoji=artifacts/posthoc/ood_emoji --ood chimera=... \
        --run artifacts/block151/patient/lum_t32x1_e96/seed1 --md artifacts/posthoc/posthoc.md

Run by ``benchmarks/posthoc_sources.sh``. ``stillroom evaluate RUN --ood-split test --ood-index SOURCE`` gives the
same figures (test) and keeps each source's in ``RUN/ood_metrics_vs_<source>.json`` (``stillroom ood-table RUNS
--ood-index SOURCE`` tabulates them); this script writes nothing into the runs and fits every KNN on one index.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openset_loso_report as _loso  # a sibling script: `python benchmarks/...` puts benchmarks/ on sys.path
import torch

from stillroom._io import atomic_write_json
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.runs import Run

TARGETS = {"auroc": 0.95, "fpr95": 0.20}  # issue 16 item 3, as in openset_loso_report.TARGETS
SCORES = ("energy", "knn", "ash")


def run_rows(run_dir: Path, sources: dict[str, Path]) -> list[dict]:
    """One row per OOD source for ``run_dir``'s best weights."""
    run = Run(run_dir)
    index = run.index()
    k = index.num_classes
    test = index.split_indices("test")
    id_images = np.asarray(load_images(index)[test])
    top1 = float((_loso._logits(run, id_images).argmax(1) == index.labels[test]).mean())
    rows = []
    for name, ood_dir in sources.items():
        ood = load_index(ood_dir)
        ood_test = ood.split_indices("test")
        if not len(ood_test):
            raise SystemExit(f"{ood_dir}: no test rows")
        ood_images = np.asarray(load_images(ood)[ood_test])
        if ood_images.shape[1:] != id_images.shape[1:]:
            raise SystemExit(f"{ood_dir}: images {ood_images.shape[1:]} vs the ID index's {id_images.shape[1:]}")
        met = _loso.posthoc_metrics(run_dir, run_dir, id_images, ood_images, k)
        rows.append(
            {
                "run": str(run_dir),
                "source": name,
                "id_top1": top1,
                "n_id_test": len(id_images),
                "n_ood_test": len(ood_images),
                **{f"{s}_auroc": met[s]["auroc"] for s in SCORES},
                **{f"{s}_fpr95": met[s]["fpr_at_95_tpr"] for s in SCORES},
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    out = (
        "| run | ID test top-1 | OOD source (test rows) | energy AUROC | KNN AUROC | ASH-S AUROC | KNN FPR@95TPR "
        "| KNN meets AUROC / FPR |\n|---|---:|---|---:|---:|---:|---:|---|\n"
    )
    for r in rows:
        meets = f"{'yes' if r['knn_auroc'] >= TARGETS['auroc'] else 'no'} / "
        meets += "yes" if r["knn_fpr95"] <= TARGETS["fpr95"] else "no"
        out += (
            f"| {r['run']} | {r['id_top1']:.2%} | {r['source']} ({r['n_ood_test']}) | {r['energy_auroc']:.4f} | "
            f"{r['knn_auroc']:.4f} | {r['ash_auroc']:.4f} | {r['knn_fpr95']:.3f} | {meets} |\n"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", required=True, help="K-class run directory (repeatable)")
    ap.add_argument("--ood", action="append", required=True, help="NAME=DIR of an OOD source index (repeatable)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--md", type=Path, help="write the markdown table here")
    args = ap.parse_args()
    sources = {}
    for spec in args.ood:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--ood {spec!r}: expected NAME=DIR")
        sources[name] = Path(path)
    torch.set_num_threads(1)
    rows = [r for run in args.run for r in run_rows(run, sources)]
    md = markdown(rows)
    if args.json:
        atomic_write_json(args.json, {"targets": TARGETS, "rows": rows})
    if args.md:
        args.md.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
