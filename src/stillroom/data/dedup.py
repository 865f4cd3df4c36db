"""Within-class deduplication of binary masks (REFERENCE 1.1).

Animated sprites repeat frames (idle loops) and many consecutive frames differ by a handful of pixels. Keeping them
all inflates the dataset and the leak between splits, so each species is deduplicated in two passes:

1. exact duplicates: identical binarized masks (hash of the packed bits), the first occurrence kept;
2. near duplicates, greedy in input order: a mask is dropped when its Hamming distance to any mask already kept is
   below ``threshold * S * S`` pixels (1% by default).

Both passes are deterministic and preserve input order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from stillroom._io import StillroomError

__all__ = ["pack_masks", "exact_distinct", "dedup_masks"]

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _row_popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a 2-D uint64 array; ``np.bitwise_count`` needs numpy >= 2, the table is the fallback."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    return _POPCOUNT8[words.view(np.uint8)].sum(axis=1)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` uint8 masks (object < 128) -> ``(N, ceil(H*W/8))`` uint8 packed object bits."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise StillroomError(f"masks: expected shape (N, H, W), got {masks.shape}")
    return np.packbits((masks < 128).reshape(len(masks), -1), axis=1)


def exact_distinct(packed: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the first occurrence of each distinct row of ``packed``."""
    seen: set[bytes] = set()
    keep = []
    for i, row in enumerate(packed):
        digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def dedup_masks(masks: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Indices (ascending, in input order) of the masks kept after exact then greedy near-duplicate removal.

    Args:
        masks: ``(N, S, S)`` uint8, 0 = object, 255 = background (any value < 128 counts as object).
        threshold: fraction of the ``S * S`` pixels; a mask closer than ``threshold * S * S`` (strictly) to a kept
            mask is dropped. ``0`` keeps every exact-distinct mask.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise StillroomError(f"masks: expected shape (N, S, S), got {masks.shape}")
    if not (0 <= threshold < 1):
        raise StillroomError(f"threshold must be in [0, 1), got {threshold!r}")
    n = len(masks)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    packed = pack_masks(masks)
    distinct = exact_distinct(packed)
    limit = threshold * masks.shape[1] * masks.shape[2]
    if limit <= 1:
        # Exact-distinct masks differ in >= 1 pixel, so no near-duplicate can fall strictly below the limit.
        return distinct
    # Pad rows to a multiple of 8 bytes and view as uint64: 8x fewer elements for XOR and popcount.
    width = -(-packed.shape[1] // 8) * 8
    words = np.zeros((len(distinct), width), dtype=np.uint8)
    words[:, : packed.shape[1]] = packed[distinct]
    words = words.view(np.uint64)  # (D, width / 8)
    kept_rows = np.empty_like(words)
    n_kept = 0
    keep = []
    for j, idx in enumerate(distinct):
        if n_kept:
            dist = _row_popcount(kept_rows[:n_kept] ^ words[j])  # (n_kept,)
            if dist.min() < limit:
                continue
        kept_rows[n_kept] = words[j]
        n_kept += 1
        keep.append(idx)
    return np.asarray(keep, dtype=np.int64)
