"""Calibration of top-label confidence, and temperature scaling (REFERENCE 4; seed 001 §4.1.6, §5.2).

Metrics (pure functions over numpy arrays, computed in float64):

- ``ece`` = sum_b (n_b / n) |acc(B_b) - conf(B_b)| over ``n_bins`` (15) equal-width bins of the top-label
  confidence c_i = max_c p_ic. Bins are [lo, hi); the last one is closed, [14/15, 1], so c = 1.0 falls in it.
  torchmetrics puts c = 1.0 into a 16th bin of its own (``torch.bucketize(right=True)`` on 16 edges), so the two
  differ exactly when some confidences equal 1.0 and share the last bin with others (tests/test_calibration.py);
- ``mce`` = max over the **non-empty** bins of |acc - conf|;
- ``brier`` = (1/n) sum_i sum_c (p_ic - y_ic)^2: summed over classes, averaged over samples (range [0, 2]);
- ``nll`` = -(1/n) sum_i log p_i,y_i with log p from ``scipy.special.log_softmax`` of the logits, never log(softmax).

For a K+1 model (last output = OOD sink) pass ``num_id_classes=K``: the metrics use softmax over the first K logits,
which equals the K in-distribution probabilities renormalized to sum to one.

``TemperatureScaler`` (scikit-learn style, STYLE 6) replaces p by softmax(z / T):

- ``method="nll"``: T = exp(argmin NLL(z / e^u)) over u in [log 0.05, log 20] by bounded 1-D search
  (``scipy.optimize.minimize_scalar(method="bounded")``, Brent's method on log T, so T stays positive and the search
  is symmetric between sharpening and softening). If the optimum does not lower the validation NLL below T = 1, T = 1
  is kept;
- ``method="grid"``: seed 001 §5.2: T in {0.8, 0.9, 1.0, 1.1, 1.2}, chosen lexicographically by lowest NLL, then
  lowest ECE, then highest macro-F1 (``select_temperature``). Values are compared rounded to ``TIE_DECIMALS`` (4)
  decimals, the precision the seed reports; otherwise floating-point noise would make ties impossible. Dividing
  every logit by the same T > 0 never changes the argmax, so macro-F1 is the same for every T and the third key
  only ever decides in favour of the earlier grid entry; it is kept to follow the seed's rule as written.

The fitted temperature is stored with the model in ``RUN/calibration.json`` (one entry per weights file, with its
sha256, so a retrained model never silently reuses a stale T) and read back by ``load_temperature``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import f1_score

from stillroom._io import NotFittedError, StillroomError, atomic_write_json, read_json
from stillroom.runs import CALIBRATION_FILE, read_temperature

__all__ = [
    "CALIBRATION_FILE",
    "N_BINS",
    "TEMPERATURE_GRID",
    "NotFittedError",
    "TemperatureScaler",
    "calibration_metrics",
    "expected_calibration_error",
    "load_temperature",
    "select_temperature",
]

N_BINS = 15
TEMPERATURE_GRID = (0.8, 0.9, 1.0, 1.1, 1.2)  # seed 001 §5.2
T_BOUNDS = (0.05, 20.0)  # search range of T for method="nll" (searched as log T)
TIE_DECIMALS = 4  # precision at which the grid rule compares NLL and ECE (seed 001 reports 4 decimals)
_METHODS = ("nll", "grid")


# --- metrics ----------------------------------------------------------------------------------------------------


def expected_calibration_error(
    confidence: Any, correct: Any, n_bins: int = N_BINS
) -> tuple[float, float, list[dict[str, Any]]]:
    """ECE and MCE of ``confidence`` (N,) in [0, 1] against ``correct`` (N,) booleans; see the module docstring.

    Returns ``(ece, mce, bins)``; ``bins`` has one dict per bin: ``{"lo", "hi", "count", "accuracy",
    "confidence", "gap"}`` (accuracy, confidence and gap are None for empty bins).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct)
    if conf.ndim != 1 or conf.size == 0:
        raise StillroomError(f"expected_calibration_error: confidence must be a non-empty 1-D array, got {conf.shape}")
    if corr.shape != conf.shape:
        raise StillroomError(
            f"expected_calibration_error: correct must have shape {conf.shape} like confidence, got {corr.shape}"
        )
    if not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1:
        raise StillroomError("expected_calibration_error: confidence must be finite values in [0, 1]")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise StillroomError(f"expected_calibration_error: n_bins must be a positive integer, got {n_bins!r}")
    corr = corr.astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="right": a value equal to an edge opens the bin starting there ([lo, hi)); 1.0 is clipped into the last
    bins = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_acc = np.bincount(bins, weights=corr, minlength=n_bins)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    nonempty = count > 0
    acc_b = np.divide(sum_acc, count, out=np.zeros(n_bins), where=nonempty)
    conf_b = np.divide(sum_conf, count, out=np.zeros(n_bins), where=nonempty)
    gap = np.abs(acc_b - conf_b)
    ece = float((count * gap).sum() / count.sum())
    mce = float(gap[nonempty].max())
    table = [
        {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": int(count[b]),
            "accuracy": float(acc_b[b]) if nonempty[b] else None,
            "confidence": float(conf_b[b]) if nonempty[b] else None,
            "gap": float(gap[b]) if nonempty[b] else None,
        }
        for b in range(n_bins)
    ]
    return ece, mce, table


