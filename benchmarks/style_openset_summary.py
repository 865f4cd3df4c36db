"""Table of `benchmarks/style_openset.sh`'s files: per run x OOD set x split, the other style's ID top-1, the AUROC
and FPR@95TPR of the post-hoc scores (ID = the other style's images, positive), and the served ladder's acceptance
of ID and OOD images (fitted on clean val), against issue 16 item 5's bars (ID accepted >= 90%, AUROC >= 0.95).

    python benchmarks/style_openset_summary.py artifacts/s28/openset/*__*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BAR_ACCEPT, BAR_AUROC = 0.90, 0.95


def row(path: Path) -> str:
    run, ood, split = path.stem.split("__")
    m = json.loads(path.read_text())
    summ = m["ood"]["summary"]["best"]
    best = max(summ["auroc"], key=summ["auroc"].get)  # the best post-hoc score on this split, named
    lad = m["ladder"]["splits"][split]
    acc_id, acc_ood = lad["id"]["coverage"], lad["ood"]["acceptance"]
    ok = "yes" if acc_id >= BAR_ACCEPT and summ["auroc"][best] >= BAR_AUROC else "no"
    return (
        f"| {run} | {ood} | {split} | {summ['n_id']} / {summ['n_ood']} | {100 * summ['closed_set_top1']:.1f} | "
        f"{summ['auroc']['maxlogit']:.3f} | {summ['auroc']['energy']:.3f} | {best} {summ['auroc'][best]:.3f} | "
        f"{summ['fpr_at_95_tpr'][best]:.3f} | {100 * acc_id:.1f} | {100 * acc_ood:.1f} | {ok} |"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    print(
        "| run | OOD set | split | n ID / OOD | ID top-1 % | AUROC maxlogit | AUROC energy | best score, AUROC | "
        "FPR@95 (best) | ladder: ID accepted % | ladder: OOD accepted % | bars met |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for p in sorted(args.files):
        print(row(p))


if __name__ == "__main__":
    main()
