"""Teacher selection before distillation (seed 004; REFERENCE 3): score teachers, then check the scores.

Per teacher, on a held-out split without augmentation (raw logits z, sorted z_(1) >= z_(2) >= ...):

- ``tac``: top-1 accuracy (Cho & Hariharan's "teacher accuracy");
- ``ssp``: mean over samples of the standard deviation (ddof 0) of the K-1 non-top-1 softmax probabilities
  (Tan et al.'s statistics of soft predictions; higher = more spread in the secondary classes);
- ``r12``: mean of z_(1) / z_(2) over the samples with z_(2) > 0 (seed 004's R12). The ratio is meaningless when
  the second logit is <= 0 (its sign flips, it explodes near 0), so those samples are excluded and counted
  (``r12_n_excluded``, ``r12_excluded_fraction``); nan (with a warning) when every sample is excluded;
- ``margin``: mean z_(1) - z_(2), the shift-invariant version of the same overconfidence probe;
- ``logprob_gap``: mean log p_(1) - log p_(2), from log_softmax. For softmax outputs this equals ``margin``
  exactly (the normaliser cancels); it is reported because REFERENCE 3 asks for it, and as a check;
- ``prob_gap``: mean p_(1) - p_(2), the probability-space gap, which does differ from the margin (bounded);
- ``ece``: expected calibration error of the top-label confidence, 15 equal-width bins [lo, hi), last closed
  (REFERENCE 4);  ``nll``: mean negative log-likelihood from log_softmax.

Seed 004 expects less overconfident teachers (lower r12 / margin / gaps) to teach better: ``DIRECTIONS`` gives the
direction in which each metric is expected to favour a teacher, used for the rankings and for ``rho_oriented``
(positive when the metric ranks the students the way the hypothesis predicts). ``validate_selection`` measures
that with Spearman's rank correlation between each metric and the accuracy of the student distilled from each
teacher (seed 004's analysis; scipy.stats.spearmanr).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax
from scipy.stats import rankdata, spearmanr

from stillroom._io import StillroomError, read_json

__all__ = ["METRICS", "DIRECTIONS", "teacher_scores", "score_teachers", "validate_selection"]

#: metric -> "higher" or "lower": which end is expected to mark the better teacher
DIRECTIONS: dict[str, str] = {
    "tac": "higher",
    "ssp": "higher",
    "r12": "lower",
    "margin": "lower",
    "logprob_gap": "lower",
    "prob_gap": "lower",
    "ece": "lower",
    "nll": "lower",
}
METRICS = tuple(DIRECTIONS)
ECE_BINS = 15
EXACT_P_MAX_N = 8  # 8! = 40,320 permutations: exact in well under a second


def _ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """sum_b (n_b / N) |accuracy_b - mean confidence_b| over equal-width bins [lo, hi), the last one closed."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="right" puts a value equal to an edge into the bin it opens; 1.0 goes back into the last bin
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins)
        - np.bincount(bins, weights=confidence, minlength=n_bins)
    )  # per bin: |sum correct - sum confidence| = n_b |acc_b - conf_b|
    return float(gap.sum() / count.sum())


