"""``stillroom softlabels export``: run a trained teacher once over every sample of an index and store raw logits.

No augmentation, eval mode, rows in index order (REFERENCE 1.3). The store's manifest records the index hashes,
the teacher architecture and the sha256 of the exact weight file used, so a stale or foreign store is caught
before any student step.

Augmentation replay (``views=V``, issue 7): the teacher runs once over V augmented views of every row, view v of
row i being ``augment(image_i, augment_rng(augment_seed, i, v))`` with the trainer's own augment function, and the
store holds (V, N, K) logits. A student trained with the same recipe and seed re-creates exactly the view whose
logits it looks up, so it gets online-teacher targets at cached-teacher cost. Build time and store size are
recorded in the manifest (``build_seconds``, ``logits_bytes``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stillroom._io import StillroomError
from stillroom.data.augment import augment_name, augment_rng, get_augment
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
    views: int = 0,
    augment: str = "auto",
    augment_seed: int = 0,
    progress: Callable[..., None] | None = None,
) -> SoftLabelStore:
    """Export ``run_dir``'s logits for every row of the index at ``index_dir``; default out: RUN/softlabels/<hash>.

    ``views=0``: un-augmented logits (N, K). ``views=V`` > 0: a replay store of (V, N, K) logits of the views
    made by ``augment`` (a recipe name, ``auto`` as in training) with ``augment_seed`` (the student's seed).
    ``progress(phase, done, total)`` is called after each batch.
    """
    if views < 0:
        raise StillroomError(f"export_softlabels: views must be >= 0, got {views}")
    if batch_size < 1:
        raise StillroomError(f"export_softlabels: batch_size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
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
    replay = None
    if views:
        replay = {"augment": augment_name(augment, recipe), "augment_seed": int(augment_seed)}
        logits = _replay_logits(run, images, views, replay, batch_size, progress)
    else:
        logits = predict_logits(run.model, run.normalizer, images, rows, batch_size=batch_size)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "softlabels" / index.index_hash[:12]
    teacher = {
        "arch": run.meta["arch"],
        "weights_sha256": run.weights_sha256,
        "weights": run.weights_path.name,
        "run": str(Path(run_dir)),
    }
    extra = {"build_seconds": round(time.perf_counter() - t0, 3)}
    return write_store(
        out, logits, index, teacher=teacher, preprocessing=recipe, dtype=dtype, replay=replay, extra=extra
    )


@torch.no_grad()
def _replay_logits(
    run, images: np.ndarray, views: int, replay: dict, batch_size: int, progress: Callable[..., None] | None
) -> np.ndarray:
    """(V, N, K) float32 logits of the teacher on view v of every row, batched over rows."""
    aug = get_augment(replay["augment"], {})
    seed, n = replay["augment_seed"], len(images)
    run.model.eval()
    total, done, out = views * n, 0, []
    for v in range(views):
        chunks = []
        for start in range(0, n, batch_size):
            batch_rows = range(start, min(start + batch_size, n))
            # (B, C, S, S) uint8: exactly what IndexDataset serves for (seed, row, view)
            x = torch.stack([aug(torch.from_numpy(np.array(images[r])), augment_rng(seed, r, v)) for r in batch_rows])
            chunks.append(run.model(run.normalizer(x)).float().cpu())
            done += len(batch_rows)
            if progress:
                progress("export", done, total)
        out.append(torch.cat(chunks).numpy())
    return np.stack(out)  # (V, N, K)
