"""Emoji OOD set, split and write step (REFERENCE 1.2, 1.3; seed 000 §2.5; pipeline steps 5 and on in ``ood_emoji``).

The kept silhouettes are split by emoji name (``split_by_name``: the sorted concept names, skin-tone and set variants
sharing one, are shuffled with the seed and cut 80/10/10, never a random image split, since the same concept appears
in several art styles) and written as ``images/<set prefix>/<icon name>.png`` (mode L) with one index row each
(``write_images``; class ``"ood"``, group = concept name).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import sha256_bytes
from stillroom.data.emoji_render import RenderOutcome
from stillroom.data.emoji_source import Candidate
from stillroom.data.index import IndexRow
from stillroom.data.splits import DEFAULT_FRACTIONS, block_sizes

__all__ = ["split_by_name", "write_images"]


def split_by_name(groups: list[str], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N,)`` split names (``<U5``) for images with concept names ``groups``, and the ``split_info`` entry."""
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    sizes = block_sizes(len(names), DEFAULT_FRACTIONS)
    assign: dict[str, str] = {}
    start = 0
    for split, count in zip(("train", "val", "test"), sizes, strict=True):
        for j in order[start : start + count]:
            assign[names[j]] = split
        start += count
    splits = np.array([assign[g] for g in groups], dtype="<U5")
    info = {
        "method": "by-emoji-name",
        "fractions": list(DEFAULT_FRACTIONS),
        "groups_per_split": {s: int(n) for s, n in zip(("train", "val", "test"), sizes, strict=True)},
    }
    return splits, info


def write_images(
    root: Path,
    kept: Sequence[RenderOutcome],
    candidates: Sequence[Candidate],
    prefixes: Sequence[str],
    splits: np.ndarray,
) -> tuple[list[IndexRow], np.ndarray]:
    """Write each kept image under ``root`` and return its index rows and ``(N,)`` int64 white-pixel counts (for
    ``stats.silhouette_train_stats``). ``candidates[o.key]`` is the icon behind outcome ``o``, ``prefixes[i]`` the
    prefix of icon set ``i``."""
    rows: list[IndexRow] = []
    white = np.zeros(len(kept), dtype=np.int64)
    for j, (o, split) in enumerate(zip(kept, splits, strict=True)):
        c = candidates[o.key]
        prefix = prefixes[c.set_index]
        buf = io.BytesIO()
        Image.fromarray(o.image, "L").save(buf, format="PNG")
        data = buf.getvalue()
        rel = f"images/{prefix}/{c.name}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        white[j] = int(np.count_nonzero(o.image))
        extra = {"set": prefix, "icon": c.name, "category": c.category, "side": str(o.side), "eff": str(o.eff)}
        rows.append(IndexRow(rel, 0, "ood", str(split), c.concept, sha256_bytes(data), extra))
    return rows, white
