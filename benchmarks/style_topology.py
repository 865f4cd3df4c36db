"""Issue 14 item 1: how the drawing styles differ in topology (holes, detached pieces) at the same preprocessing.

For each index: share of images with a hole, mean holes, mean object pieces (8-connected), mean fill of the box,
mean area, over all its rows or the splits given (``data.topology.mask_topology``, the seed 000 §2.5 audit's
numbers). Motivates and checks the ``topology`` augmentation (``data.augment``): a model trained on sprites may
lean on gaps that another artist closes.

    python benchmarks/style_topology.py artifacts/demo/data/sprites64_1-151 \\
        artifacts/demo/data/style_artwork_sprites64_1-151 artifacts/demo/data/style_icons_sprites64_1-151
"""

from __future__ import annotations

import argparse

import numpy as np

from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.data.topology import mask_topology


def topology_summary(index_dir: str, splits: list[str] | None = None) -> dict[str, float]:
    """Mean topology of an index's images (all rows, or the rows of ``splits``)."""
    index = load_index(index_dir)
    keep = np.isin(index.splits, splits) if splits else np.ones(len(index), bool)
    stats = [mask_topology(img[0]) for img in load_images(index)[keep]]
    holes = np.array([s["holes"] for s in stats])
    return {
        "images": len(stats),
        "with_hole": float((holes > 0).mean()),
        "holes": float(holes.mean()),
        "pieces": float(np.mean([s["components"] for s in stats])),
        "fill": float(np.mean([s["fill"] for s in stats])),
        "area": float(np.mean([s["area"] for s in stats])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("indexes", nargs="+")
    ap.add_argument("--split", action="append", default=None, help="only these splits (repeatable); default all")
    args = ap.parse_args()
    print("| index | images | with a hole % | holes / image | pieces / image | box fill | area (px) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for d in args.indexes:
        s = topology_summary(d, args.split)
        print(
            f"| {d} | {s['images']} | {100 * s['with_hole']:.1f} | {s['holes']:.2f} | {s['pieces']:.2f} "
            f"| {s['fill']:.3f} | {s['area']:.0f} |"
        )


if __name__ == "__main__":
    main()
