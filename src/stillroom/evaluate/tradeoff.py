"""The trade-off a user distils for: teachers vs students side by side, written to ``tradeoff.json``.

Per model (each teacher, the teacher ensemble, each student; issue 14 item 6): parameters, size of the weights file
(safetensors bytes), batch-1 CPU latency and top-1 / top-5 / macro-F1 on one split; for students the share of the
ensemble's top-1 they keep, ``share = student top-1 / ensemble top-1``. The 1-NN pixel leakage probe of the same
split (``data.leakage``; REFERENCE 1.1) goes beside it, because a high probe figure means that split rewards
recognising near-copies of training images rather than generalization.

- Ensemble: the mean of the teachers' softmax over the K in-distribution columns (seed 001 §3: the fused teacher the
  KD student learns from). Its size and parameters are the sum of its members'; its latency is the sum of their
  medians (they run one after the other on one CPU). With a single teacher there is no ensemble row: the student's
  share is of that teacher's top-1.
- Accuracy: logits of ``weights`` (best-validation by default) on ``split``, scored with
  ``evaluate.metrics.classification_report`` on the first K columns, as ``evaluate.runner`` does, so the figures
  equal those in each run's ``metrics.json``.
- Latency: PyTorch eager, fp32, batch 1 (one real image of the split), on the CPU at the current torch thread count
  (or ``threads``); ``warmup_seconds`` untimed, then calls for about ``latency_seconds``; median and 90th percentile
  in ms. A short timing for the report, not a benchmark: ``stillroom bench-latency`` times ONNX Runtime and int8 with
  the full protocol (``deploy.latency``). The load average before and after is recorded because other jobs on the
  machine inflate the numbers. The few lines of timing loop are repeated here, not imported from ``deploy``:
  evaluation sits below deployment in the layer contract.

- Another artist (optional ``style_index``, e.g. ``data build style-icons``): every model's top-1 on that index's
  ``style_split``, the same species drawn by someone else, beside the leakage probe: what the split above cannot
  say about generalization. Its own 1-NN pixel probe (the lookup of the training images) goes with it.

Reports (``report.markdown``, ``report.html``) only read the file.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stillroom._io import StillroomError, atomic_write_json
from stillroom._timing import time_calls
from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex
from stillroom.evaluate.metrics import classification_report
from stillroom.runs import Run

__all__ = [
    "TRADEOFF_FILE",
    "TRADEOFF_FORMAT",
    "measure_tradeoff",
    "share_kept",
    "count_parameters",
    "batch1_latency",
    "ensemble_probabilities",
]

TRADEOFF_FILE = "tradeoff.json"
TRADEOFF_FORMAT = "stillroom-tradeoff/1"


def share_kept(student_top1: float | None, ensemble_top1: float | None) -> float | None:
    """Share of the ensemble's top-1 the student keeps: ``student_top1 / ensemble_top1`` (above 1 when the
    student is better). None when either is missing; nan with a warning when the ensemble gets nothing right."""
    if student_top1 is None or ensemble_top1 is None:
        return None
    for name, x in (("student_top1", student_top1), ("ensemble_top1", ensemble_top1)):
        if not (isinstance(x, int | float) and 0.0 <= x <= 1.0):
            raise StillroomError(f"share_kept: {name} must be a fraction in [0, 1], got {x!r}")
    if ensemble_top1 == 0:
        warnings.warn("share_kept: the ensemble's top-1 is 0, so no share of it is defined", stacklevel=2)
        return math.nan
    return float(student_top1) / float(ensemble_top1)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BatchNorm statistics excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


@torch.inference_mode()
def batch1_latency(
    model: nn.Module, x: torch.Tensor, seconds: float = 1.0, warmup_seconds: float = 0.3, min_runs: int = 5
) -> dict[str, Any]:
    """Seconds per ``model(x)`` call, ``x`` a (1, C, S, S) batch: ``warmup_seconds`` untimed, then calls for about
    ``seconds`` (at least ``min_runs``). Returns {"median_ms", "p90_ms", "runs"}."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise StillroomError(f"batch1_latency: x must have shape (1, C, S, S), got {tuple(x.shape)}")
    if seconds <= 0 or warmup_seconds < 0:
        raise StillroomError(
            f"batch1_latency: seconds must be > 0, warmup_seconds >= 0; got {seconds}, {warmup_seconds}"
        )
    model(x)  # at least one untimed call: the first allocates
    times = time_calls(lambda: model(x), 0, 10**9, seconds, min_runs=min_runs, warmup_seconds=warmup_seconds)
    arr = times * 1e3
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)), "runs": len(times)}


