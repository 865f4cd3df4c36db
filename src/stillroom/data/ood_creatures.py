"""Procedural creatures: an OOD sink source drawn as pixel art and rendered once, like the sprites (issue 16 items 1-2).

The real OOD sources (emoji, game-icons) differ from sprites in how they were drawn as much as in shape: the
shortcut probe tells them from ID by edge texture alone (AUROC 0.91-0.98), and a sink trained on a few of them
learns its sources (held out: 0.67-0.88 sink AUROC at 16 epochs, BENCHMARKS "Leaving one OOD source out"). Seed 000
§2.5 fills the sink with many different far-OOD object masks; here they are made, in any number, with the one
property no icon set has: they are drawn the way a sprite is.

Each creature is a union of parts, all in one random frame:

- a body: a star-convex blob, an ellipse (radii ``BODY_RADII``, tilted) whose radius is modulated by a few low
  harmonics (``HARMONICS``), so outlines bulge and dent as bodies do instead of being conic sections;
- a head: an ellipse centred on the body's outline in its upper half, with 0-2 ears or horns (triangles);
- 0, 2 or 4 legs and an optional tail: capsules (thick segments with round ends) leaving the outline outwards;
- optional wings: a triangle fan on the upper back;
- 0-3 small gaps cut out of the body (eyes, mouths, the gap between an arm and the body), as sprites' silhouettes
  have holes (species 1-151 at 64 px: 1.9 holes per image on average).

Drawing: the parts are filled, ALIASED (no anti-aliasing, as pixel art), at a native resolution drawn from the ID
rows' own: the sprites' GIF frames' box sides for a sprite index (``sprite_frames.native_masks``), else the ID
images' box sides. The creature is drawn once at a nominal scale, then again at the scale that makes its box's
longer side that native side (within a pixel; up to three corrections), so that ``outline.render_silhouette`` (the
ID builder's own call, with the ID recipe's padding and outline) reduces it by the same ratios as it reduces
sprites. No creature is resampled twice.

Audit (``index.json`` ``audit``), each candidate under its first failing reason: ``pieces`` (more than
``MAX_PIECES`` 8-connected object pieces once rendered; a fifth of the sprites have two, where a thin part came
loose in rendering), ``too_close`` (IoU with some ID image of the split above ``iou_max``: by chance, that
species), ``duplicate`` (sha256 of the PNG equal to an earlier creature's or an ID image's).

Splits: creatures of each split are drawn from ``numpy.random.default_rng([seed, split number])`` and compared with
that split's ID rows; ``group`` is the row itself. Deterministic from ``seed``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.index import SPLITS, DatasetIndex
from stillroom.data.ood_write import OODImage, check_ood_build, png_bytes, write_ood_source
from stillroom.data.outline import outline_from_recipe, render_silhouette
from stillroom.data.sprite_frames import is_sprite_index, native_masks
from stillroom.data.topology import mask_topology

__all__ = ["BODY_RADII", "DEFAULT_PER_SPLIT", "DROP_REASONS", "HARMONICS", "build_ood_creatures", "creature_mask"]

BODY_RADII = (0.25, 0.5)  # body ellipse radii, in frame units (the frame is 4 units wide, the body at its centre)
HARMONICS = (2, 8, 0.12)  # radial modulation: harmonics 2..8, each amplitude drawn up to 0.12 of the radius
DEFAULT_PER_SPLIT = 600
DEFAULT_IOU_MAX = 0.85
DROP_REASONS = ("pieces", "too_close", "duplicate")
ATTEMPTS_PER_KEPT = 3
MAX_PIECES = 2
_NOMINAL = 24.0  # pixels per frame unit of the first draw, which measures the creature's box


def _polygon_points(cx: float, cy: float, rx: float, ry: float, tilt: float, rng: np.random.Generator | None, n: int):
    """Points of a tilted ellipse, its radius modulated by random low harmonics when ``rng`` is given."""
    phi = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = np.ones_like(phi)
    if rng is not None:
        lo, hi, amp = HARMONICS
        for k in range(lo, hi + 1):
            r += rng.uniform(0, amp) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    x, y = rx * r * np.cos(phi), ry * r * np.sin(phi)
    c, s = math.cos(tilt), math.sin(tilt)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _draw_parts(rng: np.random.Generator) -> list[tuple[str, Any]]:
    """The creature as a list of parts in frame units: ("poly", (P, 2) points) or ("capsule", (x0, y0, x1, y1,
    width)), filled, and ("hole", (P, 2) points), cut out of them. Every solid part touches the body or the head."""
    rx, ry = rng.uniform(*BODY_RADII), rng.uniform(*BODY_RADII)
    tilt = rng.uniform(-0.5, 0.5)
    body = _polygon_points(0.0, 0.0, rx, ry, tilt, rng, 96)
    parts: list[tuple[str, Any]] = [("poly", body)]
    centre = body.mean(axis=0)

    def on_outline(angle: float) -> np.ndarray:  # the body's outline point nearest to direction ``angle``
        d = body - centre
        a = np.arctan2(d[:, 1], d[:, 0])
        return body[int(np.argmin(np.abs(np.angle(np.exp(1j * (a - angle))))))]

    # head: upper half (image y points down, so "up" is angle -pi/2)
    hr = rng.uniform(0.4, 0.9) * min(rx, ry)
    hx, hy = on_outline(rng.uniform(-math.pi * 5 / 6, -math.pi / 6))
    h_aspect = rng.uniform(0.7, 1.4)
    parts.append(("poly", _polygon_points(hx, hy, hr * h_aspect, hr, rng.uniform(-0.4, 0.4), None, 48)))
    for _ in range(int(rng.choice([0, 1, 2], p=[0.3, 0.2, 0.5]))):  # ears or horns
        a = rng.uniform(-math.pi * 0.85, -math.pi * 0.15)
        base = np.array([hx + hr * math.cos(a), hy + hr * math.sin(a)])
        length, half = rng.uniform(0.5, 1.3) * hr, rng.uniform(0.15, 0.4) * hr
        tip = base + length * np.array([math.cos(a), math.sin(a)])
        side = half * np.array([-math.sin(a), math.cos(a)])
        inner = np.array([hx, hy]) + 0.6 * (base - np.array([hx, hy]))  # rooted inside the head: no loose tip
        parts.append(("poly", np.stack([inner + side, tip, inner - side])))
    for _ in range(int(rng.choice([0, 2, 4], p=[0.2, 0.5, 0.3]))):  # legs: lower half, pointing out and down
        a = rng.uniform(math.pi * 0.15, math.pi * 0.85)
        x0, y0 = on_outline(a) * 0.9 + centre * 0.1
        length, width = rng.uniform(0.15, 0.45), rng.uniform(0.08, 0.2)
        d = a + rng.uniform(-0.4, 0.4)
        parts.append(("capsule", (x0, y0, x0 + length * math.cos(d), y0 + length * math.sin(d), width)))
    if rng.random() < 0.5:  # tail: towards one side
        a = rng.uniform(-0.5, 0.5) + (math.pi if rng.random() < 0.5 else 0.0)
        x0, y0 = on_outline(a) * 0.9 + centre * 0.1
        length, width = rng.uniform(0.2, 0.6), rng.uniform(0.06, 0.16)
        d = a + rng.uniform(-0.8, 0.8)
        parts.append(("capsule", (x0, y0, x0 + length * math.cos(d), y0 + length * math.sin(d), width)))
    if rng.random() < 0.2:  # wings: a fan of two triangles on the upper back
        root = on_outline(rng.uniform(-math.pi * 0.7, -math.pi * 0.3)) * 0.8 + centre * 0.2
        span = rng.uniform(0.4, 0.9)
        for a in (-math.pi * 0.75, -math.pi * 0.25):
            a += rng.uniform(-0.3, 0.3)
            tip = root + span * np.array([math.cos(a), math.sin(a)])
            back = root + 0.6 * span * np.array([math.cos(a + 0.6), math.sin(a + 0.6)])
            parts.append(("poly", np.stack([root, tip, back])))
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.3, 0.3, 0.25, 0.15]))):  # gaps: eyes, mouths, arm-body gaps
        gx, gy = centre + rng.uniform(-0.5, 0.5, size=2) * [rx, ry]
        gr = rng.uniform(0.03, 0.08)
        g_rx, tilt_g = gr * rng.uniform(0.6, 1.6), rng.uniform(0, math.pi)
        parts.append(("hole", _polygon_points(gx, gy, g_rx, gr, tilt_g, None, 16)))
    if rng.random() < 0.5:  # mirror: creatures face either way
        parts = [(k, p * [-1, 1] if k != "capsule" else (-p[0], p[1], -p[2], p[3], p[4])) for k, p in parts]
    return parts


def _rasterize(parts: list[tuple[str, Any]], scale: float) -> np.ndarray:
    """Boolean mask of the parts drawn aliased at ``scale`` pixels per unit, cropped to the object's box."""
    side = int(math.ceil(4 * scale)) + 2
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    o = side / 2

    def px(x: float, y: float) -> tuple[float, float]:
        return (o + x * scale, o + y * scale)

    for kind, p in sorted(parts, key=lambda part: part[0] == "hole"):  # gaps are cut after every solid part
        if kind != "capsule":
            draw.polygon([px(x, y) for x, y in p], fill=0 if kind == "hole" else 255)
        else:
            x0, y0, x1, y1, w = p
            w_px = max(2, int(round(w * scale)))  # at least 2 native pixels: a 1-pixel whisker is no limb a sprite has
            r = w_px / 2
            draw.line([px(x0, y0), px(x1, y1)], fill=255, width=w_px)
            for x, y in ((x0, y0), (x1, y1)):
                cx, cy = px(x, y)
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    m = np.asarray(img) > 0
    ys, xs = np.nonzero(m)
    return m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def creature_mask(rng: np.random.Generator, native_side: int) -> np.ndarray:
    """One creature, drawn aliased with its box's longer side ``native_side`` pixels (within a pixel of rounding):
    boolean, cropped to the object's box."""
    if native_side < 8:
        raise StillroomError(f"creature_mask: native_side must be >= 8 pixels, got {native_side}")
    parts = _draw_parts(rng)
    scale = _NOMINAL
    mask = _rasterize(parts, scale)
    for _ in range(3):  # the 2-pixel minimum width of limbs does not scale: at small sides one pass can miss
        if abs(max(mask.shape) - native_side) <= 1:
            break
        scale *= native_side / max(mask.shape)
        mask = _rasterize(parts, scale)
    return mask


