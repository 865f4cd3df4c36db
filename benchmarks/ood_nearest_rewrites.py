"""Which OOD source do rewritten ID images look like? (issue 16 item 3: why a sink takes some rewrites)

For each OOD source, the ID test images (clean, then under outline rewrites of ``evaluate.shift``) are matched to
their nearest neighbour by pixel IoU in a bank of the ID train rows plus up to ``--ood-rows`` train rows of that
source; the share whose nearest neighbour is an OOD row is printed per rewrite. A source that many rewritten ID
images sit next to is one a sink trained on it will pull those images into. Shape only (binary masks), no model.

    python benchmarks/ood_nearest_rewrites.py artifacts/demo/data/sprites64_1-151 \
        artifacts/loso_cre_only/ood_creatures artifacts/loso_f10/ood_emoji artifacts/loso_f10/ood_game-icons
"""

from __future__ import annotations

import argparse

import numpy as np

from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.evaluate.shift import REWRITES, rewrite_images


def _flat(masks: np.ndarray) -> np.ndarray:
    return masks.reshape(len(masks), -1).astype(np.float32)


def nearest_is_ood(queries: np.ndarray, id_bank: np.ndarray, ood_bank: np.ndarray) -> np.ndarray:
    """(Q,) bool: the nearest neighbour by IoU of each query mask (Q, S, S) among ``id_bank`` + ``ood_bank``
    (boolean masks) is an OOD row. Ties go to the ID bank (it comes first)."""
    bank = np.concatenate([_flat(id_bank), _flat(ood_bank)])
    q = _flat(queries)
    inter = q @ bank.T
    iou = inter / (q.sum(1)[:, None] + bank.sum(1)[None] - inter + 1e-9)
    return iou.argmax(1) >= len(id_bank)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("id_index")
    ap.add_argument("ood", nargs="+", help="OOD source directories")
    ap.add_argument("--rewrite", action="append", default=None, help="rewrite name (repeatable; default: all)")
    ap.add_argument("--ood-rows", type=int, default=600, help="train rows of each source in the bank")
    args = ap.parse_args()
    idx = load_index(args.id_index)
    images = load_images(idx)
    id_bank = images[idx.split_indices("train")][:, 0] < 128
    test = images[idx.split_indices("test")]
    names = args.rewrite or [r.name for r in REWRITES]
    views = {"clean": test, **rewrite_images(test, names)}
    print("| OOD source | bank OOD rows | " + " | ".join(views) + " |")
    print("|---|---:|" + "---:|" * len(views))
    for src in args.ood:
        o = load_index(src)
        ood_bank = load_images(o)[o.split_indices("train")[: args.ood_rows]][:, 0] < 128
        cells = [f"{100 * nearest_is_ood(v[:, 0] < 128, id_bank, ood_bank).mean():.1f}%" for v in views.values()]
        print(f"| {src} | {len(ood_bank)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