def teacher_scores(logits: Any, labels: Any) -> dict[str, Any]:
    """Selection metrics of one teacher from its raw ``logits`` (N, K >= 2) and ``labels`` (N,); see module doc."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise StillroomError(f"teacher_scores: logits must be (N, K) with N >= 1, K >= 2, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise StillroomError("teacher_scores: logits must be finite")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise StillroomError(f"teacher_scores: labels must be ({z.shape[0]},) class ids in 0..{z.shape[1] - 1}")
    n = z.shape[0]
    order = np.argsort(-z, axis=1, kind="stable")  # ties: lower class id first, as np.argmax
    top1, top2 = order[:, 0], order[:, 1]
    rows = np.arange(n)
    z1, z2 = z[rows, top1], z[rows, top2]
    log_p = log_softmax(z, axis=1)
    p = np.exp(log_p)
    secondary = np.delete(p, top1 + rows * z.shape[1]).reshape(n, -1)  # (N, K-1): drop each row's top-1 entry
    correct = top1 == y
    keep = z2 > 0
    if keep.any():
        r12 = float(np.mean(z1[keep] / z2[keep]))
    else:
        warnings.warn("teacher_scores: every sample has a second logit <= 0; r12 is nan", stacklevel=2)
        r12 = math.nan
    conf = p[rows, top1]
    return {
        "n": int(n),
        "tac": float(correct.mean()),
        "ssp": float(secondary.std(axis=1).mean()),
        "r12": r12,
        "r12_n_excluded": int(n - keep.sum()),
        "r12_excluded_fraction": float(1.0 - keep.mean()),
        "margin": float(np.mean(z1 - z2)),
        "logprob_gap": float(np.mean(log_p[rows, top1] - log_p[rows, top2])),
        "prob_gap": float(np.mean(conf - p[rows, top2])),
        "ece": _ece(conf, correct),
        "nll": float(-log_p[rows, y].mean()),
    }


def _exact_p(x: np.ndarray, y: np.ndarray) -> float | None:
    """Two-sided permutation p-value of Spearman's rho over all n! pairings (None for n > EXACT_P_MAX_N).

    scipy's p-value uses a t approximation that is meaningless for a handful of teachers (rho = 1 with n = 3
    gives p = 0; the exact value is 1/3), hence this one beside it.
    """
    n = len(x)
    if n > EXACT_P_MAX_N:
        return None
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean()), ry - ry.mean()
    perms = ry[np.array(list(itertools.permutations(range(n))))]  # (n!, n)
    rho = perms @ rx / np.linalg.norm(ry)  # Pearson correlation of ranks, for every pairing
    return float(np.mean(np.abs(rho) >= abs(rho[0]) - 1e-12))  # rho[0]: the identity permutation, observed


def _rankings(entries: list[dict[str, Any]], key: str) -> dict[str, list[str]]:
    """metric -> ``key`` of the entries from the expected best to the expected worst teacher (nan last)."""
    out = {}
    for metric, direction in DIRECTIONS.items():
        vals = np.array([e[metric] if e[metric] is not None else np.nan for e in entries], dtype=np.float64)
        signed = -vals if direction == "higher" else vals
        order = np.argsort(np.where(np.isnan(signed), np.inf, signed), kind="stable")
        out[metric] = [entries[i][key] for i in order]
    return out


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def score_teachers(
    run_dirs: Sequence[str | Path], split: str = "val", weights: str = "best", batch_size: int = 256
) -> dict[str, Any]:
    """Score each teacher run on ``split`` of the index it was trained on (meta["index"]), no augmentation.

    Returns {"split", "weights", "directions", "teachers": [{"run", "arch", "weights_sha256", **teacher_scores}],
    "rankings": {metric: [run, ...] best first}}; nan values become None (strict JSON).
    """
    from stillroom.data.dataset import load_images
    from stillroom.data.index import load_index
    from stillroom.models.inference import predict_logits
    from stillroom.runs import load_run

    if not run_dirs:
        raise StillroomError("score_teachers: give at least one teacher run")
    cache: dict[str, tuple[Any, np.ndarray]] = {}  # index root -> (index, images): teachers often share one
    entries = []
    for run_dir in run_dirs:
        run = load_run(run_dir, weights)
        root = str(run.meta["index"])
        if root not in cache:
            index = load_index(root)
            cache[root] = (index, load_images(index))
        index, images = cache[root]
        if index.index_hash != run.meta.get("index_hash") or index.content_hash != run.meta.get("content_hash"):
            raise StillroomError(f"{run_dir}: {root} is no longer the index this teacher was trained on")
        rows = index.split_indices(split)
        if len(rows) == 0:
            raise StillroomError(f"{root}: split {split!r} is empty")
        k = index.num_classes  # a K+1 (OOD sink) model is scored on its K in-distribution classes
        logits = predict_logits(run.model, run.normalizer, images, rows, batch_size=batch_size)[:, :k]
        scores = teacher_scores(logits, index.labels[rows])
        entries.append(_json_safe({"run": str(run_dir), "arch": run.meta["arch"],
                                   "weights_sha256": run.weights_sha256, **scores}))  # fmt: skip
    return {
        "split": split,
        "weights": weights,
        "directions": dict(DIRECTIONS),
        "teachers": entries,
        "rankings": _rankings(entries, "run"),
    }


def _student_accuracy(run_dir: str | Path, split: str, weights: str, metric: str) -> float:
    """One student's accuracy; ``"a,b,c"`` names the seeds of one student and gives their mean (seed 004 §3 ranks
    teachers by the student they produce, which one seed measures with its seed noise)."""
    parts = [p for p in str(run_dir).split(",") if p]
    if len(parts) > 1:
        return float(np.mean([_student_accuracy(p, split, weights, metric) for p in parts]))
    metrics = read_json(Path(run_dir) / "metrics.json")
    try:
        value = metrics["splits"][split][weights][metric]
    except (KeyError, TypeError):
        raise StillroomError(
            f"{run_dir}/metrics.json: no splits.{split}.{weights}.{metric}; evaluate the student on {split!r} first"
        ) from None
    return float(value)


def validate_selection(
    teacher_runs: Sequence[str | Path],
    student_runs: Sequence[str | Path],
    metric_for_students: str = "top1",
    student_split: str = "test",
    student_weights: str = "best",
    split: str = "val",
    weights: str = "best",
    scores: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Spearman rank correlation of every teacher metric with the accuracy of the students distilled from them.

    Student i was distilled from teacher i; a comma-joined entry ``"seed0_run,seed1_run,..."`` stands for one student
    trained with several seeds and its accuracy is their mean. The student's accuracy is ``metrics.json``
    splits.<student_split>.<student_weights>.<metric_for_students>. Teacher metrics come from ``scores`` (a
    ``score_teachers`` result, e.g. its JSON, matched by run path) or are computed on ``split`` with ``weights``.
    At least 3 pairs.

    Returns {"n_pairs", "student_metric", "teacher_split", "pairs": [...], "correlations": {metric: {"rho",
    "p_value" (scipy, t approximation), "p_value_exact" (all pairings, n <= 8, else None), "direction",
    "rho_oriented", "n"}}}; rho_oriented > 0 when the metric orders the students as seed 004 expects.
    """
    teacher_runs, student_runs = [str(Path(p)) for p in teacher_runs], [str(Path(p)) for p in student_runs]
    if len(teacher_runs) != len(student_runs):
        raise StillroomError(
            f"validate_selection: {len(teacher_runs)} teachers but {len(student_runs)} students; "
            "student i must be distilled from teacher i"
        )
    if len(teacher_runs) < 3:
        raise StillroomError(f"validate_selection: need at least 3 teacher/student pairs, got {len(teacher_runs)}")
    accuracy = [_student_accuracy(s, student_split, student_weights, metric_for_students) for s in student_runs]
    if scores is None:
        scores = score_teachers(teacher_runs, split=split, weights=weights)
    by_run = {str(Path(e["run"])): e for e in scores["teachers"]}
    missing = [t for t in teacher_runs if t not in by_run]
    if missing:
        raise StillroomError(f"validate_selection: no scores for teacher run(s) {', '.join(missing)}")
    pairs = [
        {"teacher": t, "student": s, "student_accuracy": a, **{m: by_run[t][m] for m in METRICS}}
        for t, s, a in zip(teacher_runs, student_runs, accuracy, strict=True)
    ]
    correlations = {}
    for metric, direction in DIRECTIONS.items():
        x = np.array([p[metric] if p[metric] is not None else np.nan for p in pairs], dtype=np.float64)
        ok = ~np.isnan(x)
        acc = np.asarray(accuracy)[ok]
        if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(acc) == 0:
            warnings.warn(f"validate_selection: {metric}: fewer than 3 values or a constant input; rho is nan",
                          stacklevel=2)  # fmt: skip
            rho, pval, exact = math.nan, math.nan, None
        else:
            res = spearmanr(x[ok], acc)
            rho, pval, exact = float(res.statistic), float(res.pvalue), _exact_p(x[ok], acc)
        oriented = rho if direction == "higher" else -rho
        correlations[metric] = _json_safe({
            "rho": rho, "p_value": pval, "p_value_exact": exact, "direction": direction, "rho_oriented": oriented,
            "n": int(ok.sum()),
        })  # fmt: skip
    return {
        "n_pairs": len(pairs),
        "student_metric": f"{student_split}.{student_weights}.{metric_for_students}",
        "teacher_split": scores.get("split", split),
        "pairs": pairs,
        "correlations": correlations,
    }
