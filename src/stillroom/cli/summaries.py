"""Reading sweep summaries (``results_summary.csv``) and tabulating comparisons for ``stillroom compare``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError

__all__ = [
    "LOWER_IS_BETTER",
    "comparison_rows",
    "read_summaries",
    "read_summary",
    "summary_column",
    "variant_values",
]

#: substrings of metric columns where lower is better (the sign of "ahead" and of the verdict)
LOWER_IS_BETTER = ("nll", "ece", "mce", "brier", "seconds", "fpr", "false_rejection")


def read_summary(path: Path) -> tuple[Path, list[dict[str, str]]]:
    """(the CSV's path, its rows) of a summary file or of the sweep directory holding it."""
    from stillroom.pipeline.sweep import SUMMARY_FILE

    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return path, list(csv.DictReader(fh))
    except FileNotFoundError:
        raise StillroomError(f"{path}: summary CSV not found (run `stillroom sweep` first)") from None


def read_summaries(paths: list[Path]) -> tuple[Path, list[dict[str, str]]]:
    """The rows of several summaries, as one: a (variant, seed) row that two files hold (arms run in several batches
    beside the same baseline runs) is kept once when both agree on every column they share, and refused otherwise,
    naming both files. Returns the first file's path (for messages) and the rows."""
    first, merged, origin = None, [], {}
    for given in paths:
        path, rows = read_summary(given)
        first = first or path
        for row in rows:
            key = (row.get("variant"), row.get("seed"))
            if key in origin:
                seen, where = origin[key]
                shared = [c for c in row if c in seen and c not in ("run_dir", "finished_at")]
                if any(row[c] != seen[c] for c in shared):
                    raise StillroomError(
                        f"{path}: variant {key[0]!r} seed {key[1]} differs from the same row of {where}; give "
                        "summaries of the same runs only"
                    )
                continue
            origin[key] = (row, path)
            merged.append(row)
    return first, merged


def summary_column(rows: list[dict[str, str]], metric: str, split: str, path: Path) -> str:
    """The column ``metric`` names: itself, or ``{split}_{metric}``; an error listing the numeric columns."""
    columns = list(rows[0]) if rows else []
    for candidate in (metric, f"{split}_{metric}"):
        if candidate in columns:
            return candidate
    numeric = [c for c in columns if c not in ("variant", "seed", "run_dir", "finished_at")]
    raise StillroomError(f"{path}: no column {metric!r} or {split}_{metric!r}; columns: {', '.join(numeric)}")


def variant_values(rows: list[dict[str, str]], variant: str, column: str, path: Path) -> tuple[list[float], list[int]]:
    """(values, seeds) of ``variant``'s finished rows in ``column``; an error listing the variants."""
    picked = [r for r in rows if r["variant"] == variant and r.get(column) not in (None, "")]
    if not picked:
        known = sorted({r["variant"] for r in rows})
        raise StillroomError(f"{path}: no finished run of variant {variant!r} with {column}; variants: {known}")
    return [float(r[column]) for r in picked], [int(r["seed"]) for r in picked]


def comparison_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table of ``stats.compare`` results against one baseline (its row first); fractions are
    shown as percentages and their differences in points."""
    base = results[0]["a"]
    frac = all(0 <= v <= 1 for r in results for side in ("a", "b") for v in r[side]["values"])
    scale, unit = (100.0, " (points)") if frac else (1.0, "")
    header = ["variant", "seeds", "mean ± std", f"difference{unit}", "95% CI", "seeds ahead", "permutation p"]
    rows = []
    for res in [{"b": base, "paired": None}, *results]:
        side = res["b"]
        std = "" if math.isnan(side["std"]) else f" ± {scale * side['std']:.2f}"
        row = [side["name"], str(len(side["values"])), f"{scale * side['mean']:.2f}{std}"]
        if res["paired"] is None:  # the baseline itself
            rows.append([*row, "", "", "", ""])
            continue
        ci = res["bootstrap_ci"]
        a, b = np.asarray(res["a"]["values"]), np.asarray(side["values"])
        ahead = f"{int(((b > a) if res['higher_is_better'] else (b < a)).sum())} of {len(a)}" if res["paired"] else "-"
        rows.append(
            [
                *row,
                f"{scale * res['mean_diff']:+.2f}",
                f"[{scale * ci['low']:+.2f}, {scale * ci['high']:+.2f}]",
                ahead,
                f"{res['permutation']['p_value']:.3g}",
            ]
        )
    return header, rows
