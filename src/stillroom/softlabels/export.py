"""``stillroom softlabels export``: run a trained teacher once over every sample of an index and store raw logits.

No augmentation, eval mode, rows in index order (REFERENCE 1.3). The store's manifest records the index hashes,
the teacher architecture and the sha256 of the exact weight file used, so a stale or foreign store is caught
before any student step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stillroom._io import StillroomError
from stillroom.data.dataset import load_images
from stillroom.data.index import load_index
from stillroom.models.inference import predict_logits
from stillroom.softlabels.store import SoftLabelStore, write_store
from stillroom.train.checkpoint import load_run

__all__ = ["export_softlabels"]


def export_softlabels(
    run_dir: str | Path,
    index_dir: str | Path,
    out_dir: str | Path | None = None,
    weights: str = "best",
    dtype: str = "float32",
    batch_size: int = 256,
) -> SoftLabelStore:
    """Export ``run_dir``'s logits for every row of the index at ``index_dir``; default out: RUN/softlabels/<hash>."""
    run = load_run(run_dir, weights)
    index = load_index(index_dir)
    recipe, trecipe = index.recipe, run.meta["recipe"]
    for key in ("size", "channels", "mean", "std"):
        if recipe.get(key) != trecipe.get(key):
            raise StillroomError(
                f"{index.root}: preprocessing {key}={recipe.get(key)!r} differs from the teacher's "
                f"{trecipe.get(key)!r} ({run.path}); the teacher would see inputs it was not trained on"
            )
    sink = index.recipe.get("sink_class")
    k_class_teacher = sink == index.num_classes - 1 and run.meta["classes"] == index.classes[:-1]  # no sink column
    if run.meta["classes"] != index.classes and not k_class_teacher:
        raise StillroomError(f"{index.root}: class list differs from the teacher's ({run.path})")
    images = load_images(index)
    rows = np.arange(len(index))
    logits = predict_logits(run.model, run.normalizer, images, rows, batch_size=batch_size)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "softlabels" / index.index_hash[:12]
    teacher = {
        "arch": run.meta["arch"],
        "weights_sha256": run.weights_sha256,
        "weights": run.weights_path.name,
        "run": str(Path(run_dir)),
    }
    return write_store(out, logits, index, teacher=teacher, preprocessing=recipe, dtype=dtype)
