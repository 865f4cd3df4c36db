"""Per-channel normalisation statistics for a dataset recipe (REFERENCE 1.1, 1.3).

Every builder stores ``mean`` and ``std`` in the index recipe, computed here over the train split only, so val/test
never leak into the normalisation: ``import_folder`` with :func:`channel_stats` over the train images it wrote;
``sprites`` and ``ood_emoji``, whose images are 0/255 silhouettes, with :func:`silhouette_train_stats` from the
white-pixel count of each image (no PNG is read back). Both use exact integer sums; they agree to the last bit or
two of a float64 (the final rounding steps differ), and each builder's recipe stays exactly what it always was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from stillroom._io import StillroomError

__all__ = ["channel_stats", "silhouette_train_stats"]


def channel_stats(images: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of pixel values scaled to [0, 1].

    ``images`` yields uint8 arrays of shape (H, W) (one channel) or (H, W, C); sizes may differ between images but
    the channel count may not. Streaming: only two running sums per channel are kept, so any number of images fits.

    The sums are accumulated as exact integers (uint8 values, so nothing is lost) and turned into float64 at the end:
    ``mean = S1 / n``, ``var = (n * S2 - S1**2) / n**2``; doing the subtraction on integers avoids the catastrophic
    cancellation that the textbook ``E[x^2] - E[x]^2`` suffers in floating point.
    """
    s1: list[int] | None = None
    s2: list[int] | None = None
    n = 0
    channels = 0
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            raise StillroomError(f"channel_stats: image {i} has dtype {arr.dtype}, expected uint8")
        if arr.ndim == 2:
            arr = arr[:, :, None]  # (H, W, 1)
        elif arr.ndim != 3:
            raise StillroomError(f"channel_stats: image {i} has shape {arr.shape}, expected (H, W) or (H, W, C)")
        if s1 is None:
            channels = arr.shape[2]
            s1, s2 = [0] * channels, [0] * channels
        elif arr.shape[2] != channels:
            raise StillroomError(f"channel_stats: image {i} has {arr.shape[2]} channel(s), earlier ones had {channels}")
        flat = arr.reshape(-1, channels)  # (H*W, C)
        wide = flat.astype(np.int64)
        # int64 is exact here: 255**2 * H * W stays far below 2**63 for any image that fits in memory.
        sums = wide.sum(axis=0)
        sqs = np.einsum("pc,pc->c", wide, wide)
        for c in range(channels):
            s1[c] += int(sums[c])
            s2[c] += int(sqs[c])  # type: ignore[index]
        n += flat.shape[0]
    if s1 is None or s2 is None or n == 0:
        raise StillroomError("channel_stats: no pixels (empty image list); cannot compute mean/std")
    means = [s / (n * 255.0) for s in s1]
    stds = [math.sqrt(max(n * q - s * s, 0) / (n * n)) / 255.0 for s, q in zip(s1, s2, strict=True)]
    return means, stds


def silhouette_train_stats(white: np.ndarray, is_train: np.ndarray, size: int) -> tuple[float, float]:
    """Mean and (population) std, scaled to [0, 1], of the train pixels of ``size x size`` 0/255 silhouettes.

    ``white``: ``(N,)`` integer count of 255 pixels per image; ``is_train``: ``(N,)`` bool. The pixels are 0 or 1
    after scaling, so with ``n`` train pixels and ``w`` of them white: ``mean = w / n`` and
    ``std = sqrt(n * w - w**2) / n``, the subtraction done on exact integers (as in :func:`channel_stats`).
    Raises ``StillroomError`` when the split left no training image.
    """
    n = int(np.asarray(is_train).sum()) * size * size
    if n == 0:
        raise StillroomError("the split left no training images; cannot compute the normalization mean/std")
    w = int(np.asarray(white)[is_train].sum())
    return w / n, math.sqrt(max(n * w - w * w, 0)) / n
