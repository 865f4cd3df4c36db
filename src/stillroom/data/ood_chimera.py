"""Near-OOD sink source made from ID data: chimeras of two different species (issue 16 item 2; seed 000 §2.5).

Seed 000 §2.5 fills the rejection class with far-OOD object masks. A sink trained on one far source only (emoji)
can learn "not emoji-like" instead of "not one of the K species" (``shortcuts``: emoji differ from sprites in shape
class). Chimeras are silhouettes assembled from two ID images of DIFFERENT species, so they share the species' edge
texture, topology and scale, and only their global shape says "none of the K":

- ``lr``: the left part of A and the right part of B, cut at a column in ``CUT_RANGE`` of the side where the two
  pieces meet best (``_seam``: fewest differing pixels across the cut, ties drawn at random), since a straight cut
  through bodies of different widths leaves a long straight step that no sprite has;
- ``tb``: the top part of A and the bottom part of B, cut at a row chosen likewise;
- ``merge``: A united with B scaled by a factor in ``SCALE_RANGE``, B's centre placed on a random boundary pixel of A
  (so the two always overlap: a chimera of two separate pieces would be a topology cue, not a shape);
- ``blend``: a morph half-way between A and B, the zero level set of ``(1 - t) d_A + t d_B`` with ``d`` the signed
  distance to each parent's outline and ``t`` in ``BLEND_RANGE``, computed on the parents upscaled by
  ``BLEND_UPSCALE`` (nearest) so that rendering REDUCES it like a sprite. Not in ``DEFAULT_KINDS``: it is a second
  near-OOD source of another construction, so that a sink trained on blends can be tested on held-out cut-and-merge
  chimeras (``benchmarks/openset_loso.sh`` source ``blend``), and the other way round.

Rendering: the assembled mask goes through ``outline.render_silhouette`` with the ID recipe's ``padding`` and
``outline`` (``object_crop``'s checks, crop and centring, then ``preprocess_mask`` or the canonical outline), exactly
the call the ID builder made, so the output has the same size, channel and rendering. ``merge`` scales B with PIL
BOX + binarize at half coverage, as ``preprocess_mask`` resizes.

Parents (``parents``): ``native`` (the default for a sprite index, ``auto``) assembles the two rows' GIF frames
themselves (``sprite_frames.native_masks``: native sprite pixels, checked to render to the indexed images), centred in
one frame (``shared_frame``), so a chimera is rendered ONCE from native pixels, as every sprite is. B is drawn among
the other species' rows whose native box (longer side) is within ``size_tol`` (default ``NATIVE_SIZE_TOL``) of A's,
so neither parent is rescaled to fit the other (``no_partner`` when none is). ``rendered`` assembles the ID images
(``size x size``, already cropped, centred and padded) and renders the result again: a second resampling of rendered
pixels, which left a rendering cue (shortcut probe, species 1-151, edge texture, mean of 3 seeds: 0.705 rendered,
0.644 native at 64 px; 0.848 and 0.707 at 128 px; BENCHMARKS "Chimeras from native frames"). It stays for indexes
without frames (``import-folder`` data), where ``auto`` chooses it.

Splits: chimeras of a split are made ONLY from that split's ID images (train from train, val from val, test from
test), so no test pixel reaches training; ``group`` = ``<split>/<species A>+<species B>`` keeps groups inside one
split. Everything is drawn from ``numpy.random.default_rng([seed, split number])``: deterministic from the seed.

Audit (``index.json`` ``audit``), each candidate counted under the first reason it fails:

- ``empty``: the assembled mask has no object pixel; ``tiny``: fewer object pixels than ``min_area_fraction`` of
  the smaller parent's (a sliver, rescaled to full size by the rendering, is not a silhouette);
- ``no_partner`` (native parents): no row of another species in the split has a native box within ``size_tol``;
- ``enlarged`` (rendered parents): the assembled box's longer side is more than ``max_enlarge`` pixels shorter
  than the smaller parent's, so the rendering would ENLARGE already rendered pixels: BOX + binarize at a ratio
  above 1 doubles rows and columns of an image that was resampled once already, a staircase no ID image has (each
  is resampled once, from native pixels). Only ``lr`` / ``tb`` can be shorter than their parents; ``merge`` grows;
- ``too_close``: IoU of the rendered chimera with either parent's image above ``iou_max`` (default 0.85): such an
  image IS that species (a small B hidden inside A), not OOD;
- ``pieces`` (``blend`` only): the rendered morph has more 8-connected pieces than either parent, i.e. the parents
  barely overlapped and the morph fell apart: a topology cue, not a shape (the other kinds keep their audit as built);
- ``duplicate``: sha256 of the PNG equals an earlier chimera's or any ID image's.

Candidates are drawn until ``per_split`` are kept or ``ATTEMPTS_PER_KEPT * per_split`` were tried. The audit counts
candidates, each drop reason, and kept per split and per kind. When ``probe`` is set the ID-vs-chimera shortcut
probe (``shortcuts``) is stored as in ``ood_emoji``.

Why one module of over 400 lines: the four kinds share one candidate loop, one audit and one rendering call, and
each drop rule depends on how its kind assembled the mask (``enlarged``, ``pieces``); split apart, every kind would
repeat the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stillroom._io import StillroomError, sha256_bytes
from stillroom.data.index import SPLITS, DatasetIndex
from stillroom.data.ood_write import OODImage, check_ood_build, png_bytes, write_ood_source
from stillroom.data.outline import outline_from_recipe, render_silhouette
from stillroom.data.sprite_frames import is_sprite_index, native_masks
from stillroom.data.topology import mask_topology

__all__ = [
    "CHIMERA_KINDS",
    "DEFAULT_KINDS",
    "DROP_REASONS",
    "BLEND_RANGE",
    "CUT_RANGE",
    "SCALE_RANGE",
    "DEFAULT_IOU_MAX",
    "DEFAULT_PER_SPLIT",
    "NATIVE_SIZE_TOL",
    "PARENTS",
    "chimera_mask",
    "mask_iou",
    "signed_distance",
    "resolve_parents",
    "shared_frame",
    "build_ood_chimera",
]

CHIMERA_KINDS = ("lr", "tb", "merge", "blend")
DEFAULT_KINDS = ("lr", "tb", "merge")  # the ``chimera`` source; ``blend`` is built as a source of its own
DROP_REASONS = ("no_partner", "empty", "tiny", "enlarged", "too_close", "pieces", "duplicate")
PARENTS = ("auto", "native", "rendered")
NATIVE_SIZE_TOL = 0.15  # native parents: B's box within 15% of A's, so neither is rescaled to fit the other
CUT_RANGE = (0.4, 0.6)  # cut position as a fraction of the side: near the centre, where both parents have body
SCALE_RANGE = (0.5, 0.8)  # B's scale in ``merge``: big enough to change the outline, small enough to stay a part
# t of ``blend``: near half-way, where the morph is neither parent (too_close drops the rest)
BLEND_RANGE = (0.35, 0.65)
BLEND_UPSCALE = 2  # ``blend`` works at 2S: the morph's outline is smooth there and rendering reduces it to S
DEFAULT_IOU_MAX = 0.85
DEFAULT_MIN_AREA_FRACTION = 0.3
DEFAULT_PER_SPLIT = 600
DEFAULT_MAX_ENLARGE = 1  # pixels: BOX + binarize noise in the ID images' own box sides (44-46 at 64 px)
ATTEMPTS_PER_KEPT = 4


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one shape (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union


def _longer(mask: np.ndarray) -> int:
    """Longer side of the object's bounding box in a non-empty boolean mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)


