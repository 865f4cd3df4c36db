"""Open-set evaluation: OOD scores, their ranking metrics, and the report of a run (REFERENCE 4; seed 000 §3.1-3.3).

Conventions (REFERENCE 4), repeated in every report under ``"conventions"``:

- every score is oriented so that **higher = more in-distribution**;
- AUROC and AUPR-In take **in-distribution as the positive class**; AUPR-Out takes OOD as positive and ranks by the
  negated score; both AUPRs are scikit-learn's average precision. Scores are ranked as they are: never squashed
  through a sigmoid (torchmetrics does that to scores outside [0, 1], which breaks energy scores);
- FPR@95TPR: accept a sample when its score is >= a threshold; the threshold is the highest one that accepts
  >= 95% of ID samples, and FPR is the fraction of OOD samples accepted there. Tied scores are accepted together
  (never split at random), so ties at the threshold count fully against FPR: the figure is reproducible and, with
  ties, pessimistic. Computed from ``sklearn.metrics.roc_curve(drop_intermediate=False)``.

Scores (``SCORES`` registry, pure functions of logits (B, K) -> (B,)): ``msp`` max softmax probability;
``maxlogit``; ``energy`` = T logsumexp(z / T), T = 1; ``sink`` = 1 - p_sink (softmax over K+1, sink = last column).
For a K+1 model the first three see the K ID columns only (the sink has its own score). ``odin`` needs the model:
the input is moved against the sign of the gradient of CE(z / T, predicted class), by ``eps`` in [0, 1] image
units, i.e. ``eps / std`` in the normalized input the model sees (std of the run's own preprocessing recipe), then
scored with MSP of z / T (Liang et al. 2018). T = 1000, eps = 0.0014 (seed 000 §3.2) unless tuned with
``tune_odin``, which only ever looks at validation rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stillroom._io import StillroomError
from stillroom._registry import Registry
from stillroom.data.index import DatasetIndex, load_index

__all__ = [
    "SCORES",
    "CONVENTIONS",
    "msp",
    "max_logit",
    "energy",
    "sink_score",
    "odin_score",
    "ood_metrics",
    "ODINTuner",
    "ood_report",
    "tune_odin",
]

SCORES: Registry[Callable[[Tensor], Tensor]] = Registry("OOD score")
CONVENTIONS = {
    "orientation": "higher score = more in-distribution",
    "auroc_positive": "in-distribution",
    "aupr_in_positive": "in-distribution (average precision of the score)",
    "aupr_out_positive": "OOD (average precision of the negated score)",
    "fpr_at_95_tpr": "fraction of OOD accepted at the highest threshold accepting >= 95% of ID (score >= t accepted;"
    " tied scores accepted together)",
    "sigmoid": "never applied; scores ranked as they are",
}
ODIN_TEMPERATURE = 1000.0
ODIN_EPS = 0.0014
TPR_LEVEL = 0.95


def _check_logits(logits: Tensor, name: str) -> None:
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] < 1:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise StillroomError(f"{name}: logits must be a (B, K) tensor, got {got}")


@SCORES.register("msp")
def msp(logits: Tensor) -> Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel 2017): ``max_k softmax(z)_k``, shape (B,)."""
    _check_logits(logits, "msp")
    return F.softmax(logits, dim=1).amax(dim=1)


@SCORES.register("maxlogit")
def max_logit(logits: Tensor) -> Tensor:
    """Maximum logit (Hendrycks et al. 2022): ``max_k z_k``, shape (B,)."""
    _check_logits(logits, "maxlogit")
    return logits.amax(dim=1)


