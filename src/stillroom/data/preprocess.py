"""Deterministic silhouette preprocessing (seed 000 §2.1; REFERENCE 1.1).

Every image that reaches a model, in-distribution sprite or OOD emoji or a user's folder, goes through the same two
steps so that no source can be told apart by low-level artefacts:

1. ``object_mask``: RGBA/LA/P-with-transparency images are segmented on alpha (alpha > 127, i.e. opacity above 50%,
   is object); images without alpha are taken as ready black-on-white masks (luminance < 128 is object).
2. ``preprocess_mask``: crop to the bounding box of the object, centre it on a square white canvas with padding
   ``round(padding * L)`` on every side (L = longer side of the box), resize to ``size x size`` with PIL's BOX filter
   and binarize at 128, so the output holds only 0 (object, black) and 255 (background, white).

Unusual inputs are converted or refused, never guessed at: 16-bit grayscale (``I;16``) is scaled to 8 bits
(``v >> 8``; PIL's own ``convert("L")`` clips, which would turn mid-grey into white), CMYK and palette images without
transparency go through PIL's conversion to luminance, and 32-bit integer or float images (``I``, ``F``), whose
range is unknown, are a ``StillroomError``. ``open_image`` is the checked way to read a file: it refuses images over
``MAX_IMAGE_PIXELS`` (an error naming the file, where PIL would only warn) and smaller than ``MIN_IMAGE_SIDE``.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stillroom._io import StillroomError

__all__ = [
    "BadImageError",
    "MAX_IMAGE_PIXELS",
    "MIN_IMAGE_SIDE",
    "check_image_size",
    "object_crop",
    "object_mask",
    "open_image",
    "padded_side",
    "preprocess_image",
    "preprocess_mask",
    "to_8bit",
]

# PIL's default MAX_IMAGE_PIXELS, but enforced as an error: PIL only warns between 1x and 2x this.
MAX_IMAGE_PIXELS = 89_478_485
# Below this a shape is a handful of pixels; enlarging it to the training size only makes blocks.
MIN_IMAGE_SIDE = 8
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Far beyond any recipe (sizes 32-224, padding 0.2), small enough that a typo cannot allocate gigabytes.
_MAX_SIZE = 8192
_MAX_PADDING = 10.0


class BadImageError(StillroomError):
    """An unusable image file; ``reason`` is the message without the file name (for rejects reports)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason

    def __reduce__(self) -> tuple:  # raised in worker processes: pickle by (source, reason), not by message
        return (type(self), (self.source, self.reason))


def check_image_size(
    img: Image.Image, source: str, max_pixels: int = MAX_IMAGE_PIXELS, min_side: int = MIN_IMAGE_SIDE
) -> None:
    """Raise ``BadImageError`` for a zero-size, too small, or too large (decompression bomb) image header."""
    w, h = img.size
    if w == 0 or h == 0:
        raise BadImageError(source, f"image has zero size {w}x{h}")
    if w * h > max_pixels:
        raise BadImageError(
            source, f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} (decompression bomb?)"
        )
    if min(w, h) < min_side:
        raise BadImageError(source, f"image is {w}x{h} pixels, too small (at least {min_side} px per side)")


def open_image(
    file: str | Path | bytes, source: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
) -> Image.Image:  # fmt: skip
    """Open and fully decode the first frame of an image file (or its bytes), checking the header first.

    Raises ``BadImageError`` naming ``source`` (default: the path) for a missing or empty file, bytes that are not
    an image, a truncated or corrupt image, and sizes outside ``check_image_size``. The caller closes the image.
    """
    source = source or (str(file) if not isinstance(file, bytes) else "<bytes>")
    if isinstance(file, bytes):
        if not file:
            raise BadImageError(source, "empty file (0 bytes)")
        fh: io.BytesIO | Path = io.BytesIO(file)
    else:
        fh = Path(file)
        try:
            if fh.stat().st_size == 0:
                raise BadImageError(source, "empty file (0 bytes)")
        except FileNotFoundError:
            raise BadImageError(source, "file not found") from None
    try:
        with warnings.catch_warnings():
            # The size is checked below as an error; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
    except Image.DecompressionBombError as err:
        raise BadImageError(source, f"decompression bomb refused ({err})") from None
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as err:  # a directory, no read permission, a mangled header
        raise BadImageError(source, f"cannot open ({getattr(err, 'strerror', None) or err})") from None
    try:
        check_image_size(img, source, max_pixels=max_pixels, min_side=min_side)
        img.load()  # decoding is lazy; truncation only shows here
    except BadImageError:
        img.close()
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        img.close()
        raise BadImageError(source, f"corrupt or truncated image ({err})") from None
    return img


