"""The KNN score served by the ladder (issue 16 item 4): numpy, one matrix product against a stored feature bank.

Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors" (ICML; §3, eq. 1-2), as evaluation
computes it through pytorch-ood (``evaluate.feature_ood``, the same ``KNN_K`` and normalization): with ``f(x)`` the
globally pooled penultimate features (``feature_ood.split_model``'s backbone, pooled) and ``z = f / ||f||_2``
(the norm clamped at 1e-12, as pytorch-ood does, so a zero vector stays zero),

    score(x) = - || z(x) - b_(k) ||_2

where ``b_(1), ..., b_(n)`` are the bank's rows (the normalized features of the run's clean ID training rows)
sorted by distance to ``z(x)``; higher = more in-distribution (REFERENCE 4). Computation: one float32 matrix product
ranks the bank (``||b||^2 - 2 z b^T``), the ``k + REFINE`` nearest rows are kept (``np.argpartition``) and their
distances recomputed exactly in float64 (``||z - b||``, no expansion), and the k-th smallest is the score. For a
4,178 x 576 bank that is 2.4 M multiply-adds per image over 9.6 MB of float32; the same product in float64 read
19 MB per image and took 3 ms (memory-bound, 2 shared cores), the float32 ranking about half. The refinement makes the
result float64-exact unless float32 rounding (about 1e-6 in squared distance) moves a row across more than
``REFINE`` ranks, and it equals pytorch-ood's score to 1e-6 (tests/test_ladder_knn.py).

Serving it needs the features of the served model: ``stillroom export`` writes ``model_features.onnx`` (outputs
``logits`` and ``features``), and the ladder stores the bank as ``.npy`` (never pickle) with its sha256.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import NotFittedError, StillroomError, atomic_write_bytes, checked_sidecar, sha256_bytes

__all__ = ["KNN_K", "KNNScorer", "l2_normalize", "knn_score"]

#: k of evaluation's KNN (``evaluate.feature_ood.KNN_K``), repeated so that importing the service stays light;
#: a test pins the two together
KNN_K = 10
_NORM_EPS = 1e-12  # pytorch-ood's clamp of the feature norm
#: extra nearest rows (beyond k) whose distances are recomputed in float64 after the float32 ranking
REFINE = 32


def l2_normalize(features: Any, name: str = "features") -> np.ndarray:
    """(N, D) float32 rows divided by their L2 norm (clamped at 1e-12), as pytorch-ood's KNN normalizes."""
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or f.shape[1] == 0:
        raise StillroomError(f"{name}: expected an (N, D) array with D >= 1, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise StillroomError(f"{name}: holds non-finite values")
    norm = np.maximum(np.linalg.norm(f, axis=1, keepdims=True), np.float32(_NORM_EPS))
    return (f / norm).astype(np.float32, copy=False)


def knn_score(features: Any, bank: np.ndarray, k: int = KNN_K, bank_sq: np.ndarray | None = None) -> np.ndarray:
    """(N,) float64 ``-distance to the k-th nearest bank row`` of the L2-normalized ``features`` (N, D); ``bank``
    (n, D) float32 is already normalized (``l2_normalize``); ``bank_sq`` (n,): its squared row norms when
    precomputed (``KNNScorer`` keeps them). Module docstring for the formula and the float32 ranking."""
    z = l2_normalize(features)  # (N, D) float32
    b = np.asarray(bank, dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != z.shape[1]:
        raise StillroomError(f"knn_score: bank of shape {b.shape} for features of dimension {z.shape[1]}")
    if not 1 <= k <= len(b):
        raise StillroomError(f"knn_score: k must be in [1, {len(b)}] (bank rows), got {k}")
    b_sq = (b * b).sum(1) if bank_sq is None else bank_sq
    rank = b_sq[None, :] - 2.0 * (z @ b.T)  # (N, n): squared distance minus ||z||^2, for ranking only
    m = min(len(b), k + REFINE)
    near = np.argpartition(rank, m - 1, axis=1)[:, :m] if m < len(b) else np.broadcast_to(np.arange(m), rank.shape)
    diff = z.astype(np.float64)[:, None, :] - b[near].astype(np.float64)  # (N, m, D)
    d2 = np.einsum("nmd,nmd->nm", diff, diff)  # (N, m) exact squared distances
    kth = np.partition(d2, k - 1, axis=1)[:, k - 1]  # (N,) k-th smallest
    return -np.sqrt(kth)


class KNNScorer:
    """The KNN score with its bank (scikit-learn style): ``fit(train_features)`` normalizes and keeps them in
    ``bank_`` (n, D) float32; ``score(features)`` -> (N,) float64, higher = more ID. ``k``: the neighbour whose
    distance counts (default ``KNN_K``, evaluation's)."""

    def __init__(self, k: int = KNN_K) -> None:
        if not (isinstance(k, int) and k >= 1):
            raise StillroomError(f"KNNScorer: k must be an int >= 1, got {k!r}")
        self.k = k

    def fit(self, train_features: Any) -> KNNScorer:
        bank = l2_normalize(train_features, "KNNScorer.fit: train_features")
        if len(bank) <= self.k:
            raise StillroomError(f"KNNScorer.fit: needs more than k = {self.k} rows, got {len(bank)}")
        self._set_bank(np.ascontiguousarray(bank))
        return self

    def _set_bank(self, bank: np.ndarray) -> None:
        self.bank_ = bank
        self._bank_sq = (bank * bank).sum(1)  # (n,) float32, once

    def score(self, features: Any) -> np.ndarray:
        if not hasattr(self, "bank_"):
            raise NotFittedError("KNNScorer: call fit(...) or KNNScorer.load(...) before scoring")
        return knn_score(features, self.bank_, self.k, self._bank_sq)

    @property
    def dim(self) -> int:
        return int(self.bank_.shape[1])

    def save_bank(self, path: str | Path) -> dict[str, Any]:
        """Write ``bank_`` as ``.npy`` (no pickle) atomically; returns the record the ladder keeps: file name,
        sha256, shape, k."""
        buf = io.BytesIO()
        np.save(buf, self.bank_, allow_pickle=False)
        data = buf.getvalue()
        atomic_write_bytes(path, data)
        return {
            "k": self.k,
            "bank_file": Path(path).name,
            "bank_sha256": sha256_bytes(data),
            "bank_shape": list(self.bank_.shape),
            "normalize": "l2",
        }

    @classmethod
    def load(cls, folder: str | Path, record: dict[str, Any], source: str = "ladder") -> KNNScorer:
        """The scorer of a ladder's ``knn`` record, its bank read from ``folder`` and checked by sha256 and
        shape (a bank that was changed after the fit is refused, never scored with)."""
        try:
            name, sha, shape, k = record["bank_file"], record["bank_sha256"], record["bank_shape"], record["k"]
        except (KeyError, TypeError):
            raise StillroomError(f"{source}: malformed knn record {record!r}") from None
        path = checked_sidecar(folder, name, sha, ".npy", "KNN bank", source)
        bank = np.load(path, allow_pickle=False)
        if bank.dtype != np.float32 or list(bank.shape) != list(shape):
            raise StillroomError(f"{path}: bank {bank.dtype} {list(bank.shape)}, {source} says float32 {shape}")
        out = cls(int(k))
        out._set_bank(bank)
        return out

    def __repr__(self) -> str:
        shape = "unfitted" if not hasattr(self, "bank_") else f"bank {self.bank_.shape[0]} x {self.bank_.shape[1]}"
        return f"KNNScorer(k={self.k}, {shape})"
