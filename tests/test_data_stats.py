"""``data.stats``: the train mean/std every builder writes into its recipe, against hand-computed values and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stillroom._io import StillroomError
from stillroom.data.stats import channel_stats, silhouette_train_stats


def _silhouettes(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, size, size)) < rng.random((n, 1, 1)), 255, 0).astype(np.uint8)  # (N, S, S)


def test_silhouette_train_stats_by_hand():
    # three 4 x 4 train images with 5, 16 and 0 white pixels (48 pixels, 21 white) and a val image that must not count
    white = np.array([5, 16, 7, 0])
    is_train = np.array([True, True, False, True])
    mean, std = silhouette_train_stats(white, is_train, 4)
    # the formula sprites._train_stats and the inline copy in ood_emoji used, bit for bit
    assert (mean, std) == (21 / 48, math.sqrt(48 * 21 - 21 * 21) / 48)
    assert mean == 0.4375 and std == pytest.approx(math.sqrt(0.4375 * 0.5625), rel=1e-15)


@pytest.mark.parametrize("size", [1, 7, 32])
def test_silhouette_train_stats_match_channel_stats_and_numpy(size):
    images = _silhouettes(40, size)
    is_train = np.arange(40) % 5 != 0
    mean, std = silhouette_train_stats(np.count_nonzero(images, axis=(1, 2)), is_train, size)
    (c_mean,), (c_std,) = channel_stats(images[is_train])
    ref = images[is_train].astype(np.float64) / 255.0
    assert mean == c_mean  # same exact integer sums, same correctly rounded division
    assert std == pytest.approx(c_std, rel=4e-16, abs=1e-300)  # rounded in a different order: at most an ulp apart
    assert (mean, std) == pytest.approx((ref.mean(), ref.std()), rel=1e-12)


def test_silhouette_train_stats_constant_and_empty():
    assert silhouette_train_stats(np.array([0, 0]), np.array([True, True]), 3) == (0.0, 0.0)
    assert silhouette_train_stats(np.array([9, 9]), np.array([True, True]), 3) == (1.0, 0.0)
    with pytest.raises(StillroomError, match="no training images"):
        silhouette_train_stats(np.array([3, 4]), np.array([False, False]), 2)