@SCORES.register("energy")
def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy (Liu et al. 2020): ``T logsumexp(z / T)`` (higher = more ID), shape (B,)."""
    _check_logits(logits, "energy")
    if not temperature > 0:
        raise StillroomError(f"energy: temperature must be > 0, got {temperature}")
    return temperature * torch.logsumexp(logits / temperature, dim=1)


@SCORES.register("sink")
def sink_score(logits: Tensor) -> Tensor:
    """``1 - p_sink`` for a K+1 model whose last column is the OOD sink (seed 000 §2.4), shape (B,)."""
    _check_logits(logits, "sink")
    if logits.shape[1] < 2:
        raise StillroomError("sink: a sink model has at least one ID class and the sink column")
    return 1.0 - F.softmax(logits, dim=1)[:, -1]


def odin_score(
    model: nn.Module,
    x: Tensor,
    std: Sequence[float] | Tensor,
    temperature: float = ODIN_TEMPERATURE,
    eps: float = ODIN_EPS,
    num_classes: int | None = None,
) -> Tensor:
    """ODIN (Liang et al. 2018) on a normalized batch ``x`` (B, C, H, W); returns (B,) scores.

    ``x' = x - (eps / std) * sign(d CE(z[:, :K] / T, argmax z[:, :K]) / dx)``, score ``max softmax(z'[:, :K] / T)``.
    ``std`` is the per-channel normalization std, so ``eps`` is in [0, 1] image units. ``num_classes`` = K: the
    ID columns (None: all). The model must be in eval mode (BatchNorm must not mix samples); with eps = 0 and
    T = 1 the score equals ``msp``.
    """
    if model.training:
        raise StillroomError("odin_score: put the model in eval mode first (BatchNorm statistics must be fixed)")
    if not temperature > 0 or not eps >= 0:
        raise StillroomError(f"odin_score: need temperature > 0 and eps >= 0, got T={temperature}, eps={eps}")
    grad = _odin_gradient_sign(model, x, temperature, num_classes)
    return _odin_scores_at(model, x, grad, std, temperature, eps, num_classes)


def _odin_gradient_sign(model: nn.Module, x: Tensor, temperature: float, num_classes: int | None) -> Tensor:
    k = num_classes
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(xg)[:, :k].float() / temperature  # (B, K)
        # sum, not mean: per-sample gradients do not depend on the batch size (eval mode: samples independent)
        loss = F.cross_entropy(z, z.argmax(dim=1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad.sign()


@torch.no_grad()
def _odin_scores_at(
    model: nn.Module,
    x: Tensor,
    grad_sign: Tensor,
    std: Sequence[float] | Tensor,
    temperature: float,
    eps: float,
    num_classes: int | None,
) -> Tensor:
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
    if std_t.shape[1] not in (1, x.shape[1]):
        raise StillroomError(f"odin_score: std has {std_t.shape[1]} values for {x.shape[1]} input channel(s)")
    z = model(x - eps * grad_sign / std_t)[:, :num_classes].float()
    return F.softmax(z / temperature, dim=1).amax(dim=1)


# --- metrics --------------------------------------------------------------------------------------------------


def _as_scores(values: Any, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise StillroomError(f"{name}: expected a non-empty 1-D array of scores, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise StillroomError(f"{name}: scores must be finite numbers")
    return arr.astype(np.float64)


def ood_metrics(id_scores: Any, ood_scores: Any, tpr_level: float = TPR_LEVEL) -> dict[str, Any]:
    """AUROC, AUPR-In, AUPR-Out and FPR at ``tpr_level`` TPR of ``id_scores`` (n_id,) vs ``ood_scores`` (n_ood,).

    Higher score = more ID (module docstring). Returns ``{"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr",
    "threshold_at_95_tpr", "tpr_at_threshold", "n_id", "n_ood"}`` (the two 95 keys name ``tpr_level``).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s_id, s_ood = _as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores")
    if not 0 < tpr_level <= 1:
        raise StillroomError(f"tpr_level must be in (0, 1], got {tpr_level}")
    y = np.concatenate([np.ones(len(s_id), dtype=np.int64), np.zeros(len(s_ood), dtype=np.int64)])
    s = np.concatenate([s_id, s_ood])
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)  # thresholds decreasing, accept s >= t
    # first (= highest) threshold reaching the level; the tolerance absorbs 19/20 vs the float 0.95
    i = int(np.flatnonzero(tpr >= tpr_level - 1e-12)[0])
    pct = round(100 * tpr_level)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(y, s)),
        "aupr_out": float(average_precision_score(1 - y, -s)),
        f"fpr_at_{pct}_tpr": float(fpr[i]),
        f"threshold_at_{pct}_tpr": float(thresholds[i]),
        "tpr_at_threshold": float(tpr[i]),
        "n_id": int(len(s_id)),
        "n_ood": int(len(s_ood)),
    }


# --- runs -----------------------------------------------------------------------------------------------------


