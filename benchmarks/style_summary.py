"""Runs side by side on their own split and on a style set (`data build style-icons`): best-weights top-1 on the
ID val and test splits and on the style set's val (selects) and test (reports) splits, per run and per variant
(mean ± sd over seeds), with the outline-rewrite proxy (``shift_val.json`` mean) beside them; and Spearman rho over
runs of ID val and of shift-val against style val: which in-domain signal ranks runs as another artist's drawings
do. A variant is the run directory's name without its ``_s<seed>`` suffix.

    python benchmarks/style_summary.py "artifacts/style_augment/scr_*" --style artifacts/style_icons64 \
        --csv artifacts/style_augment/results_summary.csv
    stillroom compare artifacts/style_augment --metric style_val_top1 --a scr_restyle --b scr_deform

``--csv`` writes one row per run (variant, seed, id_val_top1, id_test_top1, style_val_top1, style_test_top1, as
fractions) in the layout ``stillroom compare`` reads.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

COLUMNS = ("ID val", "ID test", "style val", "style test", "shift-val mean")
CSV_COLUMNS = ("id_val_top1", "id_test_top1", "style_val_top1", "style_test_top1", "shift_val_mean")


def run_row(run: Path, style: str) -> list[float] | None:
    own = run / "metrics.json"
    theirs = sorted(run.glob(f"metrics_on_{style}-*.json"))
    if not own.is_file() or not theirs:
        return None
    m, o = json.loads(own.read_text()), json.loads(theirs[-1].read_text())
    shift = run / "shift_val.json"  # `stillroom shift-val RUN`: the outline-rewrite proxy on ID val (NaN if absent)
    mean = json.loads(shift.read_text())["best"]["mean"] if shift.is_file() else float("nan")
    try:
        row = [100 * d["splits"][s]["best"]["top1"] for d, s in ((m, "val"), (m, "test"), (o, "val"), (o, "test"))]
    except KeyError:
        return None
    return [*row, 100 * mean]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories or glob patterns")
    ap.add_argument("--style", default="artifacts/style_icons64", help="the style set (its directory name is used)")
    ap.add_argument("--csv", help="write per-run rows here for `stillroom compare`")
    args = ap.parse_args(argv)
    style = Path(args.style).name
    paths = sorted({Path(p) for pat in args.runs for p in glob.glob(pat) if Path(p).is_dir()})
    per: dict[str, list[list[float]]] = defaultdict(list)
    records = []
    print("| run | " + " | ".join(f"{c} %" for c in COLUMNS) + " |\n|---|" + "---:|" * len(COLUMNS))
    for run in paths:
        row = run_row(run, style)
        if row is None:
            continue
        variant = re.sub(r"_s\d+$", "", run.name)
        per[variant].append(row)
        seed = re.search(r"_s(\d+)$", run.name)
        records.append({"variant": variant, "seed": seed.group(1) if seed else "0", "run_dir": str(run),
                        **{c: f"{v / 100:.6f}" for c, v in zip(CSV_COLUMNS, row, strict=True)}})  # fmt: skip
        print(f"| {run.name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    print("\n| variant | n | " + " | ".join(f"{c} %" for c in COLUMNS) + " |\n|---|---:|" + "---:|" * len(COLUMNS))
    for name, rows in per.items():
        a = np.array(rows)
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        print(
            f"| {name} | {len(a)} | "
            + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(a.mean(0), sd, strict=True))
            + " |"
        )
    allrows = np.array([r for rows in per.values() for r in rows])
    if len(allrows) >= 3:
        from scipy.stats import spearmanr

        for j, name in ((0, "ID val"), (4, "shift-val mean")):
            ok = ~np.isnan(allrows[:, j])
            if ok.sum() >= 3:
                rho, p = spearmanr(allrows[ok, j], allrows[ok, 2])
                print(f"\nSpearman rho, {name} vs style val over {int(ok.sum())} runs: {rho:+.3f} (p = {p:.3f})")
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["variant", "seed", "run_dir", *CSV_COLUMNS])
            writer.writeheader()
            writer.writerows(records)


if __name__ == "__main__":
    main()
