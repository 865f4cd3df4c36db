"""Teacher ensembles on a split that measures generalization (issue 14: "teacher ensemble >= 80%" on cross-view).

Every subset (size 1..--max-size) of the given soft-label stores (un-augmented logits of each teacher for every row
of one index, checked aligned to it) is scored as the mean of its members' softmax probabilities, the ensemble the
KD losses distil (REFERENCE 2, fused). The ensemble to use is the one with the best val top-1, ties broken by the
lower val NLL (the cross-view val split is saturated: with 273 rows many ensembles tie at 270 right, and the proper
score still ranks them), then by fewer members; test is reported beside it and never used to choose.

    python benchmarks/teacher_ensembles.py --index artifacts/crossview151/data \
        artifacts/crossview151/stores/cv_teacher_{resnet18,resnet18_restyle,efficientnet_b0,convnext_tiny}_s0
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from scipy.special import softmax

from stillroom.data.index import load_index
from stillroom.softlabels.check import require_aligned
from stillroom.softlabels.store import SoftLabelStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--max-size", type=int, default=3)
    ap.add_argument("--out", type=Path, help="markdown table (default: print only)")
    args = ap.parse_args()
    index = load_index(args.index)
    stores = [SoftLabelStore.open(p) for p in args.stores]
    require_aligned(stores, index)  # same rows, same order, same classes: else a StillroomError naming the store
    y = np.asarray(index.labels)
    splits = {s: index.split_indices(s) for s in ("val", "test")}
    probs = {s.path.name: softmax(np.asarray(s.logits, dtype=np.float64), axis=1) for s in stores}
    rows = []
    for k in range(1, min(args.max_size, len(stores)) + 1):
        for members in itertools.combinations(probs, k):
            p = sum(probs[m] for m in members) / k
            acc = {s: float((p[r].argmax(1) == y[r]).mean()) for s, r in splits.items()}
            vr = splits["val"]
            nll = float(-np.log(np.clip(p[vr, y[vr]], 1e-12, None)).mean())
            rows.append((members, acc["val"], nll, acc["test"]))
    rows.sort(key=lambda r: (-r[1], r[2], len(r[0])))
    lines = ["| teachers (mean softmax) | val top-1 % | val NLL | test top-1 % |", "|---|---:|---:|---:|"]
    for i, (members, val, nll, test) in enumerate(rows):
        mark = " **(chosen on val)**" if i == 0 else ""
        lines.append(f"| {' + '.join(members)}{mark} | {100 * val:.2f} | {nll:.4f} | {100 * test:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
