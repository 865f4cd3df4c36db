"""Emoji OOD set, report step: the checks stored in ``index.json`` (REFERENCE 1.2 (b); seed 000 §2.5; pipeline in
``ood_emoji``).

``near_duplicates``: distance of each OOD test image to its nearest OOD train image (the split by name should leave
no near-copies across splits). ``dataset_probes`` adds, when an ID index is given, the ID-vs-OOD shortcut probe
(``shortcuts.shortcut_probe``: can topology or edge texture alone tell the sink from the species?). ``quantiles``
is the 5/25/50/75/95% summary used for these and for the effective-resolution report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stillroom.data.index import DatasetIndex

__all__ = ["quantiles", "near_duplicates", "dataset_probes"]


def quantiles(values: np.ndarray) -> dict[str, float]:
    """``{"p5", "p25", "p50", "p75", "p95"}`` of ``values``; empty for no values."""
    if len(values) == 0:
        return {}
    qs = np.percentile(values, [5, 25, 50, 75, 95])
    return {f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), qs, strict=True)}


def near_duplicates(images: np.ndarray, splits: np.ndarray) -> dict[str, Any]:
    """Distance (fraction of pixels) of each OOD test image to its nearest OOD train image: the split by name
    should leave no near-copies across splits (dedup already removed those under the 1% rule)."""
    from stillroom.data.leakage import nearest_neighbours

    train, test = images[splits == "train"], images[splits == "test"]
    if len(train) == 0 or len(test) == 0:
        return {"n_test": int(len(test)), "median": None}
    _, dist = nearest_neighbours(train < 128, test < 128, binary=True)
    return {"n_test": int(len(test)), **quantiles(np.asarray(dist, dtype=np.float64))}


def dataset_probes(images: np.ndarray, splits: np.ndarray, id_index: DatasetIndex | None, seed: int) -> dict[str, Any]:
    """``near_duplicates`` of the OOD ``images`` ``(N, S, S)`` uint8 and, with ``id_index``, its ``shortcut_probe``
    (ID rows labelled False, OOD rows True, each with its own split; ``seed`` seeds the classifiers)."""
    probes: dict[str, Any] = {"near_duplicates": near_duplicates(images, splits)}
    if id_index is not None:
        from stillroom.data.dataset import load_images
        from stillroom.data.shortcuts import shortcut_probe

        id_images = load_images(id_index)[:, 0]
        probes["shortcut_probe"] = shortcut_probe(
            np.concatenate([id_images, images]),
            np.concatenate([np.zeros(len(id_images), bool), np.ones(len(images), bool)]),
            np.concatenate([id_index.splits, splits]),
            seed=seed,
        )
        probes["shortcut_probe"]["outline"] = id_index.recipe.get("outline", "none")  # the OOD build's too (issue 16)
    return probes
