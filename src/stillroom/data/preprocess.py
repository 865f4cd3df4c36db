"""Deterministic silhouette preprocessing (seed 000 §2.1; REFERENCE 1.1).

Every image that reaches a model, in-distribution sprite or OOD emoji or a user's folder, goes through the same two
steps so that no source can be told apart by low-level artefacts:

1. ``object_mask``: RGBA/LA/P-with-transparency images are segmented on alpha (alpha > 127, i.e. opacity above 50%,
   is object); images without alpha are taken as ready black-on-white masks (luminance < 128 is object).
2. ``preprocess_mask``: crop to the bounding box of the object, centre it on a square white canvas with padding
   ``round(padding * L)`` on every side (L = longer side of the box), resize to ``size x size`` with PIL's BOX filter
   and binarize at 128, so the output holds only 0 (object, black) and 255 (background, white).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from stillroom._io import StillroomError

__all__ = ["object_mask", "preprocess_mask", "preprocess_image", "padded_side"]


def object_mask(img: Image.Image, source: str = "<image>", alpha_threshold: int = 127) -> np.ndarray:
    """Boolean ``(H, W)`` mask, True where the object is.

    Images with an alpha channel (RGBA, LA, PA, or P/L/RGB carrying a ``transparency`` entry) use
    ``alpha > alpha_threshold``; the default 127 makes alpha 127 background and 128 object (seed 000 §2.1: "opacity
    above 50%"). Images without alpha are read as black-on-white masks: luminance < 128 is object.
    """
    if not isinstance(img, Image.Image):
        raise StillroomError(f"{source}: expected a PIL image, got {type(img).__name__}")
    if img.width == 0 or img.height == 0:
        raise StillroomError(f"{source}: image has zero size {img.size}")
    if "A" in img.getbands() or "transparency" in img.info:
        # Converting to RGBA resolves palette transparency and premultiplied modes into one plain alpha band.
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        return np.asarray(rgba.getchannel("A")) > alpha_threshold
    return np.asarray(img.convert("L")) < 128


def padded_side(longer: int, padding: float = 0.2) -> int:
    """Side of the square canvas for an object whose box has longer side ``longer``: ``L + 2 * round(padding * L)``.

    Ties round half up (``floor(x + 0.5)``), not to even, so the canvas never depends on the parity of a tie.
    """
    return longer + 2 * math.floor(padding * longer + 0.5)


def preprocess_mask(mask: np.ndarray, size: int, padding: float = 0.2, source: str = "<image>") -> np.ndarray:
    """Crop, centre, pad, resize and binarize a boolean object mask.

    Args:
        mask: ``(H, W)`` boolean (or 0/1) array, True = object.
        size: output side in pixels.
        padding: fraction of the box's longer side added as white margin on every side.
        source: file name used in error messages.

    Returns:
        ``(size, size)`` uint8 array with values in {0, 255}; 0 = object (black), 255 = background (white).
        The object is centred with offsets ``(side - w) // 2`` and ``(side - h) // 2``; BOX resampling of the 0/255
        canvas is thresholded at 128 (values < 128 become 0). PIL rounds the 8-bit average half up, so an output
        pixel exactly half covered by the object (127.5) becomes 128: background.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise StillroomError(f"{source}: mask must be 2-D (H, W), got shape {mask.shape}")
    if int(size) != size or size < 1:
        raise StillroomError(f"{source}: size must be a positive integer, got {size!r}")
    if not (padding >= 0 and math.isfinite(padding)):
        raise StillroomError(f"{source}: padding must be a finite number >= 0, got {padding!r}")
    mask = mask.astype(bool, copy=False)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise StillroomError(f"{source}: image has no object pixels (fully transparent or blank), cannot preprocess")
    cols = np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    side = padded_side(max(h, w), padding)
    canvas = np.full((side, side), 255, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w][crop] = 0
    if side != size:
        canvas = np.asarray(Image.fromarray(canvas, "L").resize((size, size), Image.Resampling.BOX))
    return np.where(canvas < 128, np.uint8(0), np.uint8(255))


def preprocess_image(img: Image.Image, size: int, padding: float = 0.2, source: str = "<image>") -> np.ndarray:
    """``preprocess_mask(object_mask(img))``: a PIL image in, a ``(size, size)`` uint8 {0, 255} array out."""
    return preprocess_mask(object_mask(img, source=source), size, padding=padding, source=source)
