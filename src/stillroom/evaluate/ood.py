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
``tune_odin``, which only ever looks at validation rows. Feature-based scores ``knn``, ``ash``, ``scale`` and ``rmd``
come from pytorch-ood when it is installed (``evaluate.feature_ood``; KNN and RMD fitted on the run's ID training
rows); the report's ``feature_scores`` gives their parameters or why they were skipped.

Why one module of over 400 lines: the post-hoc scores, their metrics, ODIN tuning and the open-set report all work
on one run's ID/OOD row layout (``_RunData``).
"""

from __future__ import annotations

import io
import itertools
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
from stillroom.runs import Run, index_sink

#: per-row scores of one open-set report (``np.load``: ``is_ood`` and one array per score, higher = more ID)
OOD_SCORES_FILE = "ood_scores_{split}_{weights}{tag}.npz"  # tag: "" or "_" + another index's tag

__all__ = [
    "OOD_SCORES_FILE",
    "ood_metrics_name",
    "ood_source_tag",
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
    "evaluate_open_set",
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
    """A loaded run with its ID and OOD rows: model, normalizer, images and the K / sink layout, checked.

    OOD rows are either the sink-labelled rows (``recipe.sink_class`` = K) of ``index``, a merged index written by
    ``data merge-sink`` (seed 000 §2.5), or, with ``ood_index`` (an OOD dataset with the run's image size and
    channels), every row of the same split there; the ID rows are then the non-sink rows of ``index``. ``images``
    (the decoded images of ``index``) saves a second decode when the caller already has them.
    """

    def __init__(
        self,
        run_dir: str | Path,
        index: DatasetIndex | str | Path | None,
        weights: str,
        ood_index: DatasetIndex | str | Path | None = None,
        images: np.ndarray | None = None,
    ) -> None:
        from stillroom.data.dataset import load_images

        self.the_run = Run(run_dir)
        self.run = self.the_run.load(weights)
        self.weights = weights
        meta = self.run.meta
        self.index = index if isinstance(index, DatasetIndex) else load_index(index or meta["index"])
        recipe = self.index.recipe
        sink = index_sink(self.index)
        if ood_index is None and sink is None:
            raise StillroomError(
                f"{self.index.root}: not an ID + OOD index (no recipe sink_class); pass the merged index"
                " (`stillroom data merge-sink`) or the OOD dataset (--ood-index)"
            )
        self.k = self.index.num_classes if sink is None else sink
        n_out = self.the_run.layout.num_outputs
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
        self.images = load_images(self.index) if images is None else images
        self.ood_index: DatasetIndex | None = None
        self.ood_images: np.ndarray | None = None
        if ood_index is not None:
            self.ood_index = ood_index if isinstance(ood_index, DatasetIndex) else load_index(ood_index)
            # Only the image geometry must match: the run's own normalizer is applied to the OOD images (an OOD
            # build's own mean/std describe its pixels, not what the model expects).
            for key in ("size", "channels"):
                default = 1 if key == "channels" else None  # an index without "channels" is single-channel
                got, want = self.ood_index.recipe.get(key, default), meta["recipe"].get(key, default)
                if got != want:
                    raise StillroomError(f"{self.ood_index.root}: OOD images have {key}={got!r}, the run {want!r}")
            self.ood_images = load_images(self.ood_index)

    def source(self, split: str) -> str:
        """Where the OOD rows of ``split`` come from (recorded in the report)."""
        if self.ood_index is None:
            return f"{self.index.root} ({split}, rows labelled with sink class {self.k})"
        return f"{self.ood_index.root} ({split}, every row)"

    def parts(self, split: str, check: bool = True) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """``([(images, rows), ...], is_ood)`` of ``split``: the row blocks in order and the (N,) OOD mask over them.

        With ``check`` a split without both ID and OOD rows is an error naming the source.
        """
        rows = self.index.split_indices(split)
        is_ood = self.index.labels[rows] == self.k
        parts = [(self.images, rows)]
        if self.ood_index is not None:
            orows = self.ood_index.split_indices(split)
            # a merged index's own sink rows are dropped: OOD rows come from one source only
            parts = [(self.images, rows[~is_ood]), (self.ood_images, orows)]
            is_ood = np.r_[np.zeros(int((~is_ood).sum()), dtype=bool), np.ones(len(orows), dtype=bool)]
        if check and (is_ood.all() or not is_ood.any()):
            raise StillroomError(f"{self.source(split)}: split {split!r} needs both ID and OOD rows")
        return parts, is_ood

    def labels(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Labels of the rows of ``parts`` (K for every row of an OOD index)."""
        out = [self.index.labels[parts[0][1]]]
        if len(parts) > 1:
            out.append(np.full(len(parts[1][1]), self.k, dtype=self.index.labels.dtype))
        return np.concatenate(out)

    def logits(self, parts: list[tuple[np.ndarray, np.ndarray]], batch_size: int) -> np.ndarray:
        from stillroom.models.inference import predict_logits

        run = self.run
        out = [predict_logits(run.model, run.normalizer, im, rows, batch_size=batch_size) for im, rows in parts]
        return np.concatenate(out)

    def batches(self, parts: list[tuple[np.ndarray, np.ndarray]], batch_size: int) -> Iterable[Tensor]:
        from stillroom.models.inference import iter_batches

        return itertools.chain.from_iterable(
            iter_batches(im, rows, self.run.normalizer, batch_size) for im, rows in parts
        )

    @property
    def std(self) -> Tensor:
        return self.run.normalizer.std.flatten()


