"""Augmentation time per image: one image at a time vs in batches (issue 14 item 6).

    python benchmarks/bench_augment.py                          # make demo's index (64 px), one torch thread
    python benchmarks/bench_augment.py --index DIR --images 2048

Each cell is the median over ``--repeats`` passes of the milliseconds per image to draw and apply a recipe's views
(generator included, as the trainer does) to ``--images`` training images: ``one at a time`` calls the recipe per
image (what ``IndexDataset.__getitem__`` does), ``batched`` calls ``augment_batch`` on ``--batch`` images at once
(what the DataLoader's ``__getitems__`` fetch does since the batched path). Both give bit-identical views
(tests/test_augment.py). Without an index, random blob masks of ``--size`` px stand in for sprites.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from stillroom.data.augment import AUGMENTS, augment_batch, augment_rng


def _images(args: argparse.Namespace) -> tuple[torch.Tensor, str]:
    index = Path(args.index)
    if (index / "index.json").is_file():
        from stillroom.data.dataset import load_images
        from stillroom.data.index import load_index

        arr = load_images(load_index(index))
        return torch.from_numpy(np.array(arr[: args.images])), f"{index} ({arr.shape[-1]} px)"
    g = torch.Generator().manual_seed(0)
    imgs = torch.full((args.images, 1, args.size, args.size), 255, dtype=torch.uint8)
    for i in range(args.images):
        t, left = torch.randint(0, args.size // 2, (2,), generator=g).tolist()
        imgs[i, :, t : t + args.size // 3, left : left + args.size // 3] = 0
    return imgs, f"random blobs ({args.size} px; {index} not found)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="artifacts/demo/data/sprites64_1-151")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipes", default="silhouette,shape,restyle")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    imgs, source = _images(args)
    n = len(imgs)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {n} images of {source}, batch {args.batch}")
    print("| recipe | one at a time ms / image | batched ms / image | speed-up |")
    print("|---|---:|---:|---:|")
    for name in args.recipes.split(","):
        aug = AUGMENTS.get(name)

        def one(aug=aug) -> None:
            for i in range(n):
                aug(imgs[i], augment_rng(0, i, 0))

        def batched(aug=aug) -> None:
            for b in range(0, n, args.batch):
                rows = range(b, min(b + args.batch, n))
                augment_batch(aug, imgs[b : b + args.batch], [augment_rng(0, i, 0) for i in rows])

        cells = []
        for fn in (one, batched):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            cells.append(1000 * statistics.median(times) / n)
        print(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[0] / cells[1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
