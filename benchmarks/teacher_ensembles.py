"""Teacher ensembles on a split that measures generalization (issue 14: "teacher ensemble >= 80%" on cross-view).

Every subset (size 1..--max-size) of the given soft-label stores (un-augmented logits of each teacher for every row
of one index, checked aligned to it) is scored as the mean of its members' softmax probabilities, the ensemble the
KD losses distil (REFERENCE 2, fused). The ensemble to use is the one with the best val top-1, ties broken by the
lower val NLL (the cross-view val split is saturated: with 273 rows many ensembles tie at 270 right, and the proper
score still ranks them), then by fewer members; test is reported beside it and never used to choose.

``--shift`` adds the ensemble's shift-val (issue 14's domain-shift proxy, ``evaluate.shift``: top-1 on the 11 outline
rewrites of the val images, mean over rewrites; each member run from its store's manifest, best weights) and
``--select shift`` ranks by it instead (ties: val NLL, then fewer members). The same-view val split cannot see what
helps on another view or drawing; the proxy is built from val images only, so test still chooses nothing.

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
    ap.add_argument("--shift", action="store_true", help="add the ensembles' shift-val (runs every member)")
    ap.add_argument("--select", choices=("val", "shift"), default="val", help="rank by val top-1 or by shift-val")
    args = ap.parse_args()
    if args.select == "shift" and not args.shift:
        ap.error("--select shift needs --shift")
    index = load_index(args.index)
    stores = [SoftLabelStore.open(p) for p in args.stores]
    require_aligned(stores, index)  # same rows, same order, same classes: else a StillroomError naming the store
    y = np.asarray(index.labels)
    splits = {s: index.split_indices(s) for s in ("val", "test")}
    probs = {s.path.name: softmax(np.asarray(s.logits, dtype=np.float64), axis=1) for s in stores}
    shifted = {s.path.name: _shift_probs(s, index, splits["val"]) for s in stores} if args.shift else {}
    rows = []
    for k in range(1, min(args.max_size, len(stores)) + 1):
        for members in itertools.combinations(probs, k):
            p = sum(probs[m] for m in members) / k
            acc = {s: float((p[r].argmax(1) == y[r]).mean()) for s, r in splits.items()}
            vr = splits["val"]
            nll = float(-np.log(np.clip(p[vr, y[vr]], 1e-12, None)).mean())
            shift = float("nan")
            if shifted:
                per = [sum(shifted[m][name] for m in members) / k for name in shifted[members[0]]]
                shift = float(np.mean([(q.argmax(1) == y[vr]).mean() for q in per]))
            rows.append((members, acc["val"], nll, acc["test"], shift))
    if args.select == "shift":
        rows.sort(key=lambda r: (-r[4], r[2], len(r[0])))
    else:
        rows.sort(key=lambda r: (-r[1], r[2], len(r[0])))
    extra = " shift-val % |" if shifted else ""
    lines = [f"| teachers (mean softmax) | val top-1 % | val NLL |{extra} test top-1 % |",
             "|---|---:|---:|" + ("---:|" if shifted else "") + "---:|"]  # fmt: skip
    for i, (members, val, nll, test, shift) in enumerate(rows):
        mark = f" **(chosen on {args.select})**" if i == 0 else ""
        sh = f" {100 * shift:.2f} |" if shifted else ""
        lines.append(f"| {' + '.join(members)}{mark} | {100 * val:.2f} | {nll:.4f} |{sh} {100 * test:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


def _shift_probs(store: SoftLabelStore, index, val_rows: np.ndarray) -> dict[str, np.ndarray]:
    """{rewrite: softmax of the store's teacher (its run and weights, from the manifest; checked by sha256) on the
    rewritten val images}, in val row order."""
    from stillroom._io import StillroomError
    from stillroom.data.dataset import load_images
    from stillroom.evaluate.shift import rewrite_images
    from stillroom.models.inference import predict_logits
    from stillroom.runs import Run

    teacher = store.manifest["teacher"]
    loaded = Run(teacher["run"]).load(teacher["weights"].removesuffix(".safetensors"))
    if loaded.weights_sha256 != teacher["weights_sha256"]:
        raise StillroomError(f"{store.path}: {loaded.weights_path} is not the weights this store was exported from")
    clean = np.asarray(load_images(index)[val_rows])
    out = {}
    for name, images in rewrite_images(clean).items():
        logits = predict_logits(loaded.model, loaded.normalizer, images, np.arange(len(images)))
        out[name] = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return out


if __name__ == "__main__":
    main()
