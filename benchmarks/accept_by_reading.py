"""What caps the ID side of issue 16 item 5: a served ladder's acceptance of another style, split by the reading.

Item 5 asks the ladder (fitted at 95% on clean ID val) to accept >= 90% of the ID species drawn in another style.
A ladder accepts a share ``a_right`` of the drawings its model reads right and ``a_wrong`` of those it misreads, so
over a style read right at top-1 ``t`` it accepts ``t a_right + (1 - t) a_wrong``. This script measures both shares
per run and split, for the run's own ladder (``RUN/ladder.json`` as export wrote it, refused when fitted on other
weights), on the clean ID split as a reference and on ``--style`` (an index whose first classes are the run's, e.g.
``data build style-artwork``), and gives the top-1 the style would need for 90% at those shares:
``t* = (0.90 - a_wrong) / (a_right - a_wrong)``, "none" when ``a_right`` itself is under 90% (then no reading of
the style reaches the bar at this ladder, however good).

    python benchmarks/accept_by_reading.py artifacts/s56/art_held/runs/student_mnv3s_kd artifacts/s56/sv/* \\
        --style artifacts/s56/art_held/data/style_artwork_sprites64_1-151 --md artifacts/s57/reading.md

The shares are ``deploy.run_ladder.run_ladder_report``'s (what ``stillroom evaluate --ladder`` reports): the
service's verdicts on dataset pixels, the structure gate first. Runs named ``<variant>_s<seed>`` also get a table
of mean ± sd over their seeds. Writes nothing into the runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from stillroom.data.index import load_index
from stillroom.deploy.run_ladder import run_ladder_report

BAR = 0.90


def reading_rows(run_dir: Path, style_dir: Path, weights: str = "best") -> list[dict]:
    """One dict per (set, split): n, top1, accepted, accepted_right, accepted_wrong, top1_needed. The shares are
    ``run_ladder_report``'s (``coverage``, ``coverage_correct``, ``coverage_misread``: the run's own ladder, its
    structure gate applied, refused when fitted on other weights), on the run's index and on ``style_dir``."""
    out = []
    for name, index in (("id", None), ("style", load_index(style_dir))):
        for split in ("val", "test"):
            rep = run_ladder_report(run_dir, split=split, weights=weights, index=index)
            i = rep["id"]
            a_r, a_w = i["coverage_correct"], i["coverage_misread"]
            needed = (BAR - a_w) / (a_r - a_w) if a_r >= BAR and a_r > a_w else None
            out.append(
                {
                    "run": run_dir.name,
                    "signal": rep["signal"],
                    "set": name,
                    "split": split,
                    "n": int(i["n"]),
                    "top1": float(i["accuracy"]),
                    "accepted": float(i["coverage"]),
                    "accepted_right": float(a_r),
                    "accepted_wrong": float(a_w),
                    "top1_needed": None if needed is None else float(min(max(needed, 0.0), 1.0)),
                }
            )
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| run | ladder signal | set | split | n | top-1 % | accepted % | accepted, read right % | "
        "accepted, misread % | top-1 needed for 90% |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        need = "none (read right < 90%)" if r["top1_needed"] is None else f"{100 * r['top1_needed']:.0f}%"
        lines.append(
            f"| {r['run']} | {r['signal']} | {r['set']} | {r['split']} | {r['n']} | {100 * r['top1']:.1f} | "
            f"{100 * r['accepted']:.1f} | {100 * r['accepted_right']:.1f} | {100 * r['accepted_wrong']:.1f} | {need} |"
        )
    return "\n".join(lines)


def seed_means(rows: list[dict]) -> str:
    """Mean +- sd over the seeds of each variant (runs named ``<variant>_s<seed>``), per set and split; "" when no
    variant has more than one seed."""
    groups: dict[tuple[str, str, str, str], list[dict]] = {}
    for r in rows:
        key = (re.sub(r"_s\d+$", "", r["run"]), r["signal"], r["set"], r["split"])
        groups.setdefault(key, []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return ""
    cols = ("top1", "accepted", "accepted_right", "accepted_wrong")
    lines = [
        "| variant | ladder signal | set | split | seeds | top-1 % | accepted % | accepted, read right % | "
        "accepted, misread % |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (variant, signal, name, split), g in groups.items():
        cells = []
        for c in cols:
            v = 100 * np.array([r[c] for r in g])
            cells.append(f"{np.nanmean(v):.1f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0.0:.1f}")
        lines.append(f"| {variant} | {signal} | {name} | {split} | {len(g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run directories with a ladder.json (export's)")
    ap.add_argument("--style", type=Path, required=True, help="the ID species drawn otherwise")
    ap.add_argument("--weights", default="best")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [r for run_dir in args.runs for r in reading_rows(run_dir, args.style, args.weights)]
    table = markdown(rows)
    means = seed_means(rows)
    if means:
        table += "\n\nMean ± sd over seeds:\n\n" + means
    print(table)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n")


if __name__ == "__main__":
    main()