def ensemble_probabilities(logits: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Mean softmax over the first ``num_classes`` columns of each teacher's (N, >= K) logits: (N, K) float64."""
    if not logits:
        raise StillroomError("ensemble_probabilities: no teacher logits given")
    shapes = {z.shape[0] for z in logits}
    if len(shapes) != 1 or any(z.ndim != 2 or z.shape[1] < num_classes for z in logits):
        raise StillroomError(
            f"ensemble_probabilities: logits must be (N, >= {num_classes}) with one N, got "
            f"{[tuple(z.shape) for z in logits]}"
        )
    probs = [torch.softmax(torch.from_numpy(z[:, :num_classes]).double(), dim=1) for z in logits]
    return torch.stack(probs).mean(0).numpy()  # (N, K)


def _scores(scores: np.ndarray, labels: np.ndarray, index: DatasetIndex) -> dict[str, Any]:
    rep = classification_report(scores, labels, index.classes, n_pairs=0)
    return {"top1": rep["top1"], "top5": rep["top5"], "macro_f1": rep["macro_f1"], "n": rep["n"]}


def _probe(index: DatasetIndex, split: str) -> dict[str, Any] | None:
    """The leakage probe of ``split`` from ``index.json``; computed now when the index has none (e.g. a synthetic
    index), so the figure is never silently absent."""
    probe = index.meta.get("leakage_probe")
    source = "index.json"
    if not probe:
        from stillroom.data.leakage import leakage_probe  # late: only for indexes built without it

        probe, source = leakage_probe(index), "computed by the trade-off step (index.json has none)"
    part = probe.get(split) or {}
    if not part or part.get("accuracy") is None:
        return None
    return {
        "split": split,
        "method": probe.get("method"),
        "accuracy": part["accuracy"],
        "n": part.get("n"),
        "chance": part.get("chance"),
        "median_distance": (part.get("distance_quantiles") or {}).get("p50"),
        "summary": probe.get("summary"),
        "source": source,
    }


def _style_rows(style_index: DatasetIndex | None, split: str, index: DatasetIndex) -> np.ndarray:
    if style_index is None:
        return np.zeros(0, dtype=np.int64)
    if list(style_index.classes) != list(index.classes):
        raise StillroomError(f"{style_index.root}: its classes differ from {index.root}'s; cannot score it")
    rows = style_index.split_indices(split)
    if len(rows) == 0:
        raise StillroomError(f"{style_index.root}: split {split!r} is empty")
    return rows


def _top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(scores).argmax(axis=1) == labels).mean())


def _style_block(style_index: DatasetIndex | None, split: str, rows: np.ndarray) -> dict[str, Any] | None:
    if style_index is None:
        return None
    probe = (style_index.meta.get("nn_probe") or {}).get(split) or {}
    source = style_index.recipe.get("source")
    return {
        "index": str(style_index.root),
        "index_hash": style_index.index_hash,
        "split": split,
        "n": int(len(rows)),
        "style": style_index.recipe.get("style"),
        "source": source.get("package") if isinstance(source, dict) else source,
        "nn_probe_top1": probe.get("accuracy"),
    }


