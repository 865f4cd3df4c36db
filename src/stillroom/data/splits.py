"""Train/val/test split methods, one registry (REFERENCE 1.1; seed 000 §2.6 describes a stratified 80/10/10 split).

Frames of one animation are strongly correlated, so the seed's random frame split leaks: near-copies of a test frame
sit in train. The methods here, all found by name in ``SPLIT_METHODS``:

- ``blocks`` (default): within each animation the (deduplicated, ordered) frames are cut into consecutive blocks,
  train first, then val, then test (80/10/10). Still leaky at the block borders and across views; it measures
  recognition of known animations.
- ``random``: the seed's stratified random frame split, 80/10/10 per class. Leaky; kept for comparison with the seed.
- ``cross-view``: the front view of each species goes to train/val (a block split, 90/10), the back view to test.
  No animation is ever in test and in train/val, so test accuracy measures generalization to an unseen view.

Every method takes per-sample arrays ``labels``, ``groups`` (animation id such as ``"025/front"``), ``order``
(position within the animation) and ``views``, plus ``seed`` and ``fractions``, and returns a ``SplitResult``:
the ``(N,)`` array of ``"train"``/``"val"``/``"test"`` and a JSON-able ``info`` dict that records degenerate cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from stillroom._io import StillroomError
from stillroom._registry import Registry

__all__ = ["SplitResult", "SPLIT_METHODS", "DEFAULT_FRACTIONS", "block_sizes", "make_splits"]

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
_NAMES = ("train", "val", "test")


class SplitResult(NamedTuple):
    splits: np.ndarray  # (N,) str: "train" / "val" / "test"
    info: dict[str, Any]


SplitFn = Callable[[np.ndarray, list[str], np.ndarray, list[str] | None, int, tuple[float, float, float]], SplitResult]
SPLIT_METHODS: Registry[SplitFn] = Registry("split method")


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def block_sizes(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Split ``n`` items into ``len(fractions)`` counts that sum to ``n``.

    Each split with a non-zero fraction after the first gets ``max(1, round(f * n))`` items when ``n`` is at least
    the number of non-zero fractions, so small groups still reach every split; the first split takes the rest and
    keeps at least one item (larger later splits give one back when needed). Below that ``n``, everything goes to
    the first split.
    """
    k = len(fractions)
    active = sum(1 for f in fractions if f > 0)
    sizes = [0] * k
    if n < max(active, 1) or n == 0:
        sizes[0] = n
        return tuple(sizes)
    for j in range(1, k):
        if fractions[j] > 0:
            sizes[j] = max(1, _round_half_up(fractions[j] * n))
    while n - sum(sizes[1:]) < 1:
        j = max(range(1, k), key=lambda i: (sizes[i], -i))  # shrink the largest, later splits first on ties
        sizes[j] -= 1
    sizes[0] = n - sum(sizes[1:])
    return tuple(sizes)


def _assign_blocks(out: np.ndarray, idx: np.ndarray, fractions: Sequence[float]) -> None:
    """Write consecutive blocks of the ordered sample indices ``idx`` into ``out`` (train, val, test)."""
    start = 0
    for name, count in zip(_NAMES, block_sizes(len(idx), fractions), strict=False):
        out[idx[start : start + count]] = name
        start += count


def _animations(label_idx: np.ndarray, groups: list[str], order: np.ndarray) -> list[np.ndarray]:
    """Sample indices of each animation of one class, animations in first-appearance order, frames by ``order``."""
    by_group: dict[str, list[int]] = {}
    for i in label_idx:
        by_group.setdefault(groups[i], []).append(int(i))
    anims = []
    for members in by_group.values():
        arr = np.asarray(members, dtype=np.int64)
        anims.append(arr[np.argsort(order[arr], kind="stable")])
    return anims


@SPLIT_METHODS.register("blocks")
def split_blocks(
    labels: np.ndarray,
    groups: list[str],
    order: np.ndarray,
    views: list[str] | None,
    seed: int,
    fractions: tuple[float, float, float],
) -> SplitResult:
    """Consecutive blocks per animation: train block, then val, then test (``seed`` unused: fully determined).

    Animations with >= 3 frames give >= 1 frame to every split; smaller ones go to train. A class whose animations
    are all smaller than 3 frames but which has >= 3 samples is split as one sequence (its animations concatenated
    in first-appearance order), so every class with >= 3 samples keeps samples in every split; such classes are
    listed in ``info["concatenated_classes"]``.
    """
    out = np.full(len(labels), "train", dtype="<U5")
    concatenated, too_small = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        anims = _animations(idx, groups, order)
        if any(len(a) >= 3 for a in anims):
            for a in anims:
                _assign_blocks(out, a, fractions)
        elif len(idx) >= 3:
            _assign_blocks(out, np.concatenate(anims), fractions)
            concatenated.append(int(label))
        else:
            too_small.append(int(label))
    return SplitResult(out, {"concatenated_classes": concatenated, "classes_train_only": too_small})


