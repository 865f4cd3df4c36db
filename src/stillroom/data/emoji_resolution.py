"""Emoji OOD set, resolution step: bring smooth renders to sprite-like resolution (REFERENCE 1.2 (a); seed 000
§2.5; pipeline step 2 in ``ood_emoji``, whose docstring explains the choices).

Sprites are enlarged pixel art with staircase edges; a smooth render would let a model reject OOD by edge texture.
``sprite_like`` BOX-downscales the object's box so its longer side is a native size ``L`` (binarized at half
coverage), then applies the common ``preprocess_mask``, which enlarges it exactly as it enlarges a sprite of that
native size. ``native_targets`` gives the pool ``L`` is drawn from: ``GEN5_NATIVE_SIDE_QUANTILES`` (measured), or the
ID train images' ``effective_resolution`` / ``EFF_PER_NATIVE`` when they are large enough to show native pixels
(more than 5% of them at >= ``EFF_SATURATED`` x the object side means they are not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.emoji_report import quantiles
from stillroom.data.index import DatasetIndex
from stillroom.data.outline import Outline, render_silhouette
from stillroom.data.sprites import PADDING
from stillroom.data.topology import object_box

__all__ = [
    "GEN5_NATIVE_SIDE_QUANTILES",
    "EFF_SATURATED",
    "EFF_PER_NATIVE",
    "NativeTargets",
    "effective_resolution",
    "sprite_like",
    "gen5_native_pool",
    "id_train_images",
    "native_targets",
]

# Native longer side of the object box of every gen-V black-white animated frame, species 1-649 (105,521 frames,
# measured): quantiles at 1, 5, 10, ..., 95, 99%. The targets are drawn from it by inverse-CDF interpolation.
GEN5_NATIVE_SIDE_QUANTILES = (
    (1, 32), (5, 36), (10, 39), (15, 42), (20, 44), (25, 47), (30, 50), (35, 52), (40, 55), (45, 57), (50, 58),
    (55, 61), (60, 63), (65, 66), (70, 69), (75, 71), (80, 74), (85, 77), (90, 80), (95, 86), (99, 97),
)  # fmt: skip
EFF_SATURATED = 0.85  # ID effective resolution >= this x the object side: the ID size cannot resolve native pixels
EFF_PER_NATIVE = 0.89  # effective_resolution / native side, median over species 1-151 at 128 px (measured)


def effective_resolution(image: np.ndarray) -> int:
    """Native pixel count of a (possibly enlarged) mask along the longer side of its object box.

    ``image``: ``(S, S)`` uint8 (object < 128) or boolean (True = object). Counts the rows (columns) of the box
    that differ from the previous one, plus one, and returns the larger count. Enlarging pixel art repeats rows and
    columns, so this recovers the sprite's native size (a lower bound: native art also repeats some rows; on
    species 1-151 at 128 px it reads 0.89 x the native size, correlation 0.95). 0 for an empty image.
    """
    arr = np.asarray(image)
    obj = arr if arr.dtype == np.bool_ else arr < 128
    box = object_box(obj)
    if box is None:
        return 0
    n_rows = 1 + int(np.count_nonzero((box[1:] != box[:-1]).any(axis=1)))
    n_cols = 1 + int(np.count_nonzero((box[:, 1:] != box[:, :-1]).any(axis=0)))
    return max(n_rows, n_cols)


def _downscale(box: np.ndarray, side: int) -> np.ndarray:
    """Boolean box -> boolean mask with longer side ``side``: BOX filter, object where coverage >= half."""
    h, w = box.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(np.where(box, np.uint8(0), np.uint8(255)), "L")
    return np.asarray(img.resize(size, Image.Resampling.BOX)) < 128


def sprite_like(
    mask: np.ndarray, side: int, size: int, padding: float = PADDING, outline: Outline | None = None
) -> np.ndarray:
    """Bring a high-resolution boolean mask to sprite-like resolution, then preprocess it to ``size``.

    The object's box is BOX-downscaled so that its longer side is ``side`` pixels and binarized at half coverage
    (a pixel-art-like mask of that native size), then passed to the common ``preprocess_mask``. Returns the
    ``(size, size)`` uint8 0/255 image. A mask smaller than ``side`` keeps its own resolution (never upscaled
    here; ``preprocess_mask`` enlarges it like a sprite). With ``outline`` the last step is the canonical outline
    rendering instead (``outline.render_silhouette``), the same step the sprites take (issue 16).
    """
    box = object_box(np.asarray(mask, dtype=bool))
    if box is None:
        raise StillroomError("sprite_like: mask has no object pixels")
    side = int(side)
    if side < 1:
        raise StillroomError(f"sprite_like: side must be a positive integer, got {side}")
    small = _downscale(box, side) if side < max(box.shape) else box
    if not small.any():
        raise StillroomError(f"sprite_like: nothing is left of the object at {side} px (thinner than half a pixel)")
    return render_silhouette(small, size, padding=padding, outline=outline)


def gen5_native_pool() -> np.ndarray:
    """Native sides at 981 evenly spaced quantiles (1% ... 99%) of ``GEN5_NATIVE_SIDE_QUANTILES``: drawing from this
    pool uniformly draws from the measured distribution."""
    q, sides = np.array(GEN5_NATIVE_SIDE_QUANTILES, dtype=np.float64).T
    return np.rint(np.interp(np.linspace(1, 99, 981), q, sides)).astype(np.int64)


def id_train_images(id_index: DatasetIndex, size: int) -> np.ndarray:
    """``(N, S, S)`` uint8 train images of the ID index, after checking it is a 1-channel index of ``size``."""
    from stillroom.data.dataset import load_images

    recipe = id_index.recipe
    if int(recipe.get("size", -1)) != size or int(recipe.get("channels", 1)) != 1:
        raise StillroomError(
            f"{id_index.root}: the ID index is {recipe.get('channels', 1)}x{recipe.get('size')}px; the OOD set must be"
            f" built at the same size (--size {recipe.get('size')}) from a 1-channel silhouette index"
        )
    rows = id_index.split_indices("train")
    if len(rows) == 0:
        raise StillroomError(f"{id_index.root}: no train rows to measure the sprite resolution on")
    return load_images(id_index)[rows, 0]


@dataclass(frozen=True)
class NativeTargets:
    natives: np.ndarray  # (M,) int64 native sides; the target of each emoji is drawn uniformly from them
    info: dict[str, Any]  # the recipe's ``resolution_target``
    id_train: np.ndarray | None  # (N, S, S) uint8 ID train images; None without an ID index
    id_effective: np.ndarray | None  # (N',) int64 their nonzero effective resolutions; None without an ID index


def native_targets(id_index: DatasetIndex | None, size: int, padding: float = PADDING) -> NativeTargets:
    """The native sides to draw from (module docstring), never capped at the final object side: a sprite whose
    native side exceeds it is BOX-reduced by the common preprocessing, and so is an OOD mask of that side."""
    object_side = size - 2 * math.floor(padding * size / (1 + 2 * padding) + 0.5)
    info: dict[str, Any]
    id_train = id_effs = None
    if id_index is not None:
        id_train = id_train_images(id_index, size)
        id_effs = np.array([effective_resolution(img) for img in id_train], dtype=np.int64)
        id_effs = id_effs[id_effs > 0]
        saturated = float(np.mean(id_effs >= EFF_SATURATED * object_side))
        info = {"index_hash": id_index.index_hash, "eff_saturated_fraction": saturated}
        if saturated <= 0.05:
            natives = np.rint(id_effs / EFF_PER_NATIVE).astype(np.int64)
            info.update({"from": "id-index", "eff_per_native": EFF_PER_NATIVE})
        else:  # the ID images are too small to show their native pixels: eff reads the object side, not L
            natives = gen5_native_pool()
            info["from"] = "gen5-measured (id-index too small to resolve native pixels)"
    else:
        natives = gen5_native_pool()
        info = {"from": "gen5-measured"}
    info["native_quantiles"] = quantiles(natives)
    info["object_side"] = object_side
    return NativeTargets(natives, info, id_train, id_effs)