def _feature_scores(data: _RunData, parts: list, batch_size: int) -> dict[str, Any]:
    """KNN / ASH / SCALE / RMD through pytorch-ood (``evaluate.feature_ood``); KNN fitted on the ID train rows of the
    index (clean images), never on the rows it scores; RMD on the same rows with their labels and, for silhouettes,
    their ``style`` views. An index without train rows (an evaluation set such as the
    species drawn by another artist, ``data build style-icons``) gets KNN fitted on the train rows of the run's own
    index: what the model was trained on, as a deployment would."""
    from stillroom.data.dataset import load_images
    from stillroom.evaluate.feature_ood import feature_scores, has_style_views, style_view_batches
    from stillroom.models.inference import iter_batches

    index, images = data.index, data.images
    train = index.split_indices("train")
    if len(train) == 0 and not data.the_run.trained_on(index):
        index = load_index(data.run.meta["index"])
        images, train = load_images(index), index.split_indices("train")
    train = train[index.labels[train] < data.k]
    if len(train) == 0:
        return {"skipped": f"{index.root}: no ID train rows to fit KNN on"}
    norm = data.run.normalizer
    views = (lambda: style_view_batches(images, train, norm, batch_size)) if has_style_views(index.recipe) else None
    out = feature_scores(
        data.run.model,
        lambda: data.batches(parts, batch_size),
        lambda: iter_batches(images, train, norm, batch_size),
        num_id_classes=data.k,
        fit_labels=index.labels[train],
        fit_views=views,
    )
    if index is not data.index and "params" in out:
        out["params"]["knn"]["fit_index"] = str(index.root)
    return out


