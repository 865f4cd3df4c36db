"""Training augmentations, as pure functions of (image, random generator).

The generator is seeded from (run seed, sample row, view), so the augmented view a sample gets is a deterministic
function of those three numbers: runs repeat exactly, and a teacher can later be replayed on the very view the
student saw. Parameters are drawn here and applied with torchvision's functional ops.

Recipes (registry ``AUGMENTS``):

- ``silhouette`` (seed 000 §2.2): rotation <= 10 degrees and translation <= 10 % with white fill, horizontal flip
  p = 0.5, random erasing p = 0.5 filled with white (so erasing removes mass instead of adding it). Nearest
  interpolation keeps masks binary.
- ``rgb``: the usual photo recipe: random resized crop (scale 0.6-1), horizontal flip, brightness/contrast/saturation
  jitter of 0.2.
- ``none``: identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from stillroom._registry import Registry

__all__ = ["AUGMENTS", "augment_rng", "augment_name", "get_augment"]

Augment = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]  # (C,H,W) uint8 -> (C,H,W) uint8
AUGMENTS: Registry[Augment] = Registry("augmentation")

_WHITE = 255


def augment_rng(seed: int, row: int, view: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, int(row), int(view)])


def _erase_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int] | None:
    """A RandomErasing box (area 2-33 %, log-uniform aspect 0.3-3.3) or None when no box fits in 10 tries."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(0.02, 0.33)
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < eh < h and 0 < ew < w:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return None


@AUGMENTS.register("silhouette")
def silhouette(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    _, h, w = img.shape
    angle = float(rng.uniform(-10.0, 10.0))
    tx, ty = (int(round(rng.uniform(-0.1, 0.1) * s)) for s in (w, h))
    flip = rng.random() < 0.5
    erase = rng.random() < 0.5
    box = _erase_box(rng, h, w) if erase else None
    out = TF.affine(img, angle=angle, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0], fill=_WHITE)
    if flip:
        out = TF.horizontal_flip(out)
    if box is not None:
        out = TF.erase(out, *box, v=torch.tensor(_WHITE, dtype=out.dtype))
    return out


@AUGMENTS.register("rgb")
def rgb(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    _, h, w = img.shape
    scale, aspect = rng.uniform(0.6, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    ch = min(h, int(round(math.sqrt(scale * h * w / aspect))))
    cw = min(w, int(round(math.sqrt(scale * h * w * aspect))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
    if rng.random() < 0.5:
        out = TF.horizontal_flip(out)
    b, c, s = rng.uniform(0.8, 1.2, size=3)
    out = TF.adjust_contrast(TF.adjust_brightness(out, float(b)), float(c))
    if out.shape[0] == 3:
        out = TF.adjust_saturation(out, float(s))
    return out


@AUGMENTS.register("none")
def identity(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    return img


def augment_name(name: str, recipe: dict) -> str:
    """The registered recipe ``name`` stands for: ``auto`` resolves from the dataset recipe (silhouettes get the
    seed recipe, photos the RGB one). Replay stores record this name, so student and store can be compared."""
    if name == "auto":
        name = recipe.get("augment") or ("silhouette" if recipe.get("kind", "silhouette") == "silhouette" else "rgb")
    return name


def get_augment(name: str, recipe: dict) -> Augment:
    """The augmentation function for ``name`` (``auto`` resolved by ``augment_name``)."""
    return AUGMENTS.get(augment_name(name, recipe))
