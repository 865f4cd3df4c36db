"""Emoji OOD set, render step: SVG -> object mask -> sprite-like silhouette -> audit, in worker processes
(REFERENCE 1.2; seed 000 §2.5; pipeline steps 1-3 in ``ood_emoji``).

An icon's SVG (iconify ``body`` in its ``viewBox``, ``icon_svg``) is rendered with resvg-py large enough to give
``RENDER_OVERSAMPLE`` pixels per pixel of its native target side; the object is alpha > 127 (``render_mask``). The
mask goes to sprite-like resolution (``emoji_resolution.sprite_like``) and through the audit
(``emoji_audit.audit_mask``); a render that fails, draws nothing or spans less than ``MIN_CANVAS_FRACTION`` of its
canvas is rejected first. ``render_all`` runs chunks of icons in a process pool and returns the outcomes in
candidate order, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import StillroomError
from stillroom.data.emoji_audit import MIN_CANVAS_FRACTION, AuditThresholds, audit_mask
from stillroom.data.emoji_resolution import effective_resolution, sprite_like
from stillroom.data.outline import Outline
from stillroom.data.preprocess import object_mask
from stillroom.data.sprites import ALPHA_THRESHOLD
from stillroom.data.topology import object_box

__all__ = ["RENDER_OVERSAMPLE", "MAX_RENDER_PX", "RenderTask", "RenderOutcome", "icon_svg", "render_mask", "render_all"]

RENDER_OVERSAMPLE = 3  # rendered pixels per sprite-like pixel: the BOX downscale averages 3 x 3 of them
MAX_RENDER_PX = 2048
_CHUNK = 48  # emoji per worker task


def icon_svg(icon: Mapping[str, Any], default_width: float, default_height: float, px: int = 256) -> str:
    """A standalone SVG document for one iconify icon, ``px`` pixels on its longer side."""
    w = float(icon.get("width", default_width))
    h = float(icon.get("height", default_height))
    left, top = float(icon.get("left", 0)), float(icon.get("top", 0))
    scale = px / max(w, h)
    body = str(icon["body"])
    transforms = []
    if icon.get("rotate"):  # quarter turns, about the centre of the view box
        transforms.append(f"rotate({90 * int(icon['rotate'])} {left + w / 2} {top + h / 2})")
    if icon.get("hFlip") or icon.get("vFlip"):
        sx, sy = (-1 if icon.get("hFlip") else 1), (-1 if icon.get("vFlip") else 1)
        cx, cy = left + w / 2, top + h / 2
        transforms.append(f"translate({cx} {cy}) scale({sx} {sy}) translate({-cx} {-cy})")
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{max(1, round(w * scale))}" height="{max(1, round(h * scale))}" '
        f'viewBox="{left:g} {top:g} {w:g} {h:g}">{body}</svg>'
    )


def render_mask(svg: str, source: str = "<svg>") -> np.ndarray:
    """Render ``svg`` with resvg-py; boolean ``(H, W)`` object mask (alpha > 127). Raises ``StillroomError``."""
    try:
        import resvg_py
    except ImportError:
        raise StillroomError("rendering emoji needs resvg-py: pip install resvg-py") from None
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, skip_system_fonts=True)
        with Image.open(io.BytesIO(bytes(png))) as im:
            return object_mask(im.convert("RGBA"), source=source, alpha_threshold=ALPHA_THRESHOLD)
    except (ValueError, OSError) as err:
        raise StillroomError(f"{source}: resvg cannot render it ({err})") from None


@dataclass(frozen=True)
class RenderTask:
    key: int  # position in the candidate list
    source: str  # "<prefix>:<name>" for messages
    svg_icon: tuple[tuple[str, Any], ...]  # icon fields (hashable for pickling)
    default_wh: tuple[float, float]
    target: int  # native side to bring the object to


@dataclass(frozen=True)
class RenderOutcome:
    key: int
    reasons: tuple[str, ...]  # failed audit reasons; empty = passed
    image: np.ndarray | None  # (S, S) uint8 when rendered
    side: int
    eff: int


def _render_one(item: RenderTask, size: int, limits: AuditThresholds, outline: Outline | None = None) -> RenderOutcome:
    icon = dict(item.svg_icon)
    w, h = item.default_wh
    need = RENDER_OVERSAMPLE * item.target  # rendered pixels along the object's longer side
    px = max(64, math.ceil(need / 0.8))  # emoji drawings span most of their canvas; re-rendered below if not
    try:
        mask = render_mask(icon_svg(icon, w, h, px), source=item.source)
        box = object_box(mask)
        if box is None:
            return RenderOutcome(item.key, ("empty",), None, 0, 0)
        longer = max(box.shape)
        if longer < MIN_CANVAS_FRACTION * max(mask.shape):
            return RenderOutcome(item.key, ("too_small",), None, 0, 0)
        if longer < need:  # a vector drawing loses nothing by rendering it larger; an upscaled raster would
            px = min(MAX_RENDER_PX, math.ceil(px * need / longer) + 1)
            mask = render_mask(icon_svg(icon, w, h, px), source=item.source)
    except StillroomError:
        return RenderOutcome(item.key, ("render_error",), None, 0, 0)
    try:
        image = sprite_like(mask, item.target, size, outline=outline)
    except StillroomError:
        return RenderOutcome(item.key, ("empty",), None, 0, 0)
    return RenderOutcome(item.key, tuple(audit_mask(image, *limits)), image, item.target, effective_resolution(image))


def _render_chunk(
    items: list[RenderTask], size: int, limits: AuditThresholds, outline: Outline | None = None
) -> list[RenderOutcome]:
    return [_render_one(it, size, limits, outline) for it in items]


def render_all(
    items: list[RenderTask],
    size: int,
    limits: AuditThresholds,
    workers: int,
    progress: bool,
    outline: Outline | None = None,
) -> list[RenderOutcome]:
    """Render, bring to ``size`` (through ``outline`` when given) and audit every task (``workers`` processes,
    chunks of 48); outcomes by ``key``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    out: list[RenderOutcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("ood-emoji: render + audit", total=len(items))
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                out.extend(_render_chunk(chunk, size, limits, outline))
                bar.advance(job, len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_render_chunk, c, size, limits, outline) for c in chunks]
                try:
                    for fut, chunk in zip(futures, chunks, strict=True):  # in order: deterministic output
                        out.extend(fut.result())
                        bar.advance(job, len(chunk))
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    return sorted(out, key=lambda o: o.key)
