"""PNG figures for reports: reliability diagrams, training curves, OOD ROC curves and score histograms.

Every function returns PNG bytes (and writes them atomically when given ``path``). Figures are built on
``matplotlib.figure.Figure`` with the Agg canvas directly, never through ``pyplot``: no global figure state, no
backend switching, safe in worker processes and in tests.

- ``reliability_diagram``: seed 001 §4.1.6 / REFERENCE 4 bins (``calibration.expected_calibration_error``): per
  bin, accuracy (bars) against the diagonal of perfect calibration, the gap to each bin's mean confidence shaded,
  and below it the histogram of top-label confidences; one column before and one after temperature scaling;
- ``training_curves``: a run's ``state.json`` history: train/val top-1, loss terms and validation NLL, learning rate;
- ``roc_curves`` / ``score_histograms``: ID-vs-OOD scores, oriented higher = more in-distribution (REFERENCE 4).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stillroom._io import StillroomError, atomic_write_bytes

__all__ = ["reliability_diagram", "training_curves", "roc_curves", "score_histograms"]

_DPI = 100
_BLUE, _ORANGE, _RED, _GREY = "#3b6ea8", "#d9822b", "#c23b22", "#888888"


def _png(fig: Figure, path: str | Path | None) -> bytes:
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _reliability_column(ax_top: Any, ax_hist: Any, bins: Sequence[Mapping[str, Any]], label: str, stats: str) -> None:
    lo = np.array([b["lo"] for b in bins])
    hi = np.array([b["hi"] for b in bins])
    width, centre = hi - lo, (lo + hi) / 2
    count = np.array([b["count"] for b in bins], dtype=np.float64)
    full = count > 0
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
    ax_top.plot([0, 1], [0, 1], ls="--", color=_GREY, lw=1, label="perfect calibration")
    ax_top.bar(centre[full], acc[full], width=width[full], color=_BLUE, edgecolor="white", label="accuracy")
    # the gap between a bin's accuracy and its mean confidence, hatched from one to the other (over the accuracy
    # bar when the bin is under-confident); a black tick marks the mean confidence itself
    ax_top.bar(
        centre[full],
        conf[full] - acc[full],
        bottom=acc[full],
        width=width[full],
        facecolor=(0.76, 0.23, 0.13, 0.18),
        edgecolor=_RED,
        hatch="///",
        lw=0.6,
        label="gap to mean confidence",
    )
    ax_top.hlines(conf[full], lo[full], hi[full], color="black", lw=1.2, label="mean confidence")
    ax_top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{label}\n{stats}")
    ax_top.title.set_fontsize(10)
    ax_top.legend(loc="upper left", fontsize=8, frameon=False)
    ax_hist.bar(centre, count / max(count.sum(), 1), width=width, color=_ORANGE, edgecolor="white")
    ax_hist.set(xlim=(0, 1), xlabel="top-label confidence", ylabel="share of samples")


def _stats_line(m: Mapping[str, Any] | None) -> str:
    if not m:
        return ""
    return f"ECE {m['ece']:.4f}  MCE {m['mce']:.4f}  Brier {m['brier']:.4f}  NLL {m['nll']:.4f}"


def reliability_diagram(
    before: Mapping[str, Any],
    after: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    title: str = "",
    path: str | Path | None = None,
) -> bytes:
    """Reliability diagram + confidence histogram of ``before`` (and ``after`` temperature scaling).

    ``before`` / ``after``: ``calibration_metrics(..., return_bins=True)`` dicts (``"bins"`` plus ECE, MCE, Brier,
    NLL for the caption). Returns PNG bytes; writes them to ``path`` when given.
    """
    cols = [("before temperature scaling (T = 1)", before)]
    if after is not None:
        t = f"T = {temperature:.3g}" if temperature is not None else "fitted T"
        cols.append((f"after temperature scaling ({t})", after))
    for _, m in cols:
        if not m or "bins" not in m:
            raise StillroomError(
                "reliability_diagram: metrics need their 'bins' (calibration_metrics(return_bins=True))"
            )
    # fixed margins instead of constrained layout: the same picture, in half the time (evaluation draws 4 of these)
    fig = Figure(figsize=(4.6 * len(cols), 5.6))
    grid = fig.add_gridspec(
        2,
        len(cols),
        height_ratios=(3, 1),
        left=0.14 / len(cols),
        right=0.98,
        bottom=0.09,
        top=0.86 if title else 0.9,
        hspace=0.35,
        wspace=0.25,
    )
    for j, (label, m) in enumerate(cols):
        _reliability_column(fig.add_subplot(grid[0, j]), fig.add_subplot(grid[1, j]), m["bins"], label, _stats_line(m))
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig, path)


def training_curves(history: Sequence[Mapping[str, Any]], title: str = "", path: str | Path | None = None) -> bytes:
    """Top-1 (train, val), loss terms (train) with validation NLL, and learning rate per epoch from ``history``."""
    if not history:
        raise StillroomError("training_curves: the history is empty (no finished epoch)")
    ep = np.array([h["epoch"] for h in history])

    def series(key: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else (np.array([]), np.array([]))

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_acc, ax_loss, ax_lr = fig.subplots(1, 3)
    for key, label, colour in (("train_top1", "train (augmented)", _ORANGE), ("val_top1", "val", _BLUE)):
        x, y = series(key)
        if len(x):
            ax_acc.plot(x, y, marker="o" if len(x) < 25 else None, ms=3, color=colour, label=label)
    ax_acc.set(xlabel="epoch", ylabel="top-1", ylim=(0, 1.02), title="accuracy")
    ax_acc.legend(fontsize=8, frameon=False)
    loss_keys = sorted({k for h in history for k in h if k.startswith("loss")})
    for key in loss_keys:
        x, y = series(key)
        ax_loss.plot(x, y, label=f"train {key}")
    x, y = series("val_nll")
    if len(x):
        ax_loss.plot(x, y, color="black", ls="--", label="val NLL")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses")
    ax_loss.legend(fontsize=8, frameon=False)
    x, y = series("lr")
    ax_lr.plot(x, y, color=_GREY)
    ax_lr.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="schedule")
    for ax in (ax_acc, ax_loss, ax_lr):
        ax.set_xlim(0.5, max(ep.max(), 1) + 0.5)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig, path)


def roc_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]],
    title: str = "",
    path: str | Path | None = None,
) -> bytes:
    """ROC curves ``{score name: (fpr, tpr, auroc)}``, in-distribution = positive class (REFERENCE 4)."""
    fig = Figure(figsize=(5, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color=_GREY, lw=1)
    for name, (fpr, tpr, auroc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="OOD accepted (FPR)", ylabel="ID accepted (TPR)", title=title)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    ax.grid(alpha=0.3)
    return _png(fig, path)


def score_histograms(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    path: str | Path | None = None,
    bins: int = 40,
) -> bytes:
    """One panel per score: histograms of ``(id_scores, ood_scores)`` (density; higher = more in-distribution)."""
    if not scores:
        raise StillroomError("score_histograms: no scores")
    n = len(scores)
    fig = Figure(figsize=(3.4 * n, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    axes[0].set_ylabel("density")
    for ax, (name, (s_id, s_ood)) in zip(axes, scores.items(), strict=True):
        both = np.concatenate([s_id, s_ood])
        edges = np.histogram_bin_edges(both, bins=bins)
        ax.hist(s_id, bins=edges, density=True, alpha=0.6, color=_BLUE, label=f"ID (n={len(s_id)})")
        ax.hist(s_ood, bins=edges, density=True, alpha=0.6, color=_RED, label=f"OOD (n={len(s_ood)})")
        ax.set(title=name, xlabel="score (higher = more ID)")
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig, path)
