"""Run-level pieces of the ladder's feature signals (``deploy.knn``, ``deploy.rmd``; issue 16 item 4), kept apart
from ``run_ladder`` so that each stays short: whether a run can serve them, the PyTorch penultimate features with
evaluation's cut, the KNN bank of the run's clean ID training rows and the RMD Gaussians of the same rows and their
style views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stillroom._io import read_json
from stillroom.deploy.knn import KNN_K, KNNScorer
from stillroom.deploy.onnx_export import EXPORT_DIR
from stillroom.deploy.rmd import RMDScorer
from stillroom.runs import Run, split_rows

__all__ = ["feature_inputs", "knn_available", "run_features"]


def knn_available(run_dir: str | Path, weights_sha256: str) -> str | None:
    """None when the knn signal can be served for these weights (export.json records ``model_features.onnx`` of
    the same weights with passing parity, and the file is there), else the reason it cannot."""
    exp_path = Path(run_dir) / EXPORT_DIR / "export.json"
    if not exp_path.is_file():
        return f"no {exp_path} (knn is served from model_features.onnx: run `stillroom export` first)"
    exp = read_json(exp_path)
    feats = exp.get("features")
    if exp.get("weights", {}).get("sha256") != weights_sha256:
        return f"{exp_path}: exported from other weights"
    if not isinstance(feats, dict):
        return f"{exp_path}: no features file (exported before model_features.onnx existed: export again)"
    if "skipped" in feats:
        return f"no features file: {feats['skipped']}"
    if not feats.get("ok"):
        return f"{exp_path}: model_features.onnx failed its parity check"
    if not (Path(run_dir) / EXPORT_DIR / feats["file"]).is_file():
        return f"{Path(run_dir) / EXPORT_DIR / feats['file']}: missing"
    return None


def run_features(run: Any, images: np.ndarray, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, D) float32 pooled penultimate features of ``images[rows]`` in PyTorch: ``split_model``'s backbone,
    global average pool, flatten, exactly as evaluation's KNN takes them (``evaluate.feature_ood``) and as
    ``model_features.onnx`` outputs them (to export.json's parity)."""
    import torch

    from stillroom.evaluate.feature_ood import pool_features, split_model
    from stillroom.models.inference import iter_batches

    backbone, _ = split_model(run.model)
    run.model.eval()
    out = []
    with torch.no_grad():
        for x in iter_batches(images, rows, run.normalizer, batch_size):
            out.append(pool_features(backbone(x)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def feature_inputs(d: dict[str, Any]) -> dict[str, Any]:
    """What the ladder's feature signals are fitted on, for ``run_logits``'s ``d``: "knn" (the scorer whose bank is
    the ID training rows' features: train split, label < K, never val/test, as evaluation's), "rmd" (RMD fitted as
    evaluation fits it: the same rows and, for silhouettes, ``RMD_VIEWS`` style views of each, with their labels),
    "val" / "ood" (features of the val ID rows and of the val OOD rows or None), and "knn_bank" / "rmd_fit" (where
    each came from). The training rows' features are computed once for both."""
    from stillroom.evaluate.feature_ood import RMD_VIEWS, has_style_views, style_view_images

    idx, run = d["index"], d["run"]
    k_id = Run(run.path).layout.num_id
    train = split_rows(idx, "train", d["row_sink"])[0]
    train = train[idx.labels[train] < k_id]
    train_feats = run_features(run, d["images"], train)
    views = RMD_VIEWS if has_style_views(idx.recipe) else 0
    feats = [train_feats]
    for v in range(views):
        drawn = style_view_images(d["images"], train, v)
        feats.append(run_features(run, drawn, np.arange(len(drawn))))
    rmd = RMDScorer().fit(np.concatenate(feats), np.tile(idx.labels[train], views + 1))
    rmd.fit_rows_ = int(len(train))
    ood = None
    if d["ood_rows"] is not None and len(d["ood_rows"]):
        ood = run_features(run, d["ood_images"], d["ood_rows"])
    rows = {"index": str(idx.root), "split": "train", "rows": int(len(train))}
    return {
        "knn": KNNScorer(KNN_K).fit(train_feats),
        "rmd": rmd,
        "val": run_features(run, d["images"], d["id_rows"]),
        "ood": ood,
        "knn_bank": {**rows, "k": KNN_K},
        "rmd_fit": {**rows, "views": views},
    }
