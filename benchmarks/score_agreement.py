"""How much of the teacher's OOD score a student keeps (issue 16 item 3): Spearman rho between a reference run's
post-hoc score (the teacher's) and each student's, image by image, on the same ID and OOD test rows.

A student can only pass on the teacher's doubt about a near-OOD image if its score ranks images as the teacher's
does. Reads the per-image scores that ``stillroom evaluate RUN --ood-split test --ood-index OOD`` writes
(``RUN/ood_scores_test_best_vs_<OOD>-<hash>.npz``) for the reference and every run of each group, checks that the
rows are the same (the ``is_ood`` column and the row count), and prints rho over all rows, over the OOD rows and
over the ID rows: mean ± sd over each group's runs, one markdown table per source.

    python benchmarks/score_agreement.py --reference artifacts/s32/teacher_e32_eval --score maxlogit \\
        --group kd="artifacts/s32/fm/kd_s*" --group logit_mse="artifacts/s33/mse/runs/logit_mse_s?" \\
        --source blend --source chimera-native --source species
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def scores(run: str, source: str, score: str) -> tuple[np.ndarray, np.ndarray]:
    """(is_ood bool (N,), score (N,)) of ``run`` against the OOD set named ``source`` (test split, best weights)."""
    found = sorted(Path(run).glob(f"ood_scores_test_best_vs_ood_{source}-*.npz"))
    if len(found) != 1:
        sys.exit(f"{run}: expected one ood_scores_test_best_vs_ood_{source}-*.npz, found {len(found)}")
    with np.load(found[0]) as z:
        if score not in z.files:
            sys.exit(f"{found[0]}: no score {score!r} (has {', '.join(z.files)})")
        return z["is_ood"].astype(bool), np.asarray(z[score], dtype=np.float64)


def agreement(reference: str, runs: list[str], source: str, score: str) -> np.ndarray:
    """(len(runs), 3): rho over all rows, OOD rows, ID rows, of each run's score against the reference's."""
    ood, ref = scores(reference, source, score)
    out = []
    for run in runs:
        ood_r, s = scores(run, source, score)
        if ood_r.shape != ood.shape or (ood_r != ood).any():
            sys.exit(f"{run}: its {source} test rows are not the reference's ({reference})")
        out.append([spearmanr(ref[m], s[m])[0] for m in (np.ones_like(ood), ood, ~ood)])
    return np.asarray(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="the teacher's run directory (evaluated per source)")
    ap.add_argument("--group", action="append", required=True, help="NAME=GLOB of student run directories")
    ap.add_argument("--source", action="append", required=True, help="OOD set name (ood_<name> as evaluated)")
    ap.add_argument("--score", default="maxlogit", help="post-hoc score column (msp, maxlogit, energy, knn, ...)")
    args = ap.parse_args(argv)
    for source in args.source:
        print(f"\n**{args.score}: Spearman rho with {args.reference} on {source} test rows** (mean ± sd over runs)\n")
        print("| group | runs | all rows | OOD rows | ID rows |\n|---|---:|---:|---:|---:|")
        for spec in args.group:
            name, _, pattern = spec.partition("=")
            runs = sorted(glob.glob(pattern))
            if not runs:
                sys.exit(f"--group {spec}: no run matches {pattern!r}")
            a = agreement(args.reference, runs, source, args.score)
            sd = a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(3)
            cells = " | ".join(f"{a[:, j].mean():.3f} ± {sd[j]:.3f}" for j in range(3))
            print(f"| {name} | {len(runs)} | {cells} |")


if __name__ == "__main__":
    main()
