"""Classification metrics on logits: top-k, macro/per-class F1, confusion matrix and most-confused pairs.

REFERENCE 4; seed 001 §4.1.2 (per-class precision / recall / F1, macro average). Pure functions over numpy arrays;
F1 and the confusion matrix come from scikit-learn so the numbers match what others compute.

Conventions fixed here:

- Ties. Classes are ranked by logit, descending, ties broken by the lower class id; this is the order
  ``np.argmax`` uses, so top-1 accuracy always equals the accuracy of the argmax predictions used for F1.
- ``k`` larger than the number of classes K is clipped to K (top-k is then 1.0).
- Macro F1 averages over the classes present in ``labels`` (y_true) only, with ``zero_division=0``. A class with
  no true samples has no defined recall, and counting it as 0 would punish a split for lacking it; predictions
  *into* such a class still cost the true class its recall. ``per_class_f1`` reports None for these classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from stillroom._io import StillroomError

__all__ = ["topk_accuracy", "classification_report"]

_CHUNK = 8192  # rows per rank computation, so (N, K) boolean temporaries stay small


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest logits (ties: lower class id first)."""
    logits, labels = _validate(logits, labels, "topk_accuracy")
    k = _check_k(k, "topk_accuracy")
    return float((_true_rank(logits, labels) < min(k, logits.shape[1])).mean())


def classification_report(
    logits: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    topk: Sequence[int] = (1, 5),
    n_pairs: int = 10,
) -> dict[str, Any]:
    """Metrics of ``logits`` (N, K) against ``labels`` (N,) in 0..K-1, with ``class_names`` (K).

    Returns {"n", "top{k}" for k in ``topk`` (k clipped to K), "macro_f1", "per_class_f1" {name: f1 or None},
    "per_class_support" {name: count}, "confusion_matrix" (K x K list, rows = true, columns = predicted),
    "confused_pairs" (up to ``n_pairs`` of {"a", "b", "a_id", "b_id", "a_as_b", "b_as_a", "total", "rate"}, ranked
    by total = cm[a, b] + cm[b, a], rate = total / (support_a + support_b)), "worst_classes" (5 lowest F1 among
    classes with support: {"class", "id", "f1", "support"})}.
    """
    logits, labels = _validate(logits, labels, "classification_report")
    n, num_classes = logits.shape
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise StillroomError(
            f"classification_report: class_names has {len(names)} entries, logits {num_classes} columns"
        )
    ks = [_check_k(k, "classification_report") for k in topk]
    if int(n_pairs) < 0:
        raise StillroomError(f"classification_report: n_pairs must be >= 0, got {n_pairs}")

    ranks = _true_rank(logits, labels)
    pred = logits.argmax(axis=1)
    all_ids = np.arange(num_classes)
    support = np.bincount(labels, minlength=num_classes)
    present = all_ids[support > 0]
    f1 = f1_score(labels, pred, labels=all_ids, average=None, zero_division=0)
    macro = f1_score(labels, pred, labels=present, average="macro", zero_division=0)
    cm = confusion_matrix(labels, pred, labels=all_ids)

    worst = present[np.argsort(f1[present], kind="stable")[:5]]
    return {
        "n": n,
        **{f"top{k}": float((ranks < min(k, num_classes)).mean()) for k in ks},
        "macro_f1": float(macro),
        "per_class_f1": {names[c]: (float(f1[c]) if support[c] else None) for c in all_ids},
        "per_class_support": {names[c]: int(support[c]) for c in all_ids},
        "confusion_matrix": cm.tolist(),
        "confused_pairs": _confused_pairs(cm, support, names, int(n_pairs)),
        "worst_classes": [
            {"class": names[c], "id": int(c), "f1": float(f1[c]), "support": int(support[c])} for c in worst
        ],
    }


def _confused_pairs(cm: np.ndarray, support: np.ndarray, names: list[str], n_pairs: int) -> list[dict[str, Any]]:
    a, b = np.triu_indices(cm.shape[0], k=1)  # every unordered pair of distinct classes once, a < b
    total = cm[a, b] + cm[b, a]
    keep = np.flatnonzero(total > 0)
    # stable sort keeps the (a, b) order among equal totals, so the ranking is deterministic
    top = keep[np.argsort(-total[keep], kind="stable")[:n_pairs]]
    return [
        {
            "a": names[a[i]],
            "b": names[b[i]],
            "a_id": int(a[i]),
            "b_id": int(b[i]),
            "a_as_b": int(cm[a[i], b[i]]),
            "b_as_a": int(cm[b[i], a[i]]),
            "total": int(total[i]),
            "rate": float(total[i] / (support[a[i]] + support[b[i]])),
        }
        for i in top
    ]


def _true_rank(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of the true class per row: classes scoring higher, plus tied classes with a lower id."""
    ranks = np.empty(len(labels), dtype=np.int64)
    ids = np.arange(logits.shape[1])
    for s in range(0, len(labels), _CHUNK):
        z, y = logits[s : s + _CHUNK], labels[s : s + _CHUNK]
        true = z[np.arange(len(y)), y][:, None]  # (b, 1)
        ranks[s : s + _CHUNK] = (z > true).sum(1) + ((z == true) & (ids[None, :] < y[:, None])).sum(1)
    return ranks


def _validate(logits: Any, labels: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise StillroomError(f"{fn}: logits must be a non-empty 2-D array (N, K), got shape {logits.shape}")
    if not np.issubdtype(logits.dtype, np.number) or not np.isfinite(logits).all():
        raise StillroomError(f"{fn}: logits must be finite numbers (dtype {logits.dtype})")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise StillroomError(f"{fn}: labels must have shape ({logits.shape[0]},) to match logits, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise StillroomError(f"{fn}: labels must be integer class ids, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise StillroomError(
            f"{fn}: labels must be in 0..{logits.shape[1] - 1} (logits has {logits.shape[1]} columns), "
            f"got {labels.min()}..{labels.max()}"
        )
    return logits, labels.astype(np.int64, copy=False)


def _check_k(k: Any, fn: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise StillroomError(f"{fn}: k must be a positive integer, got {k!r}")
    return int(k)