def _native_sides(id_index: DatasetIndex, masks: np.ndarray, tarball: str | Path | None) -> tuple[np.ndarray, str]:
    """Longer box side of each ID row before rendering: the sprites' GIF frames for a sprite index, else the ID
    images' own (already rendered) boxes."""
    if is_sprite_index(id_index):
        return np.array([max(m.shape) for m in native_masks(id_index, tarball=tarball)]), "sprite frames"
    sides = [max(np.ptp(np.nonzero(m)[0]), np.ptp(np.nonzero(m)[1])) + 1 for m in masks if m.any()]
    return np.array(sides), "ID images"


def build_ood_creatures(
    out_dir: str | Path,
    id_index: DatasetIndex | str | Path,
    per_split: int = DEFAULT_PER_SPLIT,
    seed: int = 0,
    iou_max: float = DEFAULT_IOU_MAX,
    probe: bool = True,
    tarball: str | Path | None = None,
) -> DatasetIndex:
    """Build the procedural-creature OOD set into ``out_dir`` (one class ``"ood"``), rendered by ``id_index``'s
    recipe, and return its index.

    Args:
        out_dir: absent, empty, or a previous Stillroom dataset (replaced as a whole).
        id_index: the plain ID silhouette index (K classes, one channel; not a merged index with a sink).
        per_split: creatures to keep per split (fewer when ``ATTEMPTS_PER_KEPT * per_split`` candidates run out).
        seed: draws every creature and its native side; per split ``default_rng([seed, split number])``.
        iou_max: drop a creature whose IoU with an ID image of its split is above this (it is that species).
        probe: store near duplicates and the ID-vs-creature shortcut probe in ``index.json``.
        tarball: local sprite package, for the native frame sides of a sprite index.
    """
    t0 = time.perf_counter()
    out_dir, id_index = check_ood_build(out_dir, id_index, per_split, iou_max, "creatures")
    rid = id_index.recipe
    size, padding, outline = int(rid["size"]), float(rid.get("padding", 0.2)), outline_from_recipe(rid)

    from stillroom.data.dataset import load_images

    masks = np.asarray(load_images(id_index))[:, 0] < 128  # (N, S, S) bool, True = object
    sides, sides_from = _native_sides(id_index, masks, tarball)
    seen = set(id_index.sha256)
    kept: list[tuple[str, np.ndarray, bytes, float, int]] = []
    counts: dict[str, Any] = {"candidates": 0, **{f"dropped_{r}": 0 for r in DROP_REASONS}, "kept": 0}
    per_split_counts: dict[str, dict[str, int]] = {}
    for s_num, split in enumerate(SPLITS):
        rows = id_index.split_indices(split)
        flat = masks[rows].reshape(len(rows), -1).astype(np.float32)  # (n, S*S): IoU with every ID image at once
        id_area = flat.sum(axis=1)
        sc = {"candidates": 0, **{f"dropped_{r}": 0 for r in DROP_REASONS}, "kept": 0}
        per_split_counts[split] = sc
        rng = np.random.default_rng([seed, s_num])
        for _ in range(ATTEMPTS_PER_KEPT * int(per_split)):
            if sc["kept"] >= per_split:
                break
            sc["candidates"] += 1
            native = int(sides[rng.integers(len(sides))])
            mask = creature_mask(rng, native)
            image = render_silhouette(mask, size, padding=padding, outline=outline, source=f"creature {split}")
            obj = image < 128
            reason = None
            iou = 0.0
            if mask_topology(obj)["components"] > MAX_PIECES:
                reason = "pieces"
            elif len(rows):
                inter = flat @ obj.reshape(-1).astype(np.float32)
                iou = float(np.max(inter / np.maximum(id_area + obj.sum() - inter, 1)))
                if iou > iou_max:
                    reason = "too_close"
            data = None
            if reason is None:
                data = png_bytes(image)
                if sha256_bytes(data) in seen:
                    reason = "duplicate"
            if reason is not None:
                sc[f"dropped_{reason}"] += 1
                continue
            assert data is not None
            seen.add(sha256_bytes(data))
            kept.append((split, image, data, iou, native))
            sc["kept"] += 1
        for key in counts:
            counts[key] += sc[key]
    if not any(split == "train" for split, *_ in kept):
        raise StillroomError(f"{id_index.root}: no train creature survived the audit; nothing to build")

    items = [
        OODImage(f"images/{split}/{j:05d}.png", split, f"{split}/creature-{j:05d}", image, data,
                 {"native_side": str(native), "iou_max_id": f"{iou:.4f}"})
        for j, (split, image, data, iou, native) in enumerate(kept)
    ]  # fmt: skip
    params = {
        "body_radii": list(BODY_RADII),
        "harmonics": list(HARMONICS),
        "max_pieces": MAX_PIECES,
        "native_sides_from": sides_from,
        "iou_max": float(iou_max),
        "per_split": int(per_split),
        "seed": int(seed),
    }
    audit = {**counts, "iou_max": float(iou_max), "per_split": per_split_counts}
    split_note = ("random", "each split's creatures drawn from their own generator")
    return write_ood_source(out_dir, items, id_index, "creatures", params, split_note, audit, seed, probe, t0)
