"""Edge-texture stress test of a K+1 open-set model (issue 3): does its OOD rejection survive when the edge texture
that tells sprites from emoji (the shortcut probe's "edge" features) is taken away from both sources alike?

The data-level shortcut probe says edge texture alone separates ID from OOD; it cannot say whether a trained model
uses it. Here the model is re-evaluated on test images whose outlines were rewritten the same way for ID and OOD:

- ``repixelate-F``: the whole image is BOX-reduced to F x its side, binarized at half coverage and enlarged back
  with nearest neighbour, so every outline gets the same coarse staircase (sprite pixel art and smooth emoji alike);
- ``smooth-R``: Gaussian blur of radius R, binarized at half, which rounds staircase corners off every outline.

Both also blur shape a little, so the closed-set top-1 on ID rows is reported beside the AUROCs: a model that
rejects by shape should lose OOD AUROC about as much as it loses top-1; one that rejects by texture loses AUROC
much faster. Scores (higher = more in-distribution, ID rows positive, REFERENCE 4): sink = 1 - p_sink and MSP =
the largest ID-class probability of the K+1 softmax.

    python benchmarks/edge_stress.py artifacts/openset151/runs/os_student_td_cap_s0 [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.evaluate.shift import repixelate, smooth  # the outline rewrites, shared with shift-val (issue 14)
from stillroom.models.inference import predict_logits
from stillroom.runs import load_run


def stress_report(run_dir: Path, split: str = "test") -> list[dict]:
    run = load_run(run_dir)
    index = load_index(run.meta["index"])
    sink = index.recipe.get("sink_class")
    if sink is None or run.meta["num_classes"] != int(sink) + 1:
        raise SystemExit(f"{run_dir}: not a K+1 model on a merged index (needs the sink class)")
    rows = index.split_indices(split)
    labels = index.labels[rows]
    clean = np.asarray(load_images(index)[rows])
    is_id = labels < sink
    variants = {"clean": clean}
    for f in (0.5, 0.375):
        variants[f"repixelate-{f}"] = repixelate(clean, f)
    for r in (1.0, 2.0):
        variants[f"smooth-{r}"] = smooth(clean, r)
    out = []
    for name, imgs in variants.items():
        logits = predict_logits(run.model, run.normalizer, imgs, np.arange(len(imgs)))
        prob = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
        sink_score, msp = 1.0 - prob[:, sink], prob[:, :sink].max(1)
        out.append(
            {
                "variant": name,
                "id_top1": float((logits[is_id, :sink].argmax(1) == labels[is_id]).mean()),
                "auroc_sink": float(roc_auc_score(is_id, sink_score)),
                "auroc_msp": float(roc_auc_score(is_id, msp)),
                "ood_rejection": float((logits[~is_id].argmax(1) == sink).mean()),
                "id_to_sink": float((logits[is_id].argmax(1) == sink).mean()),
            }
        )
    return out


def markdown(rows: list[dict]) -> str:
    head = "| variant | ID top-1 (K classes) | AUROC sink | AUROC MSP | OOD rejection | ID rows sent to sink |\n"
    head += "|---|---:|---:|---:|---:|---:|\n"
    body = "".join(
        f"| {r['variant']} | {r['id_top1']:.2%} | {r['auroc_sink']:.4f} | {r['auroc_msp']:.4f} | "
        f"{r['ood_rejection']:.2%} | {r['id_to_sink']:.2%} |\n"
        for r in rows
    )
    return head + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    print(markdown(stress_report(args.run, args.split)), end="")


if __name__ == "__main__":
    main()