@SPLIT_METHODS.register("random")
def split_random(
    labels: np.ndarray,
    groups: list[str],
    order: np.ndarray,
    views: list[str] | None,
    seed: int,
    fractions: tuple[float, float, float],
) -> SplitResult:
    """Stratified random frame split (the seed's protocol, seed 000 §2.6). LEAKY: neighbouring frames of one
    animation land in different splits, so val/test scores overstate generalization.

    One ``np.random.default_rng(seed)`` permutes each class in ascending label order; classes with >= 3 samples get
    >= 1 sample in every split.
    """
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), "train", dtype="<U5")
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        _assign_blocks(out, idx[rng.permutation(len(idx))], fractions)
    return SplitResult(out, {"leaky": True})


@SPLIT_METHODS.register("cross-view")
def split_cross_view(
    labels: np.ndarray,
    groups: list[str],
    order: np.ndarray,
    views: list[str] | None,
    seed: int,
    fractions: tuple[float, float, float],
) -> SplitResult:
    """Front view to train/val, every other view (back) to test (``seed`` unused: fully determined).

    The front animations are block-split into train then val, val taking the val fraction (10%: a 90/10 split; val
    gets >= 1 frame once there are >= 2, unless the val fraction is 0). Test holds every non-front frame, so no
    animation is ever in test and in train/val. Degenerate classes:

    - only a front view: all of it goes to train/val and the class has no test samples; listed in
      ``info["classes_without_test"]``;
    - no front view: its frames are block-split into train/val instead (the class would otherwise have nothing to
      train on) and it has no test samples; listed in ``info["classes_without_front"]``.
    """
    if views is None:
        raise StillroomError("split 'cross-view' needs per-sample views ('front'/'back'); none were given")
    views_arr = np.asarray(views)
    # The val share stays the val fraction of the animation (10%); train takes the rest (the test share is moot).
    trainval = (1.0 - fractions[1], fractions[1], 0.0)
    out = np.full(len(labels), "train", dtype="<U5")
    no_test, no_front = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        front = idx[views_arr[idx] == "front"]
        other = idx[views_arr[idx] != "front"]
        if len(front) == 0:
            no_front.append(int(label))
            front, other = other, other[:0]
        for a in _animations(front, groups, order):
            _assign_blocks(out, a, trainval)
        if len(other) == 0:
            no_test.append(int(label))
        out[other] = "test"
    return SplitResult(out, {"classes_without_test": no_test, "classes_without_front": no_front})


def make_splits(
    method: str,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str],
    order: Sequence[int] | np.ndarray,
    views: Sequence[str] | None = None,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> SplitResult:
    """Validate the inputs, run the registered split ``method`` and return ``SplitResult(splits, info)``.

    ``info`` always holds ``method``, ``seed`` and ``fractions`` plus the method's notes on degenerate classes
    (and ``leaky: True`` for ``random``).
    """
    fn = SPLIT_METHODS.get(method)
    labels_arr = np.asarray(labels)
    n = len(labels_arr)
    if labels_arr.ndim != 1 or (n and not np.issubdtype(labels_arr.dtype, np.integer)):
        raise StillroomError(
            f"labels: expected a 1-D integer array, got dtype {labels_arr.dtype} shape {labels_arr.shape}"
        )
    order_arr = np.asarray(order)
    for name, value in (("groups", groups), ("order", order_arr), ("views", views)):
        if value is not None and len(value) != n:
            raise StillroomError(f"{name}: expected {n} entries (one per label), got {len(value)}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or fr[0] <= 0 or abs(sum(fr) - 1) > 1e-6:
        raise StillroomError(
            f"fractions: expected three non-negative numbers (train > 0) summing to 1, got {fractions}"
        )
    result = fn(labels_arr, [str(g) for g in groups], order_arr, None if views is None else list(views), seed, fr)
    info = {"method": method, "seed": seed, "fractions": list(fr), **result.info}
    return SplitResult(result.splits, info)
