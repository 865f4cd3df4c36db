"""The out-of-distribution sink set: audited emoji silhouettes (REFERENCE 1.2; seed 000 §2.5).

Seed 000 fills its rejection class with COCO masks that passed a geometric audit. We use vector emoji instead, from
three pinned npm packages (``ICONIFY_EMOJI_SETS``: fluent-emoji-flat MIT, twemoji CC-BY-4.0, noto Apache-2.0),
categories ``CATEGORIES``. Pipeline, one emoji at a time (fetch -> decode -> preprocess -> audit -> dedup -> split
-> write, as in ``sprites.py``):

1. render: the icon's SVG (iconify ``body`` in its ``viewBox``) is rendered with resvg-py, large enough to give
   ``RENDER_OVERSAMPLE`` pixels per pixel of step 2; the object is alpha > 127 (``object_mask``). Skin-tone variants
   are skipped by default: they differ from the neutral emoji only in colour, so their silhouettes are duplicates
   (``tone_variants=True`` keeps them).
2. sprite-like resolution (REFERENCE 1.2 (a)): sprites are enlarged pixel art with staircase edges; a smooth render
   would let a model reject OOD by edge texture. The mask is cropped to its box and BOX-downscaled (binarized at
   half coverage) so that its longer side is a native size ``L`` drawn from the sprites' distribution, then goes
   through the common ``preprocess_mask``, which enlarges it exactly as it enlarges a sprite of that native size.
   ``L`` is drawn from ``GEN5_NATIVE_SIDE_QUANTILES`` (the measured native sides of the gen-V sprites), or, when
   ``id_index`` is given and its images are large enough to show their native pixels, from its train images:
   ``effective_resolution`` (distinct consecutive rows/columns of the object's box: the native pixel count of
   enlarged pixel art) divided by ``EFF_PER_NATIVE``. At 64 px the object spans 46 pixels, fewer than most sprites'
   native side (median 58), so the effective resolution there reads the object side, not ``L``; the builder
   detects that (more than 5% of ID images at >= ``EFF_SATURATED`` x the object side) and uses the measured table.
   ``L`` is not capped at the final object side: a sprite larger than that is BOX-reduced by ``preprocess_mask``
   after its native binarization, and the OOD mask must take the same two quantization steps to get the same
   edge texture (an earlier cap at the object side, with ``L`` read from 64 px images, drew ``L`` around 45
   instead of 58).
3. audit, on the final ``size x size`` mask the model sees, counting object components (8-connectivity),
   internal holes (background components, 4-connectivity, not touching the border) and box fill = object pixels /
   box area. ``audit="seed000"`` is seed 000 §2.5 as written: reject more than one component, any hole, or fill
   below ``MIN_FILL`` = 15%. ``audit="matched"`` (the default) is where we deviate from the seed: it allows up to
   the ``MATCHED_QUANTILE`` (95%) quantile of components and holes over the ID train images (``matched_limits``;
   without ``id_index``, ``DEFAULT_MATCHED_LIMITS``, 2 components and 9 holes, measured on species 1-151 at 64 px)
   and keeps the fill rule. Why: 59% of the sprite silhouettes have a hole and 8% have several pieces, so the
   seed's audit leaves an OOD set that never has either, and "has a hole" becomes a cue for "in-distribution"
   (shortcut probe, species 1-151 at 64 px: topology AUROC 0.946 seed000 -> 0.866 matched, edge 0.978 -> 0.960,
   and 2,239 -> 3,065 kept). Seed 000 audited BiRefNet masks, whose holes and fragments are segmentation errors;
   an emoji's holes and pieces are drawn on purpose. Two rejections of ours come first and are counted apart:
   ``render_error``/``empty`` (resvg fails or draws nothing) and ``too_small`` (the drawing's box spans less than
   ``MIN_CANVAS_FRACTION`` of its canvas side: a detail, not an object silhouette). Every reason a mask fails is
   counted (``audit.rejected_by_reason``; a mask may fail several), plus exclusive totals.
4. dedup across all sets at the 1% rule (``dedup_masks``), in (emoji name, set) order, so the same concept drawn
   alike by two sets is kept once.
5. split by emoji name (``group``; skin-tone and set variants share it): the sorted names are shuffled with
   ``seed`` and cut 80/10/10, never a random image split (the same concept appears in several art styles).

Known limit: the edge-texture shortcut probe stays high (species 1-151 at 64 px, gradient boosting AUROC 0.960
with the defaults). It is not resolution: ID and OOD masks now take the same two quantization steps. Sprite
outlines carry hand-placed detail at the native pixel scale (the staircase fraction alone reaches AUROC 0.80);
resampling the OOD set to the ID's holes / pieces / isoperimetric distribution kept 316 of 3,065 images and left
the edge probe at 0.94, and flipping boundary pixels at the native scale (p = 0.1) only reached 0.92. Those are
not used; compare a model's OOD AUROC with the probe, or train with edge-texture augmentation on both sources.

The dataset holds one class, ``"ood"``; ``merge.merge_with_sink`` appends it to an ID index as class K. When
``id_index`` is given the ID-vs-OOD shortcut probe (``shortcuts``) is run and stored in ``index.json``.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.builder import check_out_dir, default_workers, install_build, new_build_dir, rmtree
from stillroom.data.dedup import dedup_masks, exact_distinct, pack_masks
from stillroom.data.fetch import fetch_npm_package, read_tar_members, sri_sha512
from stillroom.data.index import DatasetIndex, IndexRow, load_index, update_index_meta, write_index
from stillroom.data.preprocess import object_mask, preprocess_mask
from stillroom.data.splits import DEFAULT_FRACTIONS, block_sizes
from stillroom.data.sprites import ALPHA_THRESHOLD, PADDING
from stillroom.data.stats import silhouette_train_stats
from stillroom.data.topology import mask_topology, object_box

__all__ = [
    "ICONIFY_EMOJI_SETS",
    "IconSet",
    "CATEGORIES",
    "AUDIT_REASONS",
    "MIN_FILL",
    "RENDER_OVERSAMPLE",
    "AUDIT_MODES",
    "DEFAULT_AUDIT",
    "MATCHED_QUANTILE",
    "DEFAULT_MATCHED_LIMITS",
    "GEN5_NATIVE_SIDE_QUANTILES",
    "matched_limits",
    "read_iconify",
    "icon_svg",
    "render_mask",
    "effective_resolution",
    "sprite_like",
    "mask_topology",
    "audit_mask",
    "concept_name",
    "build_ood_emoji",
]

# (npm spec, dist.integrity), checked with `npm view <spec> dist.integrity` and against `npm pack` output.
ICONIFY_EMOJI_SETS: tuple[tuple[str, str], ...] = (
    (
        "@iconify-json/fluent-emoji-flat@1.2.6",
        "sha512-RY47RgPb47fYUiyrA64sIOL0+UU02s29sXpNBbIQRBUlPlfNFTKUmZDERGuxDs/7yNGWqQYvuaSYM1M4fRXlUw==",
    ),
    (
        "@iconify-json/twemoji@1.2.5",
        "sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw==",
    ),
    (
        "@iconify-json/noto@1.2.9",
        "sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw==",
    ),
)
CATEGORIES = ("Objects", "Travel & Places", "Animals & Nature", "People & Body", "Food & Drink", "Activities")
AUDIT_REASONS = ("render_error", "empty", "too_small", "components", "holes", "low_fill")
AUDIT_MODES = ("seed000", "matched")
DEFAULT_AUDIT = "matched"
MIN_FILL = 0.15
MATCHED_QUANTILE = 0.95  # matched audit: allow components / holes up to this quantile of the ID train images
# matched-audit limits without an ID index: the 95% quantiles over species 1-151 train images at 64 px (measured)
DEFAULT_MATCHED_LIMITS = {"max_components": 2, "max_holes": 9}
MIN_CANVAS_FRACTION = 0.25
RENDER_OVERSAMPLE = 3  # rendered pixels per sprite-like pixel: the BOX downscale averages 3 x 3 of them
MAX_RENDER_PX = 2048
# Native longer side of the object box of every gen-V black-white animated frame, species 1-649 (105,521 frames,
# measured): quantiles at 1, 5, 10, ..., 95, 99%. The targets are drawn from it by inverse-CDF interpolation.
GEN5_NATIVE_SIDE_QUANTILES = (
    (1, 32), (5, 36), (10, 39), (15, 42), (20, 44), (25, 47), (30, 50), (35, 52), (40, 55), (45, 57), (50, 58),
    (55, 61), (60, 63), (65, 66), (70, 69), (75, 71), (80, 74), (85, 77), (90, 80), (95, 86), (99, 97),
)  # fmt: skip
EFF_SATURATED = 0.85  # ID effective resolution >= this x the object side: the ID size cannot resolve native pixels
EFF_PER_NATIVE = 0.89  # effective_resolution / native side, median over species 1-151 at 128 px (measured)
_ICONIFY_DEFAULT_SIDE = 16  # iconify JSON: width/height default to 16 when absent
_TONES = r"(?:light|medium-light|medium|medium-dark|dark)"
_TONE_SUFFIX = re.compile(rf"(?:-{_TONES}-skin-tone)+$")  # twemoji, noto: "...-medium-dark-skin-tone"
_FLUENT_TONE = re.compile(rf"-{_TONES}$")  # fluent: "artist-medium-dark" (only when all five siblings exist)
_FLUENT_TONE_NAMES = ("light", "medium-light", "medium", "medium-dark", "dark")
_CHUNK = 48  # emoji per worker task


# --- reading iconify packages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IconSet:
    spec: str
    integrity: str
    prefix: str
    license: str
    width: float
    height: float
    icons: dict[str, dict[str, Any]]  # name -> {"body", "width"?, "height"?, "left"?, "top"?, ...}
    categories: dict[str, list[str]]


def read_iconify(tarball: str | Path, spec: str = "", integrity: str = "") -> IconSet:
    """Read an ``@iconify-json/*`` tarball: ``package/icons.json`` (prefix, icons, aliases, default width/height),
    ``package/metadata.json`` (``categories``: name -> icon names) and ``package/info.json`` (license)."""
    wanted = {"package/icons.json", "package/metadata.json", "package/info.json"}
    try:
        found: dict[str, Any] = {k: json.loads(v.decode("utf-8")) for k, v in read_tar_members(tarball, wanted).items()}
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StillroomError(f"{tarball}: a package JSON file is not valid JSON ({err})") from None
    if "package/icons.json" not in found:
        raise StillroomError(f"{tarball}: no package/icons.json; not an @iconify-json package")
    data = found["package/icons.json"]
    if not isinstance(data.get("icons"), dict):
        raise StillroomError(f"{tarball}: package/icons.json has no 'icons' mapping")
    categories = found.get("package/metadata.json", {}).get("categories") or data.get("categories")
    if not isinstance(categories, dict):
        raise StillroomError(f"{tarball}: no emoji categories (package/metadata.json 'categories')")
    icons = dict(data["icons"])
    for name, alias in (data.get("aliases") or {}).items():  # plain aliases point at a parent icon's body
        parent, hops = alias.get("parent"), 0
        while parent in (data.get("aliases") or {}) and hops < 8:
            parent, hops = data["aliases"][parent].get("parent"), hops + 1
        if name not in icons and parent in data["icons"]:
            icons[name] = {**data["icons"][parent], **{k: v for k, v in alias.items() if k != "parent"}}
    info = found.get("package/info.json", {})
    return IconSet(
        spec=spec,
        integrity=integrity,
        prefix=str(data.get("prefix", Path(str(tarball)).stem)),
        license=str((info.get("license") or {}).get("spdx", "")),
        width=float(data.get("width", _ICONIFY_DEFAULT_SIDE)),
        height=float(data.get("height", _ICONIFY_DEFAULT_SIDE)),
        icons=icons,
        categories={str(k): list(v) for k, v in categories.items()},
    )


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


# --- resolution matching --------------------------------------------------------------------------------------


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


def sprite_like(mask: np.ndarray, side: int, size: int, padding: float = PADDING) -> np.ndarray:
    """Bring a high-resolution boolean mask to sprite-like resolution, then preprocess it to ``size``.

    The object's box is BOX-downscaled so that its longer side is ``side`` pixels and binarized at half coverage
    (a pixel-art-like mask of that native size), then passed to the common ``preprocess_mask``. Returns the
    ``(size, size)`` uint8 0/255 image. A mask smaller than ``side`` keeps its own resolution (never upscaled
    here; ``preprocess_mask`` enlarges it like a sprite).
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
    return preprocess_mask(small, size, padding=padding)


# --- audit ----------------------------------------------------------------------------------------------------


def audit_mask(image: np.ndarray, min_fill: float = MIN_FILL, max_components: int = 1, max_holes: int = 0) -> list[str]:
    """Audit of a final silhouette: the failed reasons among ``components``, ``holes``, ``low_fill`` (empty list =
    accepted). An empty image fails as ``empty``.

    The defaults are seed 000 §2.5 (audit mode ``seed000``): one component, no hole, box fill >= ``min_fill``. The
    ``matched`` mode passes ``max_components`` / ``max_holes`` taken from the ID images (``matched_limits``).
    """
    topo = mask_topology(image)
    if topo["area"] == 0:
        return ["empty"]
    reasons = []
    if topo["components"] > max_components:
        reasons.append("components")
    if topo["holes"] > max_holes:
        reasons.append("holes")
    if topo["fill"] < min_fill:
        reasons.append("low_fill")
    return reasons


def matched_limits(images: np.ndarray, quantile: float = MATCHED_QUANTILE) -> dict[str, int]:
    """``max_components`` / ``max_holes`` for the ``matched`` audit: the ``quantile`` of each over ``images``
    (``(N, S, S)`` uint8 ID silhouettes), rounded up, and never stricter than seed 000 (>= 1 and >= 0)."""
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise StillroomError(f"matched_limits: expected a non-empty (N, S, S) stack, got shape {images.shape}")
    if not 0 < quantile <= 1:
        raise StillroomError(f"matched_limits: quantile must be in (0, 1], got {quantile!r}")
    topo = [mask_topology(img) for img in images]
    comps = np.array([t["components"] for t in topo], dtype=np.float64)
    holes = np.array([t["holes"] for t in topo], dtype=np.float64)
    return {
        "max_components": max(1, math.ceil(float(np.quantile(comps, quantile)))),
        "max_holes": max(0, math.ceil(float(np.quantile(holes, quantile)))),
    }


# --- names ----------------------------------------------------------------------------------------------------


def concept_name(name: str, fluent_tones: frozenset[str] = frozenset()) -> str:
    """The emoji concept a set's icon name stands for: skin-tone suffixes removed.

    ``...-medium-dark-skin-tone`` (twemoji, noto; repeated for couples) always; a fluent-style bare suffix
    (``-dark``, ``-medium-light``...) only for names in ``fluent_tones`` (those whose five tone siblings all exist,
    so ``traffic-light`` stays itself).
    """
    base = _TONE_SUFFIX.sub("", name)
    if base == name and name in fluent_tones:
        base = _FLUENT_TONE.sub("", name)
    return base


def _fluent_tone_names(names: Sequence[str]) -> frozenset[str]:
    have = set(names)
    out = set()
    for n in names:
        m = _FLUENT_TONE.search(n)
        if m:
            base = n[: m.start()]
            if all(f"{base}-{t}" in have for t in _FLUENT_TONE_NAMES):
                out.add(n)
    return frozenset(out)


# --- worker ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    key: int  # position in the candidate list
    source: str  # "<prefix>:<name>" for messages
    svg_icon: tuple[tuple[str, Any], ...]  # icon fields (hashable for pickling)
    default_wh: tuple[float, float]
    target: int


@dataclass(frozen=True)
class _Outcome:
    key: int
    reasons: tuple[str, ...]
    image: np.ndarray | None  # (S, S) uint8 when rendered
    side: int
    eff: int


_Limits = tuple[float, int, int]  # (min_fill, max_components, max_holes): audit_mask's thresholds


def _render_one(item: _Item, size: int, limits: _Limits) -> _Outcome:
    icon = dict(item.svg_icon)
    w, h = item.default_wh
    need = RENDER_OVERSAMPLE * item.target  # rendered pixels along the object's longer side
    px = max(64, math.ceil(need / 0.8))  # emoji drawings span most of their canvas; re-rendered below if not
    try:
        mask = render_mask(icon_svg(icon, w, h, px), source=item.source)
        box = object_box(mask)
        if box is None:
            return _Outcome(item.key, ("empty",), None, 0, 0)
        longer = max(box.shape)
        if longer < MIN_CANVAS_FRACTION * max(mask.shape):
            return _Outcome(item.key, ("too_small",), None, 0, 0)
        if longer < need:  # a vector drawing loses nothing by rendering it larger; an upscaled raster would
            px = min(MAX_RENDER_PX, math.ceil(px * need / longer) + 1)
            mask = render_mask(icon_svg(icon, w, h, px), source=item.source)
    except StillroomError:
        return _Outcome(item.key, ("render_error",), None, 0, 0)
    try:
        image = sprite_like(mask, item.target, size)
    except StillroomError:
        return _Outcome(item.key, ("empty",), None, 0, 0)
    return _Outcome(item.key, tuple(audit_mask(image, *limits)), image, item.target, effective_resolution(image))


def _render_chunk(items: list[_Item], size: int, limits: _Limits) -> list[_Outcome]:
    return [_render_one(it, size, limits) for it in items]


def _render_all(items: list[_Item], size: int, limits: _Limits, workers: int, progress: bool) -> list[_Outcome]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    out: list[_Outcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("ood-emoji: render + audit", total=len(items))
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                out.extend(_render_chunk(chunk, size, limits))
                bar.advance(job, len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_render_chunk, c, size, limits) for c in chunks]
                try:
                    for fut, chunk in zip(futures, chunks, strict=True):  # in order: deterministic output
                        out.extend(fut.result())
                        bar.advance(job, len(chunk))
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    return sorted(out, key=lambda o: o.key)


# --- ID resolution distribution -------------------------------------------------------------------------------


def _gen5_native_pool() -> np.ndarray:
    """Native sides at 981 evenly spaced quantiles (1% ... 99%) of ``GEN5_NATIVE_SIDE_QUANTILES``: drawing from this
    pool uniformly draws from the measured distribution."""
    q, sides = np.array(GEN5_NATIVE_SIDE_QUANTILES, dtype=np.float64).T
    return np.rint(np.interp(np.linspace(1, 99, 981), q, sides)).astype(np.int64)


def _id_train_images(id_index: DatasetIndex, size: int) -> np.ndarray:
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


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    qs = np.percentile(values, [5, 25, 50, 75, 95])
    return {f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), qs, strict=True)}


# --- tarballs -------------------------------------------------------------------------------------------------


def _resolve_tarballs(
    packages: Sequence[tuple[str, str]], tarballs: Sequence[str | Path] | Mapping[str, str | Path] | None
) -> dict[str, Path | None]:
    """Map each pinned spec to a local tarball given by the user (matched by integrity), or None (fetch/cache)."""
    out: dict[str, Path | None] = {spec: None for spec, _ in packages}
    if tarballs is None:
        return out
    if isinstance(tarballs, Mapping):
        for spec, path in tarballs.items():
            if spec not in out:
                raise StillroomError(f"tarball for {spec!r}: not one of the pinned sets {', '.join(out)}")
            out[spec] = Path(path)
        return out
    by_sri = {integrity: spec for spec, integrity in packages}
    for path in tarballs:
        path = Path(path)
        if not path.is_file():
            raise StillroomError(f"{path}: tarball not found")
        spec = by_sri.get(sri_sha512(path))
        if spec is None:
            raise StillroomError(
                f"{path}: matches none of the pinned emoji packages ({', '.join(out)}); wrong version or corrupt"
            )
        out[spec] = path
    return out


# --- builder --------------------------------------------------------------------------------------------------


def _split_by_group(groups: list[str], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
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


def build_ood_emoji(
    out_dir: str | Path,
    size: int = 128,
    id_index: DatasetIndex | str | Path | None = None,
    tarballs: Sequence[str | Path] | Mapping[str, str | Path] | None = None,
    seed: int = 0,
    dedup_threshold: float = 0.01,
    min_fill: float = MIN_FILL,
    categories: Sequence[str] = CATEGORIES,
    tone_variants: bool = False,
    workers: int | None = None,
    progress: bool = True,
    packages: Sequence[tuple[str, str]] = ICONIFY_EMOJI_SETS,
    cache_dir: str | Path | None = None,
    probe: bool = True,
    audit: str = DEFAULT_AUDIT,
) -> DatasetIndex:
    """Build the emoji OOD set into ``out_dir`` (one class ``"ood"``, group = emoji name) and return its index.

    Args:
        out_dir: absent, empty, or a previous Stillroom dataset (replaced as a whole, like ``build_sprites``).
        size: output side; must equal the ID index's size when ``id_index`` is given.
        id_index: the ID silhouette index whose train images give the target resolution distribution (when they
            resolve native pixels), the ``matched`` audit limits and the ID side of the shortcut probe; None:
            ``GEN5_NATIVE_SIDE_QUANTILES`` and ``DEFAULT_MATCHED_LIMITS``.
        tarballs: local ``.tgz`` files (matched to the pins by integrity) or ``{spec: path}``; the rest is taken
            from the cache or fetched with ``npm pack``.
        seed: draws the target resolutions and the split by name.
        dedup_threshold: near-duplicate rule across all sets (fraction of ``size * size`` pixels).
        min_fill: audit threshold on object pixels / box area.
        categories: iconify category names to keep.
        tone_variants: render skin-tone variants too (duplicates of the neutral silhouette).
        packages: ``(npm spec, integrity)`` pins; tests pass their own.
        probe: run the shortcut probe against ``id_index`` (ignored without one).
        audit: ``"matched"`` (default: components and holes allowed up to the ID distribution's 95% quantile) or
            ``"seed000"`` (seed 000 §2.5: one component, no hole); both reject box fill below ``min_fill``.

    ``index.json`` holds the recipe (sources, resolution targets, audit thresholds, train mean/std), ``audit``
    (candidates, skipped, rejections by reason, per set), ``dedup``, ``split_info``, ``resolution`` (ID and OOD
    effective-resolution quantiles), ``near_duplicates`` (OOD test vs OOD train distance) and ``shortcut_probe``.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if isinstance(size, bool) or int(size) != size or size < 8:
        raise StillroomError(f"size must be an integer >= 8, got {size!r}")
    size = int(size)
    if not 0 <= dedup_threshold < 1:
        raise StillroomError(f"dedup_threshold must be in [0, 1), got {dedup_threshold!r}")
    if not 0 <= min_fill < 1:
        raise StillroomError(f"min_fill must be in [0, 1), got {min_fill!r}")
    if not packages:
        raise StillroomError("packages: no emoji sets given")
    workers = default_workers() if workers is None else int(workers)
    check_out_dir(out_dir)
    if id_index is not None and not isinstance(id_index, DatasetIndex):
        id_index = load_index(id_index)

    if audit not in AUDIT_MODES:
        raise StillroomError(f"audit must be one of {', '.join(AUDIT_MODES)}, got {audit!r}")

    # Native sides to draw from (module docstring, step 2), never capped at the final object side: a sprite whose
    # native side exceeds it is BOX-reduced by the common preprocessing, and so is an OOD mask of that side.
    object_side = size - 2 * math.floor(PADDING * size / (1 + 2 * PADDING) + 0.5)
    id_effs = np.zeros(0, dtype=np.int64)
    id_train = np.zeros((0, size, size), dtype=np.uint8)
    target_info: dict[str, Any]
    if id_index is not None:
        id_train = _id_train_images(id_index, size)
        id_effs = np.array([effective_resolution(img) for img in id_train], dtype=np.int64)
        id_effs = id_effs[id_effs > 0]
        saturated = float(np.mean(id_effs >= EFF_SATURATED * object_side))
        target_info = {"index_hash": id_index.index_hash, "eff_saturated_fraction": saturated}
        if saturated <= 0.05:
            natives = np.rint(id_effs / EFF_PER_NATIVE).astype(np.int64)
            target_info.update({"from": "id-index", "eff_per_native": EFF_PER_NATIVE})
        else:  # the ID images are too small to show their native pixels: eff reads the object side, not L
            natives = _gen5_native_pool()
            target_info["from"] = "gen5-measured (id-index too small to resolve native pixels)"
    else:
        natives = _gen5_native_pool()
        target_info = {"from": "gen5-measured"}
    target_info["native_quantiles"] = _quantiles(natives)
    target_info["object_side"] = object_side

    # Audit thresholds (module docstring, step 3).
    if audit == "seed000":
        limits = {"max_components": 1, "max_holes": 0, "from": "seed000"}
    elif id_index is not None:
        limits = {**matched_limits(id_train), "from": f"id-index train, quantile {MATCHED_QUANTILE}"}
    else:
        limits = {**DEFAULT_MATCHED_LIMITS, "from": "default (species 1-151 at 64 px)"}
    audit_limits: _Limits = (float(min_fill), int(limits["max_components"]), int(limits["max_holes"]))

    sets: list[IconSet] = []
    local = _resolve_tarballs(packages, tarballs)
    for spec, integrity in packages:
        path = fetch_npm_package(spec, integrity, tarball=local[spec], cache_dir=cache_dir)
        sets.append(read_iconify(path, spec, integrity))

    # candidates in a fixed order: set, then category, then name
    rng = np.random.default_rng(seed)
    items: list[_Item] = []
    meta_rows: list[tuple[int, str, str, str]] = []  # (set idx, icon name, concept, category)
    audit_sets: dict[str, dict[str, Any]] = {}
    for s, iconset in enumerate(sets):
        missing_cats = [c for c in categories if c not in iconset.categories]
        if missing_cats:
            raise StillroomError(
                f"{iconset.spec}: categories {', '.join(map(repr, missing_cats))} not found; it has "
                f"{', '.join(map(repr, iconset.categories))}"
            )
        names = [(c, n) for c in categories for n in iconset.categories[c]]
        fluent = _fluent_tone_names([n for _, n in names])
        seen: set[str] = set()
        skipped = missing = hidden = 0
        for category, name in names:
            if name in seen:
                continue
            seen.add(name)
            concept = concept_name(name, fluent)
            if concept != name and not tone_variants:
                skipped += 1
                continue
            icon = iconset.icons.get(name)
            if icon is None or "body" not in icon:
                missing += 1
                continue
            if icon.get("hidden"):
                hidden += 1
                continue
            items.append(
                _Item(
                    key=len(items),
                    source=f"{iconset.prefix}:{name}",
                    svg_icon=tuple(sorted(icon.items())),
                    default_wh=(iconset.width, iconset.height),
                    target=0,  # drawn below, once the candidate list is final
                )
            )
            meta_rows.append((s, name, concept, category))
        audit_sets[iconset.prefix] = {
            "spec": iconset.spec,
            "listed": len(seen),
            "skipped_tone_variants": skipped,
            "missing_icon": missing,
            "hidden": hidden,
        }
    if not items:
        raise StillroomError(f"no emoji found in categories {', '.join(categories)}")
    targets = rng.choice(natives, size=len(items), replace=True)
    items = [_Item(it.key, it.source, it.svg_icon, it.default_wh, int(t)) for it, t in zip(items, targets, strict=True)]

    outcomes = _render_all(items, size, audit_limits, workers, progress)

    by_reason: Counter[str] = Counter()
    first_reason: Counter[str] = Counter()
    passed = []
    rejected_icons = []
    for o in outcomes:
        s = meta_rows[o.key][0]
        entry = audit_sets[sets[s].prefix]
        entry["rendered"] = entry.get("rendered", 0) + 1
        if o.reasons:
            rejected_icons.append({"set": sets[s].prefix, "icon": meta_rows[o.key][1], "reasons": list(o.reasons)})
            by_reason.update(o.reasons)
            first_reason[o.reasons[0]] += 1
            for r in o.reasons:
                entry.setdefault("rejected_by_reason", {})
                entry["rejected_by_reason"][r] = entry["rejected_by_reason"].get(r, 0) + 1
            entry["rejected"] = entry.get("rejected", 0) + 1
        else:
            entry["passed"] = entry.get("passed", 0) + 1
            passed.append(o)
    if not passed:
        raise StillroomError("every emoji failed the audit; nothing to write")
    audit_meta = {
        "candidates": len(items),
        "passed": len(passed),
        "rejected_total": len(items) - len(passed),
        "rejected_by_reason": {r: by_reason.get(r, 0) for r in AUDIT_REASONS},
        "rejected_by_first_reason": {r: first_reason.get(r, 0) for r in AUDIT_REASONS},
        "mode": audit,
        "thresholds": {"min_fill": float(min_fill), "min_canvas_fraction": MIN_CANVAS_FRACTION, **limits},
        "per_set": audit_sets,
        "rejected_icons": rejected_icons,
    }

    # dedup across sets in (concept, set, name) order
    passed.sort(key=lambda o: (meta_rows[o.key][2], meta_rows[o.key][0], meta_rows[o.key][1]))
    stack = np.stack([o.image for o in passed])  # (P, S, S) uint8
    n_exact = len(exact_distinct(pack_masks(stack)))
    keep = dedup_masks(stack, dedup_threshold)
    kept = [passed[i] for i in keep]
    groups = [meta_rows[o.key][2] for o in kept]
    splits, split_info = _split_by_group(groups, seed)

    tmp = new_build_dir(out_dir)
    try:
        rows: list[IndexRow] = []
        white = np.zeros(len(kept), dtype=np.int64)
        for j, (o, split) in enumerate(zip(kept, splits, strict=True)):
            s, name, concept, category = meta_rows[o.key]
            buf = io.BytesIO()
            Image.fromarray(o.image, "L").save(buf, format="PNG")
            data = buf.getvalue()
            rel = f"images/{sets[s].prefix}/{name}.png"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
            white[j] = int(np.count_nonzero(o.image))
            extra = {"set": sets[s].prefix, "icon": name, "category": category, "side": str(o.side), "eff": str(o.eff)}
            rows.append(IndexRow(rel, 0, "ood", str(split), concept, sha256_bytes(data), extra))
        mean, std = silhouette_train_stats(white, splits == "train", size)
        recipe = {
            "kind": "silhouette",
            "source": [{"spec": st.spec, "integrity": st.integrity, "license": st.license} for st in sets],
            "categories": list(categories),
            "tone_variants": bool(tone_variants),
            "size": size,
            "channels": 1,
            "padding": PADDING,
            "alpha_threshold": ALPHA_THRESHOLD,
            "render_oversample": RENDER_OVERSAMPLE,
            "resize": "sprite-like box+binarize, then box+binarize",
            "resolution_target": target_info,
            "min_fill": float(min_fill),
            "audit": audit,
            "dedup_threshold": float(dedup_threshold),
            "split": "by-emoji-name",
            "split_seed": seed,
            "mean": [mean],
            "std": [std],
        }
        ood_effs = np.array([o.eff for o in kept], dtype=np.int64)
        extra_meta: dict[str, Any] = {
            "audit": audit_meta,
            "dedup": {"audited": len(passed), "exact_distinct": n_exact, "kept": len(kept)},  # across all sets
            "split_info": split_info,
            "resolution": {
                "id_effective": _quantiles(id_effs) if id_index is not None else None,
                "ood_effective": _quantiles(ood_effs),
            },
        }
        classes = ["ood"]
        index = write_index(tmp, rows, classes, recipe, {**extra_meta, "build_seconds": time.perf_counter() - t0})
        probes: dict[str, Any] = {"near_duplicates": _near_duplicates(stack[keep], splits)}
        if id_index is not None and probe:
            from stillroom.data.dataset import load_images
            from stillroom.data.shortcuts import shortcut_probe

            id_images = load_images(id_index)[:, 0]
            probes["shortcut_probe"] = shortcut_probe(
                np.concatenate([id_images, stack[keep]]),
                np.concatenate([np.zeros(len(id_images), bool), np.ones(len(kept), bool)]),
                np.concatenate([id_index.splits, splits]),
                seed=seed,
            )
        from stillroom.data.contact_sheet import make_contact_sheet

        make_contact_sheet(index, tmp / "contact_sheet.png", per_class=24)
        update_index_meta(tmp, **probes, build_seconds=round(time.perf_counter() - t0, 2))
        install_build(tmp, out_dir)
    except BaseException:
        rmtree(tmp)
        raise
    return load_index(out_dir)


def _near_duplicates(images: np.ndarray, splits: np.ndarray) -> dict[str, Any]:
    """Distance (fraction of pixels) of each OOD test image to its nearest OOD train image: the split by name
    should leave no near-copies across splits (dedup already removed those under the 1% rule)."""
    from stillroom.data.leakage import nearest_neighbours

    train, test = images[splits == "train"], images[splits == "test"]
    if len(train) == 0 or len(test) == 0:
        return {"n_test": int(len(test)), "median": None}
    _, dist = nearest_neighbours(train < 128, test < 128, binary=True)
    return {"n_test": int(len(test)), **_quantiles(np.asarray(dist, dtype=np.float64))}
