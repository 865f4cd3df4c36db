"""Domain-shift validation proxy ("shift-val", issue 14): top-1 on deterministic rewrites of a split's images that
imitate a change of drawing style, for selecting recipes without the reserved outside sets (REFERENCE 7).

A student that learned the shape of a species should survive what another artist or renderer does to its
silhouette: a coarser or finer pixel grid, smoother or blockier outlines, thicker or thinner strokes, closed gaps.
Each rewrite here is a pure function of the images (no randomness), so every model is judged on the very same
pixels. It runs on the **validation** split (the training view): test is never used to choose anything.

Rewrites (``REWRITES``; pixel sizes are given at 64 px and scale with the image side):

- ``repixelate-F`` (F = 0.5, 0.375): BOX-reduce to F x the side, binarize at half coverage, enlarge with nearest
  neighbour: the same coarse staircase on every outline (from benchmarks/edge_stress.py, issue 3);
- ``lowres-S`` (S = 32, 24): rendered anti-aliased at S x S (area-reduced, grey kept) and enlarged bilinearly,
  binarized at half: a smooth low-resolution drawing scaled up;
- ``smooth-R`` (R = 1, 2): Gaussian blur of radius R px, binarized at half: rounded corners;
- ``dilate-P`` / ``erode-P`` (P = 1, 2): strokes P px thicker / thinner (square min / max filter,
  ``data.augment.thicken``);
- ``fill-holes``: every hole inside the object filled (artists close the gaps sprites leave between limbs).

``in_shape_recipe`` marks the rewrites the ``shape`` training augmentation also draws (re-rendering at 24-48 px,
dilation by 1-2 px, erosion by 1 px): a student trained with it has seen those, so the report gives the mean over
all rewrites (``mean``, the proxy) and over the others alone (``held_out_mean``), the less flattering of the two for
that recipe. Both are proxies: the reserved evaluation sets change style in ways no rewrite of a sprite reproduces.

    report = shift_report("runs/x", split="val")      # {"clean", "rewrites": {name: {...}}, "mean", ...}
    stillroom evaluate RUN --shift                     # writes RUN/shift_val.json
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from scipy.ndimage import binary_fill_holes

from stillroom._io import StillroomError
from stillroom.data.augment import thicken
from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex
from stillroom.evaluate.metrics import classification_report
from stillroom.models.inference import predict_logits
from stillroom.runs import Run, split_rows

__all__ = [
    "REWRITES",
    "SHIFT_FILE",
    "Rewrite",
    "fill_holes",
    "lowres",
    "repixelate",
    "rewrite_images",
    "shift_report",
    "smooth",
    "stroke",
]

SHIFT_FILE = "shift_val.json"


def _check(images: np.ndarray, fn: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 1 or images.dtype != np.uint8:
        raise StillroomError(f"{fn}: images must be (N, 1, S, S) uint8, got {images.shape} {images.dtype}")
    return images


def _px(images: np.ndarray, px_at_64: float) -> int:
    """A size given at 64 px, scaled to the images' side (at least 1)."""
    return max(1, round(px_at_64 * images.shape[-1] / 64))


def repixelate(images: np.ndarray, factor: float) -> np.ndarray:
    """(N, 1, S, S) uint8 0/255 -> the same images with outlines re-quantized on a grid of ``factor`` x S."""
    images = _check(images, "repixelate")
    side = images.shape[-1]
    small = max(2, round(side * factor))
    out = np.empty_like(images)
    for i, img in enumerate(images[:, 0]):
        low = Image.fromarray(img).resize((small, small), Image.Resampling.BOX)
        low = low.point(lambda v: 255 if v >= 128 else 0)
        out[i, 0] = np.asarray(low.resize((side, side), Image.Resampling.NEAREST))
    return out


def smooth(images: np.ndarray, radius: float) -> np.ndarray:
    """(N, 1, S, S) uint8 0/255 -> Gaussian-blurred (``radius`` px) and re-binarized at half."""
    images = _check(images, "smooth")
    out = np.empty_like(images)
    for i, img in enumerate(images[:, 0]):
        blurred = Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius))
        out[i, 0] = np.where(np.asarray(blurred) >= 128, 255, 0).astype(np.uint8)
    return out


def lowres(images: np.ndarray, side: int) -> np.ndarray:
    """(N, 1, S, S) uint8 0/255 -> drawn anti-aliased at ``side`` x ``side`` (area reduction, grey levels kept),
    enlarged bilinearly and binarized at half: the outline a smooth low-resolution rendering gives. Unlike
    ``repixelate`` nothing is binarized on the coarse grid (binarizing there and enlarging 2x bilinearly would give
    exactly the nearest-neighbour staircase again)."""
    images = _check(images, "lowres")
    s = images.shape[-1]
    x = torch.from_numpy(images).float()  # (N, 1, S, S)
    low = F.interpolate(x, size=(side, side), mode="area")  # (N, 1, side, side), grey at the outlines
    up = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
    return np.where(up.numpy() >= 127.5, 255, 0).astype(np.uint8)


