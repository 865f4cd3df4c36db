"""Images of an index as one uint8 array, and the torch Dataset that serves (augmented) samples from it.

PNGs are decoded once into ``<dataset>/.cache/images-<content_hash>.npy`` (N, C, S, S) uint8 and memory-mapped
afterwards, so an epoch never re-decodes files and a stale cache cannot be picked up after a rebuild (the name
carries the content hash). Normalization happens on whole batches (``Normalizer``) with the mean/std of the
dataset recipe, which every model built on the dataset inherits.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from stillroom._io import StillroomError, atomic_write_bytes
from stillroom.data.augment import Augment, augment_batch, augment_rng
from stillroom.data.index import DatasetIndex

__all__ = ["load_images", "IndexDataset", "Normalizer"]


def _decode(path: Path, channels: int, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise StillroomError(f"{path}: listed in the index but missing") from None
    except OSError as err:
        raise StillroomError(f"{path}: cannot decode image ({err})") from None
    if arr.shape[:2] != (size, size):
        raise StillroomError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, the recipe says {size}x{size}")
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def load_images(index: DatasetIndex) -> np.ndarray:
    """All images of ``index`` as a read-only (N, C, S, S) uint8 array, from the decode cache when present."""
    recipe = index.recipe
    channels, size = int(recipe.get("channels", 1)), int(recipe["size"])
    cache = index.root / ".cache" / f"images-{index.content_hash[:16]}.npy"
    if cache.is_file():
        try:
            arr = np.load(cache, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            arr = None  # a torn or foreign cache file is rebuilt below, never trusted
        if arr is not None and arr.shape == (len(index), channels, size, size) and arr.dtype == np.uint8:
            return arr
    with ThreadPoolExecutor(max_workers=2) as pool:  # PIL's PNG decoder releases the GIL
        arrays = list(pool.map(lambda p: _decode(index.root / p, channels, size), index.paths))
    arr = np.stack(arrays)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    try:
        atomic_write_bytes(cache, buf.getvalue())
    except OSError:
        pass  # a read-only dataset directory still works, just without the cache
    return arr


class IndexDataset(Dataset):
    """Samples ``rows`` of an index; item = (uint8 image (C,S,S), label, row, view). Augmented views depend on
    (seed, row, view), where the view is the epoch unless ``set_view`` picks another scheme.

    Augmentation replay (``replay_views`` = V > 0): the teacher logits of V fixed views per row are in a store, so
    the view is drawn per sample per epoch from [0, V) as a function of (``draw_seed``, epoch, row), and the image
    is re-created exactly with ``augment_rng(seed, row, view)``; ``seed`` must then be the store's augment seed.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        augment: Augment | None = None,
        seed: int = 0,
        replay_views: int = 0,
        draw_seed: int | None = None,
    ) -> None:
        if replay_views < 0:
            raise StillroomError(f"IndexDataset: replay_views must be >= 0, got {replay_views}")
        self.images, self.labels, self.rows = images, labels, np.asarray(rows, dtype=np.int64)
        self.augment, self.seed, self.view = augment, seed, 0
        self.replay_views, self.draw_seed = replay_views, seed if draw_seed is None else draw_seed
        self._views: np.ndarray | None = None
        self.set_view(0)

    def set_view(self, view: int) -> None:
        """Select the epoch's views: ``view`` itself for every sample, or (replay) a draw seeded by (draw_seed,
        view) with one entry per index row, so a row's view depends on (draw_seed, epoch, row) only."""
        self.view = view
        if self.replay_views:
            rng = np.random.default_rng([self.draw_seed & 0xFFFFFFFF, int(view)])
            self._views = rng.integers(0, self.replay_views, size=len(self.images))  # (N,) one view per row

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, int, int]:
        row = int(self.rows[k])
        view = int(self._views[row]) if self._views is not None else self.view
        img = torch.from_numpy(np.array(self.images[row]))  # copy: the memmap is read-only
        if self.augment is not None:
            img = self.augment(img, augment_rng(self.seed, row, view))
        return img, int(self.labels[row]), row, view

    def __getitems__(self, ks: list[int]) -> list[tuple[torch.Tensor, int, int, int]]:
        """The DataLoader's batched fetch: the same samples as ``__getitem__`` one by one, augmented as one batch
        (``augment_batch``: the silhouette recipes' views are bit-identical, in about half the time)."""
        rows = self.rows[np.asarray(ks, dtype=np.int64)]
        views = self._views[rows] if self._views is not None else np.full(len(rows), self.view)
        imgs = torch.from_numpy(np.array(self.images[rows]))  # (B, C, S, S) copy: the memmap is read-only
        if self.augment is not None:
            rngs = [augment_rng(self.seed, int(r), int(v)) for r, v in zip(rows, views, strict=True)]
            imgs = augment_batch(self.augment, imgs, rngs)
        return [(img, int(self.labels[r]), int(r), int(v)) for img, r, v in zip(imgs, rows, views, strict=True)]


class Normalizer(torch.nn.Module):
    """uint8 batch (B, C, S, S) -> float (x/255 - mean) / std, with the dataset recipe's statistics."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std

    @classmethod
    def from_recipe(cls, recipe: dict) -> Normalizer:
        channels = int(recipe.get("channels", 1))
        mean = list(recipe.get("mean", [0.5] * channels))
        std = list(recipe.get("std", [0.5] * channels))
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise StillroomError(f"recipe mean/std {mean}/{std} do not fit {channels} channel(s)")
        return cls(mean, std)