def to_8bit(img: Image.Image, source: str = "<image>") -> Image.Image:
    """``img`` with 8-bit bands: 16-bit grayscale scaled by ``>> 8``; ``I`` and ``F`` (unknown range) refused."""
    if img.mode in _16BIT_MODES:
        arr = np.asarray(img).astype(np.uint16, copy=False)
        gray = Image.fromarray((arr >> 8).astype(np.uint8), "L")
        if "transparency" in img.info:  # a 16-bit tRNS colour: keep it as an alpha band
            alpha = np.where(arr == img.info["transparency"], np.uint8(0), np.uint8(255))
            gray = Image.merge("LA", (gray, Image.fromarray(alpha, "L")))
        return gray
    if img.mode in ("I", "F"):
        raise BadImageError(
            source, f"mode {img.mode} (32-bit {'integer' if img.mode == 'I' else 'float'}) has no known value range;"
            " save the image as 8- or 16-bit"
        )  # fmt: skip
    return img


def object_mask(img: Image.Image, source: str = "<image>", alpha_threshold: int = 127) -> np.ndarray:
    """Boolean ``(H, W)`` mask, True where the object is.

    Images with an alpha channel (RGBA, LA, PA, or P/L/RGB carrying a ``transparency`` entry) use
    ``alpha > alpha_threshold``; the default 127 makes alpha 127 background and 128 object (seed 000 §2.1: "opacity
    above 50%"). Images without alpha are read as black-on-white masks: luminance < 128 is object.
    """
    if not isinstance(img, Image.Image):
        raise StillroomError(f"{source}: expected a PIL image, got {type(img).__name__}")
    if img.width == 0 or img.height == 0:
        raise BadImageError(source, f"image has zero size {img.size}")
    img = to_8bit(img, source)
    try:
        if "A" in img.getbands() or "transparency" in img.info:
            # Converting to RGBA resolves palette transparency and premultiplied modes into one plain alpha band.
            rgba = img if img.mode == "RGBA" else img.convert("RGBA")
            return np.asarray(rgba.getchannel("A")) > alpha_threshold
        return np.asarray(img.convert("L")) < 128
    except (ValueError, OSError) as err:  # a mode PIL cannot turn into luminance
        raise BadImageError(source, f"cannot read mode {img.mode} as a mask ({err})") from None


def padded_side(longer: int, padding: float = 0.2) -> int:
    """Side of the square canvas for an object whose box has longer side ``longer``: ``L + 2 * round(padding * L)``.

    Ties round half up (``floor(x + 0.5)``), not to even, so the canvas never depends on the parity of a tie.
    """
    return longer + 2 * math.floor(padding * longer + 0.5)


def object_crop(mask: np.ndarray, size: int, padding: float, source: str = "<image>") -> tuple[np.ndarray, int]:
    """The checks and the crop every silhouette rendering shares (``preprocess_mask``, ``outline.canonical_outline``):
    ``(crop, side)`` = the boolean bounding box of the object in a 2-D ``mask`` and the side of its padded square
    canvas. ``StillroomError`` naming ``source`` for a mask that is not 2-D, a bad ``size`` or ``padding``, a blank
    mask, or a canvas over ``MAX_IMAGE_PIXELS``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise StillroomError(f"{source}: mask must be 2-D (H, W), got shape {mask.shape}")
    try:
        size_ok = int(size) == size and size >= 1
    except (TypeError, ValueError, OverflowError):  # NaN, inf, not a number
        size_ok = False
    if not size_ok:
        raise StillroomError(f"{source}: size must be a positive integer, got {size!r}")
    if int(size) > _MAX_SIZE:
        raise StillroomError(f"{source}: size {size} is over the limit of {_MAX_SIZE} pixels")
    if not (0 <= padding <= _MAX_PADDING):  # NaN fails every comparison
        raise StillroomError(f"{source}: padding must be a number in [0, {_MAX_PADDING}], got {padding!r}")
    mask = mask.astype(bool, copy=False)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise StillroomError(f"{source}: image has no object pixels (fully transparent or blank), cannot preprocess")
    cols = np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = padded_side(max(crop.shape), padding)
    if side * side > MAX_IMAGE_PIXELS:
        raise StillroomError(f"{source}: padded canvas {side}x{side} is over the limit of {MAX_IMAGE_PIXELS} pixels")
    return crop, side


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
    crop, side = object_crop(mask, size, padding, source)
    size = int(size)  # an integral float (64.0) passes the checks; PIL's resize takes ints only
    h, w = crop.shape
    canvas = np.full((side, side), 255, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w][crop] = 0
    if side != size:
        canvas = np.asarray(Image.fromarray(canvas, "L").resize((size, size), Image.Resampling.BOX))
    return np.where(canvas < 128, np.uint8(0), np.uint8(255))


def preprocess_image(img: Image.Image, size: int, padding: float = 0.2, source: str = "<image>") -> np.ndarray:
    """``preprocess_mask(object_mask(img))``: a PIL image in, a ``(size, size)`` uint8 {0, 255} array out."""
    return preprocess_mask(object_mask(img, source=source), size, padding=padding, source=source)
