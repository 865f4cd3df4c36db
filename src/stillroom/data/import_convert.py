"""``import_folder``'s per-file work: decode, convert and write one image, in worker processes (REFERENCE 1.1).

``silhouette``: alpha or black-on-white mask -> ``preprocess_mask`` (1 channel, ``SILHOUETTE_PADDING``);
``grayscale`` / ``rgb``: EXIF-rotated, transparency flattened onto white, shorter side resized to ``size`` then
centre-cropped. ``choose_kind`` decides ``auto`` on a sample. A file that cannot be used comes back as a reject
reason, never an exception; lists of at least ``_PARALLEL_MIN`` files go to a process pool in chunks of ``_CHUNK``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.import_sources import Source
from stillroom.data.preprocess import BadImageError, object_mask, open_image, preprocess_mask, to_8bit

__all__ = ["SILHOUETTE_PADDING", "choose_kind", "convert_files"]

SILHOUETTE_PADDING = 0.2  # REFERENCE 1.1
# "auto" inspects at most this many images, spread evenly over the sorted file list.
_AUTO_SAMPLE = 256
# Below this many files a process pool costs more to start than it saves.
_PARALLEL_MIN = 64
_CHUNK = 32
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")


def _open(path: Path) -> Image.Image:
    """Open and fully decode the first frame; raise ValueError with a plain reason for anything unusable."""
    try:
        return open_image(path)
    except BadImageError as err:
        raise ValueError(err.reason) from None


def _traits(path: Path) -> dict[str, Any] | None:
    """What "auto" needs to know about one image; None when it cannot be read (it is rejected later)."""
    try:
        img = _open(path)
    except ValueError:
        return None
    with img:
        mode = img.mode
        try:
            img = to_8bit(img)
        except BadImageError:
            return None
        has_alpha = "A" in img.getbands() or "transparency" in img.info
        clean_alpha = False
        if has_alpha:
            hist = img.convert("RGBA").getchannel("A").histogram()
            clean_alpha = sum(hist[1:255]) == 0
        hist_l = img.convert("L").histogram()
        binary = not has_alpha and sum(hist_l[1:255]) == 0
    return {"mode": mode, "has_alpha": has_alpha, "clean_alpha": clean_alpha, "binary": binary}


def _flatten(img: Image.Image) -> Image.Image:
    """Composite transparency onto white so transparent areas look like an empty background, not black."""
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img


class _EmptySilhouette(Exception):
    """A readable image without object pixels: a reject, not an error."""


def _fully_transparent(img: Image.Image) -> bool:
    if "A" not in img.getbands() and "transparency" not in img.info:
        return False
    return img.convert("RGBA").getchannel("A").getextrema()[1] == 0


def _to_array(img: Image.Image, kind: str, size: int, source: str) -> np.ndarray:
    img = to_8bit(img, source)
    if kind == "silhouette":
        mask = object_mask(img, source=source)
        if not mask.any():
            raise _EmptySilhouette
        return preprocess_mask(mask, size, padding=SILHOUETTE_PADDING, source=source)
    if _fully_transparent(img):
        # Flattened it would be a plain white picture: data without a subject.
        raise ValueError("fully transparent image (nothing to see)")
    img = _flatten(ImageOps.exif_transpose(img))
    img = img.convert("L" if kind == "grayscale" else "RGB")
    w, h = img.size
    s = size / min(w, h)
    # Shorter side to `size`, keep aspect, then centre-crop the longer side.
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    resample = Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _convert_one(path: Path, rel: str, dest: Path, kind: str, size: int) -> tuple[str | None, str | None]:
    """Convert one file and write it as PNG to ``dest``; return (sha256, None) or (None, reason)."""
    try:
        img = _open(path)
    except ValueError as err:
        return None, str(err)
    try:
        with img:
            arr = _to_array(img, kind, size, rel)
    except _EmptySilhouette:
        return None, "empty silhouette (no object pixels: fully transparent or blank)"
    except BadImageError as err:
        return None, err.reason
    except (StillroomError, OSError, ValueError) as err:
        return None, f"cannot convert ({err})"
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data = buf.getvalue()
    dest.write_bytes(data)  # the whole build directory is renamed into place at the end, so no per-file atomicity
    return sha256_bytes(data), None


def _convert_chunk(items: list[tuple[Path, str, Path]], kind: str, size: int) -> list[tuple[str | None, str | None]]:
    return [_convert_one(p, rel, dest, kind, size) for p, rel, dest in items]


def _traits_chunk(paths: list[Path]) -> list[dict[str, Any] | None]:
    return [_traits(p) for p in paths]


def _run_chunked(fn: Any, items: list[Any], workers: int, *args: Any) -> list[Any]:
    if workers < 2 or len(items) < _PARALLEL_MIN:
        return fn(items, *args)
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(fn, chunks, *([a] * len(chunks) for a in args))
        return [r for part in parts for r in part]


def choose_kind(sources: Sequence[Source], workers: int) -> tuple[str, str]:
    """``kind="auto"``: the kind for ``sources`` and the reason, from up to 256 images spread over the list."""
    n, m = len(sources), min(len(sources), _AUTO_SAMPLE)
    picks = sorted({round(i * (n - 1) / max(m - 1, 1)) for i in range(m)})  # evenly spread over all classes
    sample = [sources[i] for i in picks]
    traits = _run_chunked(_traits_chunk, [s.path for s in sample], workers)
    seen = [(s, t) for s, t in zip(sample, traits, strict=True) if t is not None]
    if not seen:
        return "rgb", f"auto: none of {len(sample)} sampled images could be read; defaulting to rgb"
    not_mask = [(s, t) for s, t in seen if not (t["clean_alpha"] or t["binary"])]
    if not not_mask:
        return "silhouette", (
            f"auto: all {len(seen)} sampled images have a clean 0/255 alpha channel or are binary black-and-white"
        )
    s0, t0 = not_mask[0]
    why_not = (
        f"{len(not_mask)} of {len(seen)} sampled images are not masks (e.g. {s0.rel}: "
        + ("alpha has values between 0 and 255" if t0["has_alpha"] else "not pure black-and-white")
        + ")"
    )
    colour = [(s, t) for s, t in seen if t["mode"] not in _GRAY_MODES]
    if not colour:
        return "grayscale", f"auto: {why_not}; all sampled images are grayscale"
    s1, t1 = colour[0]
    return "rgb", f"auto: {why_not}; {len(colour)} are colour (e.g. {s1.rel}, mode {t1['mode']})"


def convert_files(
    items: list[tuple[Path, str, Path]], kind: str, size: int, workers: int
) -> list[tuple[str | None, str | None]]:
    """Convert each ``(source path, name for messages, destination PNG)`` to a ``size x size`` image of ``kind``;
    per item ``(sha256, None)`` or ``(None, reject reason)``, in order (``workers`` processes for large lists)."""
    return _run_chunked(_convert_chunk, items, workers, kind, size)