def _id_log_probs(logits: Any, labels: Any, num_id_classes: int | None, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 log-probabilities (N, K) over the first ``num_id_classes`` logits, and int labels."""
    z = np.asarray(logits)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise StillroomError(f"{fn}: logits must be a 2-D array (N, K) with N >= 1 and K >= 2, got shape {z.shape}")
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z).all():
        raise StillroomError(f"{fn}: logits must be finite numbers (dtype {z.dtype})")
    k = z.shape[1] if num_id_classes is None else int(num_id_classes)
    if not 2 <= k <= z.shape[1]:
        raise StillroomError(f"{fn}: num_id_classes must be in 2..{z.shape[1]} (logit columns), got {num_id_classes}")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise StillroomError(
            f"{fn}: labels must be integer class ids of shape ({z.shape[0]},), got {y.shape} {y.dtype}"
        )
    if y.min() < 0 or y.max() >= k:
        raise StillroomError(
            f"{fn}: labels must be in-distribution class ids 0..{k - 1}, got {y.min()}..{y.max()} "
            "(drop OOD rows before measuring calibration)"
        )
    return log_softmax(z[:, :k].astype(np.float64), axis=1), y.astype(np.int64)


def _metrics_from_log_probs(log_p: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[dict[str, float], list]:
    rows = np.arange(len(y))
    p = np.exp(log_p)
    pred = p.argmax(axis=1)  # ties: lowest class id, as everywhere in stillroom.evaluate
    conf = p[rows, pred]
    ece, mce, table = expected_calibration_error(np.clip(conf, 0.0, 1.0), pred == y, n_bins)
    diff = p.copy()
    diff[rows, y] -= 1.0  # p - onehot(y), shape (N, K)
    brier = float((diff**2).sum(axis=1).mean())
    nll = float(-log_p[rows, y].mean())
    return {"ece": ece, "mce": mce, "brier": brier, "nll": nll}, table


def calibration_metrics(
    logits: Any,
    labels: Any,
    n_bins: int = N_BINS,
    num_id_classes: int | None = None,
    return_bins: bool = False,
) -> dict[str, Any]:
    """``{"ece", "mce", "brier", "nll"}`` of ``logits`` (N, K) against ``labels`` (N,); see the module docstring.

    ``num_id_classes``: for a K+1 model, K (softmax over the first K logits). ``return_bins`` adds the per-bin
    table of ``expected_calibration_error`` under ``"bins"`` (what a reliability diagram is drawn from).
    """
    log_p, y = _id_log_probs(logits, labels, num_id_classes, "calibration_metrics")
    out, table = _metrics_from_log_probs(log_p, y, n_bins)
    if return_bins:
        out["bins"] = table
    return out


# --- temperature scaling ----------------------------------------------------------------------------------------


def select_temperature(candidates: list[dict[str, float]], decimals: int = TIE_DECIMALS) -> dict[str, float]:
    """Seed 001 §5.2's lexicographic rule over ``candidates`` ``[{"temperature", "nll", "ece", "macro_f1"}, ...]``:
    lowest NLL, then lowest ECE, then highest macro-F1, each compared rounded to ``decimals``; remaining ties keep
    the earliest candidate."""
    if not candidates:
        raise StillroomError("select_temperature: no candidates")
    return min(
        candidates,
        key=lambda c: (round(c["nll"], decimals), round(c["ece"], decimals), -round(c["macro_f1"], decimals)),
    )


class TemperatureScaler:
    """Post-hoc temperature scaling, p = softmax(z / T) (module docstring).

    ``fit(val_logits, val_labels, method="nll" | "grid")`` returns self. Fitted attributes: ``temperature_``,
    ``method_``, ``val_nll_before_``, ``val_nll_after_``, ``val_ece_before_``, ``val_ece_after_``, ``n_val_`` and,
    for the grid, ``grid_`` (every candidate's NLL / ECE / macro-F1). ``transform(logits)`` returns z / T (every
    column, the sink of a K+1 model included). Using it before ``fit`` or ``load`` raises ``NotFittedError``.
    """

    def __init__(
        self,
        num_id_classes: int | None = None,
        n_bins: int = N_BINS,
        bounds: tuple[float, float] = T_BOUNDS,
        grid: tuple[float, ...] = TEMPERATURE_GRID,
    ) -> None:
        if not (0 < bounds[0] < 1 < bounds[1]):
            raise StillroomError(f"TemperatureScaler: bounds must satisfy 0 < low < 1 < high, got {bounds}")
        if not grid or min(grid) <= 0:
            raise StillroomError(f"TemperatureScaler: grid must be positive temperatures, got {grid}")
        self.num_id_classes = num_id_classes
        self.n_bins = n_bins
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.grid = tuple(float(t) for t in grid)

    def fit(self, val_logits: Any, val_labels: Any, method: str = "nll") -> TemperatureScaler:
        if method not in _METHODS:
            raise StillroomError(f"TemperatureScaler.fit: method must be one of {', '.join(_METHODS)}, got {method!r}")
        # validate once; the K ID columns are all we need from here on
        log_p, y = _id_log_probs(val_logits, val_labels, self.num_id_classes, "TemperatureScaler.fit")
        z = log_p  # log-softmax differs from the logits by a per-row constant: the same softmax at every T
        rows = np.arange(len(y))

        def nll(t: float) -> float:
            return float(-log_softmax(z / t, axis=1)[rows, y].mean())

        before, _ = _metrics_from_log_probs(z, y, self.n_bins)
        if method == "nll":
            res = minimize_scalar(
                lambda u: nll(math.exp(u)),
                bounds=(math.log(self.bounds[0]), math.log(self.bounds[1])),
                method="bounded",
                options={"xatol": 1e-6},
            )
            t_opt = float(math.exp(res.x))
            temperature = t_opt if nll(t_opt) < before["nll"] else 1.0  # keep T = 1 unless it lowers val NLL
            self.grid_ = None
        else:
            pred = z.argmax(axis=1)
            f1 = float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0))
            cands = []
            for t in self.grid:
                m, _ = _metrics_from_log_probs(log_softmax(z / t, axis=1), y, self.n_bins)
                cands.append({"temperature": t, "nll": m["nll"], "ece": m["ece"], "macro_f1": f1})
            temperature = float(select_temperature(cands)["temperature"])
            self.grid_ = cands
        after, _ = _metrics_from_log_probs(log_softmax(z / temperature, axis=1), y, self.n_bins)
        self.temperature_ = temperature
        self.method_ = method
        self.n_val_ = int(len(y))
        self.val_nll_before_, self.val_nll_after_ = before["nll"], after["nll"]
        self.val_ece_before_, self.val_ece_after_ = before["ece"], after["ece"]
        return self

    def _check_fitted(self, what: str) -> float:
        t = getattr(self, "temperature_", None)
        if t is None:
            raise NotFittedError(f"TemperatureScaler.{what}: not fitted; call fit(val_logits, val_labels) or load()")
        return t

    def transform(self, logits: Any) -> np.ndarray:
        """Logits divided by the fitted temperature (same shape; float64 unless the input is float32)."""
        t = self._check_fitted("transform")
        z = np.asarray(logits)
        if not np.issubdtype(z.dtype, np.floating):
            z = z.astype(np.float64)
        return z / np.asarray(t, dtype=z.dtype)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted("to_dict")
        return {
            "temperature": self.temperature_,
            "method": self.method_,
            "n_val": self.n_val_,
            "num_id_classes": self.num_id_classes,
            "val_nll_before": self.val_nll_before_,
            "val_nll_after": self.val_nll_after_,
            "val_ece_before": self.val_ece_before_,
            "val_ece_after": self.val_ece_after_,
            "n_bins": self.n_bins,
            "bounds": list(self.bounds),
            "grid": self.grid_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TemperatureScaler:
        try:
            self = cls(num_id_classes=d.get("num_id_classes"), n_bins=int(d.get("n_bins", N_BINS)))
            self.temperature_ = float(d["temperature"])
            self.method_ = str(d["method"])
        except (KeyError, TypeError, ValueError) as err:
            raise StillroomError(f"not a temperature-scaler entry ({err!r})") from None
        if not self.temperature_ > 0:
            raise StillroomError(f"temperature must be > 0, got {self.temperature_}")
        self.n_val_ = d.get("n_val")
        self.val_nll_before_, self.val_nll_after_ = d.get("val_nll_before"), d.get("val_nll_after")
        self.val_ece_before_, self.val_ece_after_ = d.get("val_ece_before"), d.get("val_ece_after")
        self.grid_ = d.get("grid")
        return self

    def save(self, path: str | Path, weights: str = "best", **extra: Any) -> Path:
        """Store under ``weights`` in ``path`` (``calibration.json``), keeping other entries; atomic.

        ``extra`` (e.g. ``weights_sha256``, ``fit_split``) is stored beside the fitted values.
        """
        path = Path(path)
        data = read_json(path) if path.is_file() else {}
        data.setdefault("format", "stillroom-calibration/1")
        data.setdefault("weights", {})[weights] = {**self.to_dict(), **extra}
        return atomic_write_json(path, data)

    @classmethod
    def load(cls, path: str | Path, weights: str = "best") -> TemperatureScaler:
        path = Path(path)
        entry = read_json(path).get("weights", {}).get(weights)
        if entry is None:
            raise StillroomError(f"{path}: no temperature stored for weights {weights!r}")
        try:
            return cls.from_dict(entry)
        except StillroomError as err:
            raise StillroomError(f"{path} [{weights}]: {err}") from None


def load_temperature(run_dir: str | Path, weights: str = "best", weights_sha256: str | None = None) -> float:
    """The temperature stored for ``weights`` in ``run_dir/calibration.json``; 1.0 (with a warning) if none.

    With ``weights_sha256`` the stored entry must belong to those weights, else ``StillroomError`` (a model that was
    retrained after calibrating must be calibrated again). The rule is ``runs.read_temperature``, shared with the
    service.
    """
    t, source = read_temperature(run_dir, weights, weights_sha256)
    if source is None:
        warnings.warn(
            f"{Path(run_dir) / CALIBRATION_FILE}: no temperature for weights {weights!r}; using T = 1", stacklevel=2
        )
    return t
