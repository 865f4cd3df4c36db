"""Table of `benchmarks/style_openset.sh`'s files: per run x OOD set x split, the other style's ID top-1, the AUROC
and FPR@95TPR of the post-hoc scores (ID = the other style's images, positive), and the served ladder's acceptance
of ID and OOD images (fitted on clean val), against issue 16 item 5's bars (ID accepted >= 90%, AUROC >= 0.95).

    python benchmarks/style_openset_summary.py artifacts/s28/openset/*__*.json

``--arm LABEL=RUN[,RUN...]`` (repeatable) prints instead one row per arm, each figure the mean over its runs (seeds):
the ladder's acceptance of the other style and of each OOD set (val / test), and the AUROC of MSP and of RMD on test
per OOD set, e.g. ``--arm kd=kd_12x20_s0,kd_12x20_s1,kd_12x20_s2``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

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


def arm_rows(files: list[Path], arms: list[str]) -> list[str]:
    """The ``--arm`` table (module docstring): means over each arm's runs, which must each have every OOD set and
    split the others have (an arm missing one is an error naming it, not a mean over fewer runs)."""
    found: dict[tuple[str, str, str], dict] = {}
    for path in files:
        run, ood, split = path.stem.split("__")
        found[run, ood, split] = json.loads(path.read_text())
    oods = sorted({k[1] for k in found})
    out = [
        "| arm | runs | ladder: style accepted val / test % | "
        + " | ".join(f"{o} accepted val / test %" for o in oods)
        + " | MSP AUROC test: "
        + " / ".join(oods)
        + " | RMD AUROC test: "
        + " / ".join(oods)
        + " |",
        "|---|---:|---:|" + "---:|" * len(oods) + "---:|---:|",
    ]
    for spec in arms:
        label, _, names = spec.partition("=")
        runs = [r for r in names.split(",") if r]
        vals: dict[str, list[float]] = defaultdict(list)
        for run in runs:
            for ood in oods:
                for split in ("val", "test"):
                    m = found.get((run, ood, split))
                    if m is None:
                        raise SystemExit(f"--arm {label}: no file for run {run}, OOD set {ood}, split {split}")
                    lad = m["ladder"]["splits"][split]
                    vals[f"id_{split}"].append(lad["id"]["coverage"])  # the same style images for every OOD set
                    vals[f"{ood}_{split}"].append(lad["ood"]["acceptance"])
                    if split == "test":
                        auroc = m["ood"]["summary"]["best"]["auroc"]
                        vals[f"msp_{ood}"].append(auroc["msp"])
                        vals[f"rmd_{ood}"].append(auroc.get("rmd", float("nan")))
        pct = {k: f"{100 * np.mean(v):.1f}" for k, v in vals.items()}
        cells = [f"{pct['id_val']} / {pct['id_test']}"] + [f"{pct[o + '_val']} / {pct[o + '_test']}" for o in oods]
        cells.append(" / ".join(f"{np.mean(vals['msp_' + o]):.3f}" for o in oods))
        cells.append(" / ".join(f"{np.mean(vals['rmd_' + o]):.3f}" for o in oods))
        out.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--arm", action="append", default=[], help="LABEL=RUN[,RUN...]: one row of means per arm")
    args = ap.parse_args(argv)
    if args.arm:
        print("\n".join(arm_rows(args.files, args.arm)))
        return
    print(
        "| run | OOD set | split | n ID / OOD | ID top-1 % | AUROC maxlogit | AUROC energy | best score, AUROC | "
        "FPR@95 (best) | ladder: ID accepted % | ladder: OOD accepted % | bars met |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for p in sorted(args.files):
        print(row(p))


if __name__ == "__main__":
    main()