def stroke(images: np.ndarray, px: int) -> np.ndarray:
    """(N, 1, S, S) uint8 0/255 -> objects dilated by ``px`` pixels (``px`` < 0: eroded; ``data.augment.thicken``).
    Erosion can empty thin objects entirely; such images stay in the evaluation (the model must still answer)."""
    images = _check(images, "stroke")
    x = torch.from_numpy(images[:, 0].copy())  # (N, S, S), pooled channel by channel
    return thicken(x, px).numpy()[:, None]


def fill_holes(images: np.ndarray) -> np.ndarray:
    """(N, 1, S, S) uint8 0/255 -> every background region not connected to the border turned into object."""
    images = _check(images, "fill_holes")
    out = np.empty_like(images)
    for i, img in enumerate(images[:, 0]):
        out[i, 0] = np.where(binary_fill_holes(img == 0), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Rewrite:
    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    in_shape_recipe: bool  # the `shape` augmentation draws this kind of change (see the module docstring)


REWRITES: tuple[Rewrite, ...] = (
    Rewrite("repixelate-0.5", lambda x: repixelate(x, 0.5), True),
    Rewrite("repixelate-0.375", lambda x: repixelate(x, 0.375), True),
    Rewrite("lowres-32", lambda x: lowres(x, max(2, round(x.shape[-1] * 0.5))), True),
    Rewrite("lowres-24", lambda x: lowres(x, max(2, round(x.shape[-1] * 0.375))), True),
    Rewrite("smooth-1", lambda x: smooth(x, 1.0 * x.shape[-1] / 64), False),
    Rewrite("smooth-2", lambda x: smooth(x, 2.0 * x.shape[-1] / 64), False),
    Rewrite("dilate-1", lambda x: stroke(x, _px(x, 1)), True),
    Rewrite("dilate-2", lambda x: stroke(x, _px(x, 2)), True),
    Rewrite("erode-1", lambda x: stroke(x, -_px(x, 1)), True),
    Rewrite("erode-2", lambda x: stroke(x, -_px(x, 2)), False),
    Rewrite("fill-holes", fill_holes, False),
)


def _rewrite(name: str) -> Rewrite:
    for r in REWRITES:
        if r.name == name:
            return r
    raise StillroomError(f"unknown shift rewrite {name!r}; known: {', '.join(r.name for r in REWRITES)}")


def rewrite_images(images: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """{rewrite name: (N, 1, S, S) rewritten images} for ``names`` (default: every rewrite, in ``REWRITES`` order)."""
    images = _check(images, "rewrite_images")
    chosen = [_rewrite(n) for n in names] if names is not None else list(REWRITES)
    return {r.name: r.fn(images) for r in chosen}


def shift_report(
    run: Run | str | Path,
    split: str = "val",
    weights: str = "best",
    index: DatasetIndex | str | Path | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Top-1 and macro-F1 of ``run``'s ``weights`` on the in-distribution rows of ``split`` (default val), clean
    and under each rewrite. An open-set (K + 1) model is scored on its K class columns.

    Returns {"split", "weights", "n", "clean": {"top1", "macro_f1"}, "rewrites": {name: {"top1", "macro_f1",
    "in_shape_recipe", "changed_pixels" (median fraction of pixels the rewrite flips)}}, "mean" (mean top-1 over
    the rewrites: the shift-val proxy), "held_out_mean" (over rewrites with in_shape_recipe False), "drop" (clean
    top-1 minus mean)}."""
    run = run if isinstance(run, Run) else Run(run)
    idx = run.index(index)
    layout = run.layout
    rows, _ = split_rows(idx, split, layout.sink if layout.has_sink else None)
    if len(rows) == 0:
        raise StillroomError(f"shift_report: split {split!r} of {idx.root} has no in-distribution rows")
    labels = idx.labels[rows]
    clean = np.asarray(load_images(idx)[rows])
    k = layout.num_id
    classes = run.classes[:k]
    loaded = run.load(weights)

    def score(images: np.ndarray) -> dict[str, float]:
        logits = predict_logits(loaded.model, loaded.normalizer, images, np.arange(len(images)))[:, :k]
        rep = classification_report(logits, labels, classes, topk=(1,), n_pairs=0)
        return {"top1": rep["top1"], "macro_f1": rep["macro_f1"]}

    out: dict[str, Any] = {"split": split, "weights": weights, "n": int(len(rows)), "clean": score(clean)}
    per: dict[str, dict[str, Any]] = {}
    for name, images in rewrite_images(clean, names).items():
        changed = (images != clean).reshape(len(images), -1).mean(1)
        per[name] = {**score(images), "in_shape_recipe": _rewrite(name).in_shape_recipe,
                     "changed_pixels": float(np.median(changed))}  # fmt: skip
    out["rewrites"] = per
    out["mean"] = float(np.mean([r["top1"] for r in per.values()]))
    held = [r["top1"] for r in per.values() if not r["in_shape_recipe"]]
    out["held_out_mean"] = float(np.mean(held)) if held else float("nan")
    out["drop"] = out["clean"]["top1"] - out["mean"]
    return out
