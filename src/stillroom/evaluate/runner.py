"""``stillroom evaluate``: metrics of a run's best and final weights on index splits, into ``metrics.json``.

Reports come from ``evaluate.metrics.classification_report`` (top-1/top-5, macro-F1, per-class F1, confused pairs;
seed 000 §4.1). Confusion matrices go to ``confusion_<split>_<weights>.npy`` beside the JSON (649 x 649 does not
belong in a JSON file). The run must have been trained on the same index (hash check) unless ``index`` has the same
classes and ``allow_other_index`` is set, e.g. to evaluate on a rebuilt or imported set.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stillroom._io import StillroomError, atomic_write_bytes, atomic_write_json, read_json
from stillroom.data.dataset import load_images
from stillroom.data.index import DatasetIndex, load_index
from stillroom.evaluate.metrics import classification_report
from stillroom.models.inference import predict_logits
from stillroom.train.checkpoint import WEIGHT_CHOICES, load_run

__all__ = ["evaluate_run"]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def evaluate_run(
    run_dir: str | Path,
    splits: Sequence[str] = ("test",),
    weights: Sequence[str] = WEIGHT_CHOICES,
    index: DatasetIndex | None = None,
    images: np.ndarray | None = None,
    allow_other_index: bool = False,
) -> dict[str, Any]:
    """Evaluate ``weights`` of the run on ``splits``; merge into ``run_dir/metrics.json`` and return it."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "model.json")
    index = index or load_index(meta["index"])
    if index.index_hash != meta["index_hash"] or index.content_hash != meta["content_hash"]:
        if not allow_other_index:
            raise StillroomError(
                f"{index.root}: not the index {run_dir} was trained on (index/content hash differ); "
                "pass --allow-other-index to evaluate on another dataset with the same classes"
            )
        if index.classes != meta["classes"][: index.num_classes]:
            raise StillroomError(f"{index.root}: classes differ from the run's classes; cannot evaluate")
    images = load_images(index) if images is None else images
    metrics_path = run_dir / "metrics.json"
    out: dict[str, Any] = read_json(metrics_path) if metrics_path.is_file() else {}
    out.update(run=str(run_dir), arch=meta["arch"], index=str(index.root), index_hash=index.index_hash)
    state = read_json(run_dir / "state.json") if (run_dir / "state.json").is_file() else {}
    out["best_epoch"] = state.get("best", {}).get("epoch")
    out["epochs"] = state.get("epoch")
    out.setdefault("splits", {})
    out.setdefault("weights", {})
    for w in weights:
        run = load_run(run_dir, w)
        out["weights"][w] = {"file": run.weights_path.name, "sha256": run.weights_sha256}
        for split in splits:
            rows = index.split_indices(split)
            if len(rows) == 0:
                raise StillroomError(f"{index.root}: split {split!r} is empty")
            logits = predict_logits(run.model, run.normalizer, images, rows)
            labels = index.labels[rows]
            # A K+1 model (OOD sink) is scored on the K in-distribution classes here; open-set metrics are separate.
            k = index.num_classes
            report = classification_report(logits[:, :k], labels, index.classes)
            report["nll"] = float(
                torch.nn.functional.cross_entropy(torch.from_numpy(logits[:, :k]), torch.from_numpy(labels))
            )
            cm = np.asarray(report.pop("confusion_matrix"), dtype=np.int64)
            cm_file = f"confusion_{split}_{w}.npy"
            _save_npy(run_dir / cm_file, cm)
            report["confusion_matrix_file"] = cm_file
            out["splits"].setdefault(split, {})[w] = report
    atomic_write_json(metrics_path, out)
    return out
