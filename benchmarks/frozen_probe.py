"""Issue 14 item 1: do frozen ImageNet features read another artist's drawings? A linear probe.

The ImageNet EfficientNet-Lite weights (``models/pretrained.py``) are used as a fixed feature extractor: each image
(grey, bilinearly resized to ``--size`` px, the three RGB inputs fed the same channel, scaled to [-1, 1] as the
weights were trained) gives the pooled penultimate features; a multinomial logistic regression (scikit-learn,
standardized features) is fitted on the train split of ``--train-index`` and scored on the val / test splits of each
``--eval`` index, classes matched by name. No fine-tuning, so nothing here can learn the sprites' drawing style
beyond what a linear map on ImageNet features can express: if such features carried species identity across
styles, the probe would read the third style (box icons) better than the teachers trained here (25-38%).

    python benchmarks/frozen_probe.py --train-index artifacts/demo/data/sprites64_1-151 --size 64 --size 160 \\
        --eval artifacts/demo/data/sprites64_1-151 --eval artifacts/demo/data/style_icons_sprites64_1-151
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex, load_index
from stillroom.models.factory import create_model
from stillroom.models.pretrained import load_pretrained


def features(model: torch.nn.Module, index: DatasetIndex, rows: np.ndarray, size: int, batch: int = 128) -> np.ndarray:
    """Pooled penultimate features of ``index``'s ``rows`` at ``size`` px (grey, [-1, 1], channel repeated)."""
    images, out = load_images(index), []
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = torch.from_numpy(np.array(images[rows[i : i + batch]])).float().mean(1, keepdim=True) / 255.0
            if size != x.shape[-1]:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-index", required=True)
    ap.add_argument("--eval", action="append", required=True, help="index to score (val and test splits)")
    ap.add_argument("--size", type=int, action="append", help="input side in px (default: 64)")
    ap.add_argument("--weights", default="efficientnet_lite0")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    args = ap.parse_args(argv)
    model = create_model(args.weights, 3, 1000, 64)
    load_pretrained(model, args.weights, 3)
    model.eval()
    train = load_index(args.train_index)
    rows = train.split_indices("train")
    print("| size | index | split | n | top-1 % |\n|---:|---|---|---:|---:|")
    for size in args.size or [64]:
        t0 = time.time()
        x = features(model, train, rows, size)
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(max_iter=300, C=args.C).fit(scaler.transform(x), train.labels[rows])
        column = {c: i for i, c in enumerate(train.classes)}
        for path in args.eval:
            index = load_index(path)
            to_train = np.array([column[c] for c in index.classes])  # classes matched by name
            for split in ("val", "test"):
                r = index.split_indices(split)
                pred = clf.predict(scaler.transform(features(model, index, r, size)))
                top1 = 100 * float(np.mean(pred == to_train[index.labels[r]]))
                print(f"| {size} | {path} | {split} | {len(r)} | {top1:.2f} |")
        print(f"<!-- size {size}: {time.time() - t0:.0f} s -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