def _scaled(mask: np.ndarray, scale: float) -> np.ndarray:
    """``mask`` (H, W) bool resized by ``scale`` with BOX averaging, binarized at half coverage (as preprocess_mask)."""
    h, w = mask.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0)), "L")
    return np.asarray(img.resize((nw, nh), Image.Resampling.BOX)) >= 128


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance to the outline of a boolean mask, negative inside and positive outside (float64)."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def _blend(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``blend``: the zero level set of ``(1 - t) d_A + t d_B`` at ``BLEND_UPSCALE`` times the parents' size.

    Averaging signed distances morphs one outline into the other (where both parents are object the mean is
    negative, where neither is it is positive; in between the level set moves with ``t``). An empty or full parent
    has no outline: the result is then empty (the audit drops it)."""
    side = a.shape[0] * BLEND_UPSCALE
    if not (a.any() and b.any()) or a.all() or b.all():
        return np.zeros((side, side), dtype=bool)
    up = np.ones((BLEND_UPSCALE, BLEND_UPSCALE), dtype=bool)
    t = rng.uniform(*BLEND_RANGE)
    return (1 - t) * signed_distance(np.kron(a, up)) + t * signed_distance(np.kron(b, up)) < 0


def _seam(a: np.ndarray, b: np.ndarray, kind: str, rng: np.random.Generator) -> int:
    """The cut for ``lr`` / ``tb``: among the cuts in ``CUT_RANGE`` of the side, one (drawn by ``rng`` among ties)
    where the two pieces meet best: fewest pixels differing between A's last line before the cut and B's first line
    after it. A straight cut through two bodies of different widths leaves a long straight step, which sprites
    never have. Edge probe, one kind of chimera vs ID, species 1-151 at 64 px: lr 0.797 -> 0.724, tb 0.777 -> 0.703
    (uniformly drawn cut -> this seam); all kinds together stayed at 0.72 (merge, unchanged, varies 0.67-0.69)."""
    side = a.shape[0]
    lo, hi = round(side * CUT_RANGE[0]), round(side * CUT_RANGE[1])
    cuts = np.arange(max(lo, 1), max(hi, lo, 1) + 1)
    if kind == "tb":
        a, b = a.T, b.T  # rows become columns: one code path
    cost = np.array([np.count_nonzero(a[:, c - 1] ^ b[:, c]) for c in cuts])  # (len(cuts),)
    best = cuts[cost == cost.min()]
    return int(best[rng.integers(len(best))])


def chimera_mask(a: np.ndarray, b: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Assemble a chimera of two ``(S, S)`` boolean parent masks in their shared frame (module docstring).

    Returns a boolean mask: ``(S, S)`` for ``lr`` and ``tb``, ``(2S, 2S)`` with A centred for ``merge`` (room for B
    to stick out; ``render_silhouette`` crops it anyway), ``(2S, 2S)`` at twice the scale for ``blend``. ``rng``
    draws the cut among equally good seams, or the scale and anchor, or the morph's ``t``.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise StillroomError(f"chimera parents must be two (S, S) masks of one shape, got {a.shape} and {b.shape}")
    side = a.shape[0]
    if kind in ("lr", "tb"):
        cut = _seam(a, b, kind, rng)
        out = b.copy()
        if kind == "lr":
            out[:, :cut] = a[:, :cut]  # left of the cut from A, right from B
        else:
            out[:cut] = a[:cut]  # top from A, bottom from B
        return out
    if kind == "blend":
        return _blend(a, b, rng)
    if kind != "merge":
        raise StillroomError(f"chimera kind must be one of {', '.join(CHIMERA_KINDS)}, got {kind!r}")
    scale = rng.uniform(*SCALE_RANGE)
    rows, cols = np.flatnonzero(b.any(axis=1)), np.flatnonzero(b.any(axis=0))
    if rows.size == 0:
        return np.zeros((2 * side, 2 * side), dtype=bool)
    part = _scaled(b[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], scale)  # (h, w) B's box, scaled
    canvas = np.zeros((2 * side, 2 * side), dtype=bool)
    off = side // 2
    canvas[off : off + side, off : off + side] = a
    # anchor: a boundary pixel of A (object with a background 4-neighbour), so B always touches A
    inner = a.copy()
    inner[1:-1, 1:-1] = a[1:-1, 1:-1] & a[:-2, 1:-1] & a[2:, 1:-1] & a[1:-1, :-2] & a[1:-1, 2:]
    ys, xs = np.nonzero(a & ~inner)
    if ys.size == 0:
        return canvas
    j = int(rng.integers(ys.size))
    h, w = part.shape
    top, left = off + int(ys[j]) - h // 2, off + int(xs[j]) - w // 2
    # clip B to the canvas (it never leaves it: A's box lies in the centre half, B is at most 0.8 S)
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, 2 * side), min(left + w, 2 * side)
    canvas[t0:t1, l0:l1] |= part[t0 - top : t1 - top, l0 - left : l1 - left]
    return canvas


def resolve_parents(id_index: DatasetIndex, parents: str) -> str:
    """``native`` or ``rendered`` for ``parents`` of ``build_ood_chimera``: ``auto`` is native for a sprite index
    (``sprite_frames.is_sprite_index``), rendered for any other."""
    if parents not in PARENTS:
        raise StillroomError(f"parents must be one of {', '.join(PARENTS)}, got {parents!r}")
    sprite = is_sprite_index(id_index)
    if parents == "auto":
        return "native" if sprite else "rendered"
    if parents == "native" and not sprite:
        raise StillroomError(
            f"{id_index.root}: native parents need a sprite index (`stillroom data build sprites`); use parents"
            " 'rendered' for other data"
        )
    return parents


def shared_frame(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks of any shapes centred in one square frame (side: the longer of their sides + 2, so every
    object touches background), as ``chimera_mask`` wants its parents."""
    side = max(*a.shape, *b.shape) + 2
    out = []
    for m in (a, b):
        frame = np.zeros((side, side), dtype=bool)
        top, left = (side - m.shape[0]) // 2, (side - m.shape[1]) // 2
        frame[top : top + m.shape[0], left : left + m.shape[1]] = m
        out.append(frame)
    return out[0], out[1]