def measure_tradeoff(
    teachers: Mapping[str, str | Path],
    students: Mapping[str, str | Path],
    index: DatasetIndex,
    out_path: str | Path | None = None,
    split: str = "test",
    weights: str = "best",
    images: np.ndarray | None = None,
    latency_seconds: float = 1.0,
    warmup_seconds: float = 0.3,
    threads: int | None = None,
    style_index: DatasetIndex | None = None,
    style_split: str = "test",
    style_skipped: str | None = None,
) -> dict[str, Any]:
    """Measure every model of ``teachers`` and ``students`` ({label: run directory}) and the teachers' ensemble
    (module docstring); write the result to ``out_path`` (``tradeoff.json``) when given and return it.

    Rows, in order: teachers, the ensemble (when there are two teachers or more), students. Each row: ``label``,
    ``role`` ("teacher", "ensemble", "student"), ``run``, ``arch``, ``parameters``, ``weights_bytes``,
    ``weights_sha256`` (runs only), ``latency_ms``
    ({"median_ms", "p90_ms", "runs"}; the ensemble: {"median_ms"} = sum of its members'), ``top1``, ``top5``,
    ``macro_f1``, ``n`` and ``share_of_ensemble_top1`` (students; None otherwise; with a single teacher, the share
    of that teacher's top-1, the ensemble of one); with ``style_index`` (same classes) also ``style_top1`` on its
    ``style_split`` and a ``style`` block (index, split, n, source, 1-NN probe); without it, ``style_skipped`` (why
    no other style is scored, e.g. every style is in training) goes to the result for the report. Cost: one forward
    pass over ``split`` (and the style split) per model plus ``warmup_seconds + latency_seconds`` each.
    """
    if not teachers and not students:
        raise StillroomError("measure_tradeoff: no runs given (teachers and students are both empty)")
    overlap = set(teachers) & set(students)
    if overlap:
        raise StillroomError(f"measure_tradeoff: labels used for a teacher and a student: {sorted(overlap)}")
    if threads is not None and threads < 1:
        raise StillroomError(f"measure_tradeoff: threads must be >= 1, got {threads}")
    rows_idx = index.split_indices(split)
    if len(rows_idx) == 0:
        raise StillroomError(f"{index.root}: split {split!r} is empty; nothing to measure the trade-off on")
    images = load_images(index) if images is None else images
    labels = index.labels[rows_idx]
    k = index.num_classes
    style_rows = _style_rows(style_index, style_split, index)
    style_images = load_images(style_index) if style_index is not None else None
    style_logits: list[np.ndarray] = []
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    try:
        measured: list[dict[str, Any]] = []
        teacher_logits: list[np.ndarray] = []
        for role, group in (("teacher", teachers), ("student", students)):
            for label, path in group.items():
                run = Run(path)
                logits = run.logits(weights, rows_idx, index, images)[:, :k]  # (N, K)
                if role == "teacher":
                    teacher_logits.append(logits)
                style_top1 = None
                if style_index is not None:
                    sl = run.logits(weights, style_rows, style_index, style_images)[:, :k]
                    style_top1 = _top1(sl, style_index.labels[style_rows])
                    if role == "teacher":
                        style_logits.append(sl)
                cpu = run.load(weights, "cpu")
                x = cpu.normalizer(torch.from_numpy(np.asarray(images[rows_idx[:1]])))  # (1, C, S, S)
                measured.append(
                    {
                        "label": label,
                        "role": role,
                        "run": str(run.path),
                        "arch": run.meta.get("arch"),
                        "parameters": count_parameters(cpu.model),
                        "weights_bytes": run.weights_path(weights).stat().st_size,
                        "weights_sha256": cpu.weights_sha256,  # lets a report notice weights changed since
                        "latency_ms": batch1_latency(cpu.model, x, latency_seconds, warmup_seconds),
                        **_scores(logits, labels, index),
                        "share_of_ensemble_top1": None,
                        "style_top1": style_top1,
                    }
                )
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    load_after = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    rows = [r for r in measured if r["role"] == "teacher"]
    ensemble = None
    reference = rows[0] if len(rows) == 1 else None  # one teacher: no ensemble row, the share is of that teacher
    if len(teacher_logits) > 1:
        # mean probabilities as scores: classification_report only ranks them, so argmax and top-k are the ensemble's
        probs = ensemble_probabilities(teacher_logits, k)
        ensemble = {
            "label": f"teacher ensemble (mean softmax of {len(teacher_logits)})",
            "role": "ensemble",
            "run": None,
            "arch": " + ".join(str(r["arch"]) for r in rows),
            "members": [r["label"] for r in rows],
            "parameters": sum(r["parameters"] for r in rows),
            "weights_bytes": sum(r["weights_bytes"] for r in rows),
            "latency_ms": {"median_ms": sum(r["latency_ms"]["median_ms"] for r in rows)},
            **_scores(probs, labels, index),
            "share_of_ensemble_top1": None,
            "style_top1": None
            if style_index is None
            else _top1(ensemble_probabilities(style_logits, k), style_index.labels[style_rows]),
        }
        rows.append(ensemble)
        reference = ensemble
    for r in measured:
        if r["role"] == "student":
            r["share_of_ensemble_top1"] = share_kept(r["top1"], reference["top1"]) if reference else None
            rows.append(r)
    result: dict[str, Any] = {
        "format": TRADEOFF_FORMAT,
        "split": split,
        "weights": weights,
        "index": str(index.root),
        "index_hash": index.index_hash,
        "latency": {
            "backend": "PyTorch eager, fp32, CPU",
            "batch": 1,
            "threads": used_threads,
            "warmup_seconds": warmup_seconds,
            "seconds_per_model": latency_seconds,
            "torch": torch.__version__,
            "load_before": load_before,
            "load_after": load_after,
        },
        "leakage_probe": _probe(index, split),
        "style": _style_block(style_index, style_split, style_rows),
        "style_skipped": style_skipped if style_index is None else None,
        "rows": rows,
        "seconds": time.perf_counter() - t_start,
    }
    if out_path is not None:
        atomic_write_json(out_path, result)
    return result