class _RunData:
    """A loaded run on a merged index: model, normalizer, images and the K / sink layout, checked."""

    def __init__(self, run_dir: str | Path, index: DatasetIndex | str | Path | None, weights: str) -> None:
        from stillroom.data.dataset import load_images
        from stillroom.train.checkpoint import load_run

        self.run = load_run(run_dir, weights)
        meta = self.run.meta
        if index is None:
            index = meta["index"]
        self.index = index if isinstance(index, DatasetIndex) else load_index(index)
        recipe = self.index.recipe
        if "sink_class" not in recipe:
            raise StillroomError(
                f"{self.index.root}: not an ID + OOD index (no recipe sink_class); pass the merged index"
                " (`stillroom data merge-sink`)"
            )
        self.k = int(recipe["sink_class"])
        n_out = int(meta["num_classes"])
        if n_out not in (self.k, self.k + 1):
            raise StillroomError(
                f"{self.run.path}: the model has {n_out} outputs; on this index it needs {self.k} (ID only) or"
                f" {self.k + 1} (with the sink)"
            )
        if list(meta["classes"][: self.k]) != self.index.classes[: self.k]:
            raise StillroomError(f"{self.run.path}: the model's ID classes differ from the index's")
        for key in ("size", "channels", "mean", "std"):
            if meta["recipe"].get(key) != recipe.get(key):
                raise StillroomError(
                    f"{self.index.root}: preprocessing {key}={recipe.get(key)!r} differs from the run's "
                    f"{meta['recipe'].get(key)!r}; the model would see inputs it was not trained on"
                )
        self.has_sink = n_out == self.k + 1
        self.images = load_images(self.index)

    def rows(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.index.split_indices(split)
        is_ood = self.index.labels[rows] == self.k
        if is_ood.all() or not is_ood.any():
            raise StillroomError(f"{self.index.root}: split {split!r} needs both ID and OOD rows")
        return rows, is_ood

    def batches(self, rows: np.ndarray, batch_size: int) -> Iterable[Tensor]:
        from stillroom.models.inference import iter_batches

        return iter_batches(self.images, rows, self.run.normalizer, batch_size)

    @property
    def std(self) -> Tensor:
        return self.run.normalizer.std.flatten()


def _odin_all(data: _RunData, rows: np.ndarray, temperature: float, eps: float, batch_size: int) -> np.ndarray:
    model = data.run.model.eval()
    out = [
        odin_score(model, x, data.std, temperature, eps, num_classes=data.k).cpu()
        for x in data.batches(rows, batch_size)
    ]
    return torch.cat(out).numpy()


def ood_report(
    run_dir: str | Path,
    index: DatasetIndex | str | Path | None = None,
    split: str = "test",
    weights: str = "best",
    odin_T: float = ODIN_TEMPERATURE,  # noqa: N803 (the paper's symbol)
    odin_eps: float = ODIN_EPS,
    batch_size: int = 256,
    odin_tuned_on: str | None = None,
) -> dict[str, Any]:
    """Open-set report of a run's ``weights`` on ``split`` of a merged ID + OOD index (default: the run's index).

    Closed-set metrics (top-1, top-5, macro-F1) use the ID rows and the K ID columns; every score of ``SCORES``
    (``sink`` only for K+1 models) and ``odin`` gets ``ood_metrics``; a K+1 model also gets the OOD rejection rate
    (seed 000 Table 1: the fraction of OOD rows whose argmax over K+1 is the sink) and the ID false-rejection rate.
    ``odin_tuned_on`` only records where ``odin_T``/``odin_eps`` came from (``tune_odin``: "val").
    """
    from stillroom.evaluate.metrics import classification_report
    from stillroom.models.inference import predict_logits

    if odin_tuned_on == "test":
        raise StillroomError("ODIN parameters tuned on test data are not allowed (REFERENCE 4): tune on val")
    data = _RunData(run_dir, index, weights)
    rows, is_ood = data.rows(split)
    k = data.k
    logits = predict_logits(data.run.model, data.run.normalizer, data.images, rows, batch_size=batch_size)
    labels = data.index.labels[rows]
    closed = classification_report(logits[~is_ood, :k], labels[~is_ood], data.index.classes[:k], n_pairs=0)
    z = torch.from_numpy(logits)
    scores: dict[str, np.ndarray] = {
        "msp": msp(z[:, :k]).numpy(),
        "maxlogit": max_logit(z[:, :k]).numpy(),
        "energy": energy(z[:, :k]).numpy(),
        "odin": _odin_all(data, rows, odin_T, odin_eps, batch_size),
    }
    if data.has_sink:
        scores["sink"] = sink_score(z).numpy()
    out: dict[str, Any] = {
        "run": str(data.run.path),
        "weights": weights,
        "weights_sha256": data.run.weights_sha256,
        "index": str(data.index.root),
        "index_hash": data.index.index_hash,
        "trained_on_this_index": data.run.meta.get("index_hash") == data.index.index_hash,
        "split": split,
        "num_id_classes": k,
        "has_sink": data.has_sink,
        "n_id": int((~is_ood).sum()),
        "n_ood": int(is_ood.sum()),
        "closed_set": {key: closed[key] for key in ("n", "top1", "top5", "macro_f1")},
        "conventions": CONVENTIONS,
        "odin": {"temperature": float(odin_T), "eps": float(odin_eps), "tuned_on": odin_tuned_on},
        "scores": {name: ood_metrics(s[~is_ood], s[is_ood]) for name, s in scores.items()},
    }
    if data.has_sink:
        pred = logits.argmax(axis=1)
        out["ood_rejection_rate"] = float((pred[is_ood] == k).mean())
        out["id_false_rejection_rate"] = float((pred[~is_ood] == k).mean())
    return out


# --- ODIN tuning (validation only) ----------------------------------------------------------------------------


class ODINTuner:
    """Grid search of ODIN's (T, eps) by validation AUROC (ties: first in grid order, T-major).

    ``fit`` returns self; fitted state: ``temperature_``, ``eps_``, ``auroc_`` and ``grid_`` (every point's AUROC).
    One gradient pass per temperature (the perturbation direction does not depend on eps), one forward per eps.
    """

    def __init__(
        self,
        temperatures: Sequence[float] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        epsilons: Sequence[float] = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.003, 0.004),
    ) -> None:
        if not temperatures or not epsilons:
            raise StillroomError("ODINTuner: temperatures and epsilons must be non-empty")
        if any(not t > 0 for t in temperatures) or any(not e >= 0 for e in epsilons):
            raise StillroomError("ODINTuner: temperatures must be > 0 and epsilons >= 0")
        self.temperatures = [float(t) for t in temperatures]
        self.epsilons = [float(e) for e in epsilons]

    def fit(
        self,
        model: nn.Module,
        batches: Callable[[], Iterable[Tensor]],
        is_ood: np.ndarray,
        std: Sequence[float] | Tensor,
        num_classes: int | None = None,
    ) -> ODINTuner:
        """``batches()`` yields normalized validation batches in row order; ``is_ood`` (N,) marks OOD rows."""
        is_ood = np.asarray(is_ood, dtype=bool)
        if model.training:
            raise StillroomError("ODINTuner.fit: put the model in eval mode first")
        grid = []
        for temp in self.temperatures:
            per_eps: dict[float, list[Tensor]] = {e: [] for e in self.epsilons}
            for x in batches():
                sign = _odin_gradient_sign(model, x, temp, num_classes)
                for e in self.epsilons:
                    per_eps[e].append(_odin_scores_at(model, x, sign, std, temp, e, num_classes).cpu())
            for e in self.epsilons:
                s = torch.cat(per_eps[e]).numpy()
                if len(s) != len(is_ood):
                    raise StillroomError(f"ODINTuner.fit: {len(s)} scores for {len(is_ood)} is_ood entries")
                grid.append({"temperature": temp, "eps": e, "auroc": ood_metrics(s[~is_ood], s[is_ood])["auroc"]})
        best = max(grid, key=lambda g: g["auroc"])  # max keeps the first of equal values
        self.grid_, self.temperature_, self.eps_, self.auroc_ = grid, best["temperature"], best["eps"], best["auroc"]
        return self

    def result(self) -> dict[str, Any]:
        if not hasattr(self, "grid_"):
            raise StillroomError("ODINTuner: call fit(...) before reading the result")
        return {"temperature": self.temperature_, "eps": self.eps_, "val_auroc": self.auroc_, "grid": self.grid_}


def tune_odin(
    run_dir: str | Path,
    index: DatasetIndex | str | Path | None = None,
    split: str = "val",
    weights: str = "best",
    temperatures: Sequence[float] | None = None,
    epsilons: Sequence[float] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Tune ODIN's T and eps on the ``val`` rows (ID and OOD) of a merged index; refuses the test split."""
    if split == "test":
        raise StillroomError("tune_odin: never tune on the test split (REFERENCE 4); use val")
    data = _RunData(run_dir, index, weights)
    rows, is_ood = data.rows(split)
    kwargs = {k: v for k, v in (("temperatures", temperatures), ("epsilons", epsilons)) if v is not None}
    tuner = ODINTuner(**kwargs).fit(
        data.run.model.eval(), lambda: data.batches(rows, batch_size), is_ood, data.std, num_classes=data.k
    )
    return {"split": split, "weights": weights, **tuner.result()}