def _odin_all(data: _RunData, parts: list, temperature: float, eps: float, batch_size: int) -> np.ndarray:
    model = data.run.model.eval()
    out = [
        odin_score(model, x, data.std, temperature, eps, num_classes=data.k).cpu()
        for x in data.batches(parts, batch_size)
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
    ood_index: DatasetIndex | str | Path | None = None,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Open-set report of a run's ``weights`` on ``split``: ID and OOD rows of a merged index (default: the run's
    index), or ID rows of ``index`` and every ``split`` row of ``ood_index`` (REFERENCE 4; seed 000 §3.2).

    Closed-set metrics (top-1, top-5, macro-F1) use the ID rows and the K ID columns (a K+1 model also gets
    ``top1_with_sink``: argmax over all K+1 outputs, a sink prediction on an ID row counting as an error, the
    trainer's ``val_id_top1``); every score of ``SCORES`` (``sink`` only for K+1 models) and ``odin`` gets
    ``ood_metrics``; a K+1 model also gets the OOD rejection rate (seed 000 Table 1: the fraction of OOD rows whose
    argmax over K+1 is the sink) and the ID false-rejection rate. ``odin_tuned_on`` only records where
    ``odin_T``/``odin_eps`` came from (``tune_odin``: the validation split).
    """
    if odin_tuned_on == "test":
        raise StillroomError("ODIN parameters tuned on test data are not allowed (REFERENCE 4): tune on val")
    data = _RunData(run_dir, index, weights, ood_index=ood_index, images=images)
    return _report_from(data, split, odin_T, odin_eps, odin_tuned_on, batch_size)[0]


def _report_from(
    data: _RunData, split: str, odin_t: float, odin_eps: float, odin_tuned_on: str | None, batch_size: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(report, per-row arrays: ``is_ood`` and every score, in row order) of ``split``."""
    from stillroom.evaluate.metrics import classification_report

    if odin_tuned_on == "test":
        raise StillroomError("ODIN parameters tuned on test data are not allowed (REFERENCE 4): tune on val")
    parts, is_ood = data.parts(split)
    k = data.k
    logits = data.logits(parts, batch_size)
    labels = data.labels(parts)
    closed = classification_report(logits[~is_ood, :k], labels[~is_ood], data.index.classes[:k], n_pairs=0)
    z = torch.from_numpy(logits)
    scores: dict[str, np.ndarray] = {
        "msp": msp(z[:, :k]).numpy(),
        "maxlogit": max_logit(z[:, :k]).numpy(),
        "energy": energy(z[:, :k]).numpy(),
        "odin": _odin_all(data, parts, odin_t, odin_eps, batch_size),
    }
    if data.has_sink:
        scores["sink"] = sink_score(z).numpy()
    feature = _feature_scores(data, parts, batch_size)
    scores.update(feature.pop("scores", {}))
    closed_set = {key: closed[key] for key in ("n", "top1", "top5", "macro_f1")}
    pred = logits.argmax(axis=1)
    if data.has_sink:
        closed_set["top1_with_sink"] = float((pred[~is_ood] == labels[~is_ood]).mean())
    out: dict[str, Any] = {
        "run": str(data.run.path),
        "weights": data.weights,
        "weights_sha256": data.run.weights_sha256,
        "index": str(data.index.root),
        "index_hash": data.index.index_hash,
        "ood_source": data.source(split),
        "trained_on_this_index": data.run.meta.get("index_hash") == data.index.index_hash,
        "split": split,
        "num_id_classes": k,
        "has_sink": data.has_sink,
        "n_id": int((~is_ood).sum()),
        "n_ood": int(is_ood.sum()),
        "closed_set": closed_set,
        "conventions": CONVENTIONS,
        "odin": {"temperature": float(odin_t), "eps": float(odin_eps), "tuned_on": odin_tuned_on},
        "scores": {name: ood_metrics(s[~is_ood], s[is_ood]) for name, s in scores.items()},
        "feature_scores": feature,  # parameters of knn / ash / scale / rmd, or why they were skipped
    }
    if data.has_sink:
        out["ood_rejection_rate"] = float((pred[is_ood] == k).mean())
        out["id_false_rejection_rate"] = float((pred[~is_ood] == k).mean())
    return out, {"is_ood": is_ood, **scores}


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
    ood_index: DatasetIndex | str | Path | None = None,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Tune ODIN's T and eps on the ``val`` rows (ID and OOD, found as in ``ood_report``); refuses the test split
    (REFERENCE 4: ODIN is tuned on validation data only)."""
    if split == "test":
        raise StillroomError("tune_odin: never tune on the test split (REFERENCE 4); use val")
    data = _RunData(run_dir, index, weights, ood_index=ood_index, images=images)
    return _tune_from(data, split, temperatures, epsilons, batch_size)


def _tune_from(
    data: _RunData,
    split: str,
    temperatures: Sequence[float] | None,
    epsilons: Sequence[float] | None,
    batch_size: int,
) -> dict[str, Any]:
    if split == "test":
        raise StillroomError("tune_odin: never tune on the test split (REFERENCE 4); use val")
    parts, is_ood = data.parts(split)
    kwargs = {k: v for k, v in (("temperatures", temperatures), ("epsilons", epsilons)) if v is not None}
    tuner = ODINTuner(**kwargs).fit(
        data.run.model.eval(), lambda: data.batches(parts, batch_size), is_ood, data.std, num_classes=data.k
    )
    return {"split": split, "weights": data.weights, **tuner.result()}


def ood_source_tag(ood_index: DatasetIndex) -> str:
    """``vs_<OOD dataset dir name>-<index hash[:8]>``: names the open-set files of one separate OOD set
    (``ood_metrics_<tag>.json``), so that a run scored against several keeps each."""
    return f"vs_{ood_index.root.name}-{ood_index.index_hash[:8]}"


def ood_metrics_name(tag: str = "") -> str:
    """``ood_metrics.json``, or ``ood_metrics_<tag>.json`` for ID rows from another dataset than the run's own."""
    from stillroom.evaluate.ood_table import OOD_METRICS_FILE

    return f"ood_metrics_{tag}.json" if tag else OOD_METRICS_FILE


def evaluate_open_set(
    run_dir: str | Path,
    split: str = "test",
    weights: Sequence[str] = ("best",),
    index: DatasetIndex | str | Path | None = None,
    ood_index: DatasetIndex | str | Path | None = None,
    images: np.ndarray | None = None,
    tune: bool = False,
    val_split: str = "val",
    odin_T: float = ODIN_TEMPERATURE,  # noqa: N803 (the paper's symbol)
    odin_eps: float = ODIN_EPS,
    temperatures: Sequence[float] | None = None,
    epsilons: Sequence[float] | None = None,
    batch_size: int = 256,
    tag: str = "",
    keep_as: str = "",
) -> dict[str, Any]:
    """``ood_report`` of every ``weights`` on ``split``, merged into ``RUN/ood_metrics.json``; returns its content.

    What ``stillroom evaluate RUN --ood-split SPLIT`` (and its alias ``evaluate-ood``) runs. With ``tune``, ODIN's
    (T, eps) are first tuned on ``val_split`` (REFERENCE 4: validation only; ``ODINTuner`` grid, or
    ``temperatures`` x ``epsilons``) and the result is stored under ``odin_tuning``; when ``val_split`` has no OOD
    rows the paper's T = 1000, eps = 0.0014 are used and ``odin_tuning`` says why. File layout (read by
    ``ood-table`` and ``report``): ``{"splits": {split: {weights: report}}, "odin_tuning": {weights: ...}}``.
    With ``tag`` (ID rows from another dataset than the run's own), the file is ``ood_metrics_<tag>.json`` and the
    scores files end in ``_<tag>`` instead: the run's own open-set figures are left alone.
    With ``keep_as`` the same reports are also merged into ``ood_metrics_<keep_as>.json`` (scores files ending in
    ``_<keep_as>``): ``ood_metrics.json`` holds the latest OOD set scored (``ood-table`` and ``report`` read it),
    and the per-set copy keeps each OOD set's figures when a run is scored against several, one after the other.
    """
    from stillroom._io import atomic_write_bytes, atomic_write_json, read_json

    tags = [tag] + ([keep_as] if keep_as and keep_as != tag else [])
    paths = [Path(run_dir) / ood_metrics_name(t) for t in tags]
    outs: list[dict[str, Any]] = [read_json(p) if p.is_file() else {} for p in paths]
    for o in outs:
        o.setdefault("splits", {})
    for w in weights:
        data = _RunData(run_dir, index, w, ood_index=ood_index, images=images)
        t, eps, tuned_on = odin_T, odin_eps, None
        if tune:
            _, val_ood = data.parts(val_split, check=False)
            if val_ood.any() and not val_ood.all():
                tuned = _tune_from(data, val_split, temperatures, epsilons, batch_size)
                t, eps, tuned_on = tuned["temperature"], tuned["eps"], val_split
            else:  # nothing to tune on: say so instead of silently tuning on test or failing the whole evaluation
                tuned = {"split": val_split, "weights": w, "skipped": f"{data.source(val_split)}: no ID + OOD rows"}
            for o in outs:
                o.setdefault("odin_tuning", {})[w] = tuned
        report, arrays = _report_from(data, split, t, eps, tuned_on, batch_size)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        for t_, o in zip(tags, outs, strict=True):
            # the per-row scores, so that reports draw ROC curves and histograms from files, not from the model
            rep = dict(report, scores_file=OOD_SCORES_FILE.format(split=split, weights=w, tag=f"_{t_}" if t_ else ""))
            atomic_write_bytes(Path(run_dir) / rep["scores_file"], buf.getvalue())
            o["splits"].setdefault(split, {})[w] = rep
    for p, o in zip(paths, outs, strict=True):
        atomic_write_json(p, o)
    return outs[0]
