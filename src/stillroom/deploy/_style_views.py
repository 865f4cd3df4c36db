"""Style views for placing a ladder's thresholds (issue 16 item 5): ``fit_run_ladder(style_views=V)``.

Outside this repository ID species drawn in another style must be accepted at the ladder's 95% operating point
(REFERENCE 7; proxy: ``deploy.style_proxy``). A ladder fitted on clean val only holds 95% on the clean rendering and
accepts 76-86% of rewritten val (BENCHMARKS "Style proxies at the served ladder"). Fitting it on clean val plus V
views of each val image under the ``style`` augmentation (``data.augment``: the stroke-thickness change and
re-rendering of ``restyle``, no rotation, shift, flip or erasing, which the service's cropping and centring undo or
no artist does) places the operating point over a range of drawing styles. The views are a training augmentation's
families, not the style proxy's fixed rewrites: ``style_proxy`` reports the rewrites outside those families
(``in_shape_recipe`` False) on their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stillroom._io import StillroomError
from stillroom.deploy._run_knn import feature_inputs, run_features

__all__ = ["STYLE_AUGMENT", "calibration_inputs", "style_views_of"]

#: the augmentation whose views ``fit_run_ladder(style_views=V)`` calibrates on: drawing style only
STYLE_AUGMENT = "style"


def style_views_of(images: np.ndarray, rows: np.ndarray, views: int, seed: int = 0, batch: int = 256) -> np.ndarray:
    """(views * len(rows), C, S, S) uint8: view v of ``images[rows[i]]`` at position ``v * len(rows) + i``, drawn by
    the ``style`` augmentation with ``augment_rng(seed, rows[i], v)`` (deterministic: a ladder fitted twice on the
    same run gets the same thresholds)."""
    import torch

    from stillroom.data.augment import augment_batch, augment_rng, get_augment

    aug = get_augment(STYLE_AUGMENT, {})
    rows = np.asarray(rows)
    out = []
    for v in range(views):
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            x = torch.from_numpy(np.asarray(images[part]))
            out.append(augment_batch(aug, x, [augment_rng(seed, int(r), v) for r in part]).numpy())
    return np.concatenate(out) if out else np.asarray(images[rows[:0]])  # no views: (0, C, S, S)


def calibration_inputs(d: dict[str, Any], views: int, knn: bool, seed: int = 0) -> dict[str, Any]:
    """What ``fit_run_ladder`` fits on, from ``run_logits``'s ``d``: "id" / "ood" logits (the clean val rows, then
    their ``views`` style views), "knn_kw" (``Ladder.fit``'s knn arguments when ``knn``: the bank of the ID training
    rows and the features of the same val rows and views, and the RMD Gaussians of the same training rows; else
    empty), "knn_bank" and "rmd_fit" (where they came from) and "summary" (what was fitted on)."""
    if views < 0:
        raise StillroomError(f"fit_run_ladder: style_views must be >= 0, got {views}")
    out: dict[str, Any] = {"id": d["id"], "ood": d["ood"], "knn_kw": {}, "knn_bank": None, "rmd_fit": None}
    out["summary"] = {"style_views": int(views), "id_rows": int(len(d["id"]))}
    feats: dict[str, np.ndarray | None] = {"id": None, "ood": None}
    if knn:
        fi = feature_inputs(d)
        feats["id"], feats["ood"], out["knn_bank"], out["rmd_fit"] = fi["val"], fi["ood"], fi["knn_bank"], fi["rmd_fit"]
    for side, images, rows in (("id", d["images"], d["id_rows"]), ("ood", d["ood_images"], d["ood_rows"])):
        if not views or rows is None or not len(rows) or out[side] is None:
            continue
        x = style_views_of(images, rows, views, seed)
        sel = np.arange(len(x))
        out[side] = np.concatenate([out[side], d["logits_fn"](sel, d["index"], x)])
        if knn:
            feats[side] = np.concatenate([feats[side], run_features(d["run"], x, sel)])
    if knn:
        out["knn_kw"] = {"val_features": feats["id"], "ood_features": feats["ood"], "knn": fi["knn"], "rmd": fi["rmd"]}
    if views:
        out["summary"].update(augment=STYLE_AUGMENT, seed=int(seed), id_fit_rows=int(len(out["id"])))
    return out