@dataclass(frozen=True)
class _Candidate:
    split: str
    kind: str
    a: int  # ID row of parent A
    b: int  # ID row of parent B


def build_ood_chimera(
    out_dir: str | Path,
    id_index: DatasetIndex | str | Path,
    per_split: int = DEFAULT_PER_SPLIT,
    seed: int = 0,
    kinds: tuple[str, ...] = DEFAULT_KINDS,
    iou_max: float = DEFAULT_IOU_MAX,
    min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION,
    probe: bool = True,
    max_enlarge: int | None = DEFAULT_MAX_ENLARGE,
    parents: str = "auto",
    size_tol: float = NATIVE_SIZE_TOL,
    tarball: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetIndex:
    """Build the chimera OOD set into ``out_dir`` (one class ``"ood"``) from ``id_index`` and return its index.

    Args:
        out_dir: absent, empty, or a previous Stillroom dataset (replaced as a whole).
        id_index: the plain ID silhouette index (K classes, one channel; not a merged index with a sink).
        per_split: chimeras to keep per split (fewer when ``ATTEMPTS_PER_KEPT * per_split`` candidates run out).
        seed: draws pairs, kinds' cuts, scales and anchors; per split ``default_rng([seed, split number])``.
        kinds: subset of ``CHIMERA_KINDS``, taken round-robin (default ``DEFAULT_KINDS``: cuts and merges).
        iou_max: drop a chimera whose IoU with either parent is above this (it is that species).
        min_area_fraction: drop an assembled mask with fewer object pixels than this fraction of the smaller parent's.
        probe: store near duplicates and the ID-vs-chimera shortcut probe in ``index.json``.
        max_enlarge: drop an assembled mask whose box is more than this many pixels shorter (longer side) than
            its smaller parent's, so rendering would enlarge it (module docstring); None keeps them all. Rendered
            parents only: native ones are rendered once, as sprites are.
        parents: ``native`` (assemble the parents' source frames, then render once; a sprite index only),
            ``rendered`` (assemble the ID images themselves, then render again) or ``auto`` (native where the index
            can give its frames); module docstring, "Parents".
        size_tol: native parents only: B's native box (longer side) within this fraction of A's.
        tarball, cache_dir: native parents only: where the sprite package is (``sprites.native_masks``).

    Rows carry extra columns ``kind``, ``parent_a``, ``parent_b`` (ID paths), ``species_a``, ``species_b``, ``iou_a``,
    ``iou_b``; the recipe is the ID recipe's rendering (size, channels, padding, outline) plus ``ood_kind:
    chimera``, the chimera parameters and the ID index's hashes.
    """
    t0 = time.perf_counter()
    if not 0 < size_tol < 1:
        raise StillroomError(f"size_tol must be in (0, 1), got {size_tol!r}")
    if not 0 <= min_area_fraction < 1:
        raise StillroomError(f"min_area_fraction must be in [0, 1), got {min_area_fraction!r}")
    bad = [k for k in kinds if k not in CHIMERA_KINDS]
    if not kinds or bad:
        raise StillroomError(f"kinds must be a non-empty subset of {', '.join(CHIMERA_KINDS)}, got {list(kinds)!r}")
    out_dir, id_index = check_ood_build(out_dir, id_index, per_split, iou_max, "chimeras")
    rid = id_index.recipe
    if id_index.num_classes < 2:
        raise StillroomError(f"{id_index.root}: chimeras need at least two ID classes, it has {id_index.num_classes}")
    size, padding, outline = int(rid["size"]), float(rid.get("padding", 0.2)), outline_from_recipe(rid)

    from stillroom.data.dataset import load_images

    masks = np.asarray(load_images(id_index))[:, 0] < 128  # (N, S, S) bool, True = object
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    sides = np.array([_longer(m) if m.any() else 0 for m in masks])  # (N,) longer box side of each ID image
    parents = resolve_parents(id_index, parents)
    enlarge_rule = parents == "rendered" and max_enlarge is not None  # native parents are rendered only once
    native: list[np.ndarray] | None = None
    if parents == "native":
        native = native_masks(id_index, tarball=tarball, cache_dir=cache_dir)
        native_sides = np.array([max(m.shape) for m in native])
        areas = np.array([int(np.count_nonzero(m)) for m in native])  # ``tiny`` compares native pixel counts
    # (N,) 8-connected object pieces of each ID image, for the ``pieces`` drop of ``blend``
    pieces = np.array([mask_topology(m)["components"] for m in masks]) if "blend" in kinds else None
    seen = set(id_index.sha256)  # an exact copy of an ID image is not OOD either
    kept: list[tuple[_Candidate, np.ndarray, bytes, float, float]] = []
    counts: dict[str, Any] = {"candidates": 0, **{f"dropped_{r}": 0 for r in DROP_REASONS}, "kept": 0}
    per_split_counts: dict[str, dict[str, int]] = {}
    for s_num, split in enumerate(SPLITS):
        rows = id_index.split_indices(split)
        labels = id_index.labels[rows]
        sc = {"candidates": 0, **{f"dropped_{r}": 0 for r in DROP_REASONS}, "kept": 0}
        sc.update({f"kept_{k}": 0 for k in kinds})
        per_split_counts[split] = sc
        if len(np.unique(labels)) < 2:
            continue  # one species in this split: no chimera of two
        rng = np.random.default_rng([seed, s_num])
        for attempt in range(ATTEMPTS_PER_KEPT * int(per_split)):
            if sc["kept"] >= per_split:
                break
            kind = kinds[attempt % len(kinds)]
            ia = int(rng.integers(len(rows)))
            sc["candidates"] += 1
            others = np.flatnonzero(labels != labels[ia])
            if native is not None:  # a partner drawn at the same native scale: no parent is resampled to fit
                others = others[
                    np.abs(native_sides[rows[others]] - native_sides[rows[ia]]) <= size_tol * native_sides[rows[ia]]
                ]
                if others.size == 0:
                    sc["dropped_no_partner"] += 1
                    continue
            ib = int(others[rng.integers(len(others))])
            a, b = int(rows[ia]), int(rows[ib])
            if native is None:
                assembled = chimera_mask(masks[a], masks[b], kind, rng)
            else:
                assembled = chimera_mask(*shared_frame(native[a], native[b]), kind, rng)
            scale = BLEND_UPSCALE if kind == "blend" else 1  # the assembled mask's pixels per parent pixel
            n_obj = int(np.count_nonzero(assembled)) / scale**2
            reason = None
            if n_obj == 0:
                reason = "empty"
            elif n_obj < min_area_fraction * min(areas[a], areas[b]):
                reason = "tiny"
            elif enlarge_rule and _longer(assembled) < min(sides[a], sides[b]) - max_enlarge:  # as rendered
                reason = "enlarged"
            image = data = None
            iou_a = iou_b = 0.0
            if reason is None:
                image = render_silhouette(assembled, size, padding=padding, outline=outline, source=f"chimera {a}+{b}")
                obj = image < 128
                iou_a, iou_b = mask_iou(obj, masks[a]), mask_iou(obj, masks[b])
                if max(iou_a, iou_b) > iou_max:
                    reason = "too_close"
                elif kind == "blend" and mask_topology(obj)["components"] > max(pieces[a], pieces[b]):
                    reason = "pieces"
                else:
                    data = png_bytes(image)
                    if sha256_bytes(data) in seen:
                        reason = "duplicate"
            if reason is not None:
                sc[f"dropped_{reason}"] += 1
                continue
            assert image is not None and data is not None
            seen.add(sha256_bytes(data))
            kept.append((_Candidate(split, kind, a, b), image, data, iou_a, iou_b))
            sc["kept"] += 1
            sc[f"kept_{kind}"] += 1
        for key in counts:
            counts[key] += sc[key]
    if not any(c.split == "train" for c, *_ in kept):
        raise StillroomError(f"{id_index.root}: no train chimera survived the audit; nothing to build")
    per_kind = {k: sum(c.kind == k for c, *_ in kept) for k in kinds}

    items = []
    for j, (c, image, data, iou_a, iou_b) in enumerate(kept):
        name_a, name_b = id_index.label_names[c.a], id_index.label_names[c.b]
        extra = {
            "kind": c.kind,
            "parent_a": id_index.paths[c.a],
            "parent_b": id_index.paths[c.b],
            "species_a": name_a,
            "species_b": name_b,
            "iou_a": f"{iou_a:.4f}",
            "iou_b": f"{iou_b:.4f}",
        }
        rel = f"images/{c.split}/{c.kind}/{j:05d}.png"
        items.append(OODImage(rel, c.split, f"{c.split}/{name_a}+{name_b}", image, data, extra))
    params = {
        "kinds": list(kinds),
        "cut_range": list(CUT_RANGE),
        "scale_range": list(SCALE_RANGE),
        **({"blend_range": list(BLEND_RANGE), "blend_upscale": BLEND_UPSCALE} if "blend" in kinds else {}),
        "iou_max": float(iou_max),
        "min_area_fraction": float(min_area_fraction),
        "parents": parents,
        **({"size_tol": float(size_tol)} if parents == "native" else {"max_enlarge": max_enlarge}),
        "per_split": int(per_split),
        "seed": int(seed),
    }
    audit = {**counts, "iou_max": float(iou_max), "per_split": per_split_counts, "per_kind": per_kind}
    split = ("parent-split", "chimeras of a split come from that split's ID images only")
    return write_ood_source(out_dir, items, id_index, "chimera", params, split, audit, seed, probe, t0)
