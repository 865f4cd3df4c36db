"""Seed 000 Table 2 from our runs: method x (top-1, AUROC, AUPR-In, AUPR-Out, FPR@95TPR), mean +- std over runs.

Input: ``ood_report`` dicts (``evaluate.ood``) of one or several runs, typically the seeds of one configuration,
read from each run's ``ood_metrics.json`` (written by ``stillroom evaluate RUN --ood-split SPLIT``). A method is an
OOD score applied to the same checkpoints; top-1 is the closed-set accuracy on the ID rows (the same for every method
of a run, as in the seed's table). Statistics across runs: mean and sample std (ddof = 1; "-" for a single run;
REFERENCE 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import StillroomError, read_json

__all__ = ["METHODS", "OOD_METRICS_FILE", "load_ood_reports", "ood_table_rows", "ood_table_markdown", "ood_table_rich"]

OOD_METRICS_FILE = "ood_metrics.json"
# score name -> row label, in table order (seed 000 Table 2 first, then ours)
METHODS = (
    ("msp", "MSP baseline"),
    ("odin", "ODIN"),
    ("energy", "Energy-based OOD"),
    ("maxlogit", "MaxLogit"),
    ("sink", "Sink 1 - p_sink (target-dampened)"),
    ("knn", "KNN on penultimate features (pytorch-ood)"),
    ("ash", "ASH-S (pytorch-ood)"),
    ("scale", "SCALE (pytorch-ood)"),
    ("rmd", "Relative Mahalanobis, style views (pytorch-ood)"),
)
_COLUMNS = (("top1", "Top-1 (%)"), ("auroc", "AUROC"), ("aupr_in", "AUPR-In"), ("aupr_out", "AUPR-Out"),
            ("fpr_at_95_tpr", "FPR@95TPR"))  # fmt: skip


def load_ood_reports(
    run_dirs: Sequence[str | Path], split: str = "test", weights: str = "best", file: str = OOD_METRICS_FILE
) -> list[dict]:
    """The ``split``/``weights`` report of each run's ``ood_metrics.json`` (or ``file``, e.g. the reports against
    one separate OOD set, ``ood_metrics_vs_<set>.json``); a missing one is an error naming it."""
    out = []
    for run in run_dirs:
        path = Path(run) / file
        how = f"`stillroom evaluate {run} --ood-split {split} --weights {weights}"
        how += "`" if file == OOD_METRICS_FILE else " --ood-index OOD_DIR`"
        if not path.is_file():
            raise StillroomError(f"{path}: not found; run {how}")
        data = read_json(path)
        try:
            out.append(data["splits"][split][weights])
        except (KeyError, TypeError):
            raise StillroomError(f"{path}: no report for split {split!r} / weights {weights!r}; run {how}") from None
    return out


def _stat(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": len(arr)}


def ood_table_rows(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method present in every report: ``{"method", "score", "top1", "auroc", ...}`` as
    ``{"mean", "std", "n"}`` (top-1 in percent), plus the OOD rejection rate for the sink row."""
    if not reports:
        raise StillroomError("ood table: no reports given")
    rows = []
    for score, label in METHODS:
        if not all(score in r["scores"] for r in reports):
            continue
        row: dict[str, Any] = {"method": label, "score": score}
        row["top1"] = _stat([100.0 * r["closed_set"]["top1"] for r in reports])
        for key, _ in _COLUMNS[1:]:
            row[key] = _stat([r["scores"][score][key] for r in reports])
        if score == "sink" and all("ood_rejection_rate" in r for r in reports):
            row["ood_rejection_rate"] = _stat([100.0 * r["ood_rejection_rate"] for r in reports])
        rows.append(row)
    return rows


def _fmt(stat: dict[str, Any], digits: int) -> str:
    if stat["std"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _digits(key: str) -> int:
    return 2 if key == "top1" else 4


def ood_table_markdown(rows: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """Markdown table of ``ood_table_rows`` (mean ± std over runs)."""
    lines = [f"**{title}**", ""] if title else []
    lines.append("| Method | " + " | ".join(name for _, name in _COLUMNS) + " |")
    lines.append("|---|" + "---|" * len(_COLUMNS))
    for row in rows:
        lines.append(f"| {row['method']} | " + " | ".join(_fmt(row[k], _digits(k)) for k, _ in _COLUMNS) + " |")
    rejection = [r for r in rows if "ood_rejection_rate" in r]
    if rejection:
        lines += ["", f"OOD rejection rate (argmax = sink, %): {_fmt(rejection[0]['ood_rejection_rate'], 2)}"]
    return "\n".join(lines) + "\n"


def ood_table_rich(rows: Sequence[dict[str, Any]], title: str | None = None):
    """The same table as a ``rich.table.Table`` for the console."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("Method")
    for _, name in _COLUMNS:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(row["method"], *(_fmt(row[k], _digits(k)) for k, _ in _COLUMNS))
    return table
