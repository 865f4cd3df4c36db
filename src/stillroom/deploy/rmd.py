"""The relative Mahalanobis score served by the ladder (issue 16 items 3-4): numpy, fitted parameters in one file.

Ren et al. 2021, "A Simple Fix to Mahalanobis Distance for Improving Near-OOD Detection" (§3), as evaluation computes
it through pytorch-ood (``evaluate.feature_ood``, score ``rmd``: the same features, fit rows, ridge and sums). With
``f(x)`` the globally pooled penultimate features, class means ``mu_k`` and one shared covariance ``S`` (the sum of
the class-centred outer products of the fit rows plus 1e-6 I, pytorch-ood's convention: not divided by the row
count, which scales every distance alike), and one background Gaussian ``mu_0``, ``S_0`` over all fit rows:

    d_k(x) = (f - mu_k)^T S^-1 (f - mu_k),   d_0(x) = (f - mu_0)^T S_0^-1 (f - mu_0),
    score(x) = - min_k [d_k(x) - d_0(x)]          (higher = more in-distribution, REFERENCE 4)

Fit rows: the run's clean ID training rows and ``RMD_VIEWS`` ``style`` views of each, with their labels (why:
``evaluate.feature_ood``). Computation in float64: ``d_k = f^T P f - 2 f^T (P mu_k) + mu_k^T P mu_k`` with ``P mu``
and ``mu^T P mu`` kept from the fit, so one image costs one D x D and one K x D product (576 features, 151
classes: 0.42 M multiply-adds). The parameters are written as one ``.npz`` of plain float64 arrays (read with
``allow_pickle=False``) whose sha256 the ladder records; a changed file is refused.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import NotFittedError, StillroomError, atomic_write_bytes, checked_sidecar, sha256_bytes

__all__ = ["RMDScorer", "RIDGE"]

RIDGE = 1e-6  # added to both covariances before inversion, as pytorch-ood does
_ARRAYS = ("mu", "precision", "bg_mu", "bg_precision")


class RMDScorer:
    """The RMD score with its fitted Gaussians (scikit-learn style): ``fit(features, labels)``; ``score(features)``
    -> (N,) float64, higher = more ID. Fitted attributes: ``mu_`` (C, D), ``precision_`` (D, D), ``bg_mu_`` (D,),
    ``bg_precision_`` (D, D), ``classes_`` (C,) the labels seen."""

    def fit(self, features: Any, labels: Any) -> RMDScorer:
        f = _features(features, "RMDScorer.fit: features")
        y = np.asarray(labels)
        if y.shape != (len(f),):
            raise StillroomError(f"RMDScorer.fit: {y.shape} labels for {len(f)} feature rows")
        self.classes_, inv = np.unique(y, return_inverse=True)
        if len(f) <= len(self.classes_):
            raise StillroomError(f"RMDScorer.fit: {len(f)} rows for {len(self.classes_)} classes; needs more rows")
        counts = np.bincount(inv, minlength=len(self.classes_))
        mu = np.zeros((len(self.classes_), f.shape[1]))
        np.add.at(mu, inv, f)
        mu /= counts[:, None]
        centred = f - mu[inv]
        bg_mu = f.mean(axis=0)
        bg = f - bg_mu
        ridge = RIDGE * np.eye(f.shape[1])
        self._set(mu, np.linalg.inv(centred.T @ centred + ridge), bg_mu, np.linalg.inv(bg.T @ bg + ridge))
        return self

    def _set(self, mu: np.ndarray, precision: np.ndarray, bg_mu: np.ndarray, bg_precision: np.ndarray) -> None:
        self.mu_, self.precision_, self.bg_mu_, self.bg_precision_ = mu, precision, bg_mu, bg_precision
        self._p_mu = mu @ precision  # (C, D); precision is symmetric
        self._mu_p_mu = np.einsum("cd,cd->c", self._p_mu, mu)  # (C,)

    def score(self, features: Any) -> np.ndarray:
        if not hasattr(self, "mu_"):
            raise NotFittedError("RMDScorer: call fit(...) or RMDScorer.load(...) before scoring")
        f = _features(features, "features")
        if f.shape[1] != self.dim:
            raise StillroomError(f"RMDScorer: features of dimension {f.shape[1]}, fitted on {self.dim}")
        fpf = np.einsum("nd,de,ne->n", f, self.precision_, f)
        d_k = fpf[:, None] - 2.0 * f @ self._p_mu.T + self._mu_p_mu[None, :]  # (N, C)
        b = f - self.bg_mu_
        d_0 = np.einsum("nd,de,ne->n", b, self.bg_precision_, b)
        return -(d_k - d_0[:, None]).min(axis=1)

    @property
    def dim(self) -> int:
        return int(self.mu_.shape[1])

    def save(self, path: str | Path, fit_rows: int | None = None) -> dict[str, Any]:
        """Write the parameters as ``.npz`` (plain arrays, no pickle) atomically; returns the record the ladder
        keeps: file name, sha256, classes, dimension."""
        buf = io.BytesIO()
        np.savez(buf, **{name: getattr(self, f"{name}_") for name in _ARRAYS})
        data = buf.getvalue()
        atomic_write_bytes(path, data)
        rec = {"file": Path(path).name, "sha256": sha256_bytes(data), "classes": len(self.mu_), "dim": self.dim}
        return rec if fit_rows is None else {**rec, "fit_rows": int(fit_rows)}

    @classmethod
    def load(cls, folder: str | Path, record: dict[str, Any], source: str = "ladder") -> RMDScorer:
        """The scorer of a ladder's ``rmd`` record, read from ``folder`` and checked by sha256 and shapes."""
        try:
            name, sha, classes, dim = record["file"], record["sha256"], int(record["classes"]), int(record["dim"])
        except (KeyError, TypeError, ValueError):
            raise StillroomError(f"{source}: malformed rmd record {record!r}") from None
        path = checked_sidecar(folder, name, sha, ".npz", "RMD parameters", source)
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in _ARRAYS if n in z.files}
        want = {"mu": (classes, dim), "precision": (dim, dim), "bg_mu": (dim,), "bg_precision": (dim, dim)}
        for n, shape in want.items():
            a = arrays.get(n)
            if a is None or a.dtype != np.float64 or a.shape != shape:
                got = None if a is None else f"{a.dtype} {a.shape}"
                raise StillroomError(f"{path}: {n} is {got}, {source} says float64 {shape}")
        out = cls()
        out.classes_ = np.arange(classes)
        out._set(arrays["mu"], arrays["precision"], arrays["bg_mu"], arrays["bg_precision"])
        return out

    def __repr__(self) -> str:
        shape = "unfitted" if not hasattr(self, "mu_") else f"{len(self.mu_)} classes x {self.dim}"
        return f"RMDScorer({shape})"


def _features(features: Any, name: str) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] == 0:
        raise StillroomError(f"{name}: expected an (N, D) array with D >= 1, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise StillroomError(f"{name}: holds non-finite values")
    return f
