"""Feature-based post-hoc OOD scores through pytorch-ood (optional dependency, extra ``ood``; issue 16 item 4).

Logit scores (MSP, MaxLogit, Energy, ODIN in ``evaluate.ood``) see only the classifier's output. The strongest
post-hoc detectors of the OpenOOD v1.5 board look inside the network; three are wired here, all computed by
pytorch-ood (we never re-implement them) and re-oriented to our convention (higher = more in-distribution,
REFERENCE 4; pytorch-ood returns outlier scores, higher = more OOD, so every score is negated):

- ``knn`` (Sun et al. 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors"): distance of the
  L2-normalized penultimate feature (the globally pooled last feature map) to its k-th nearest neighbour among the
  ID **training** rows (clean images, no augmentation). k = ``KNN_K`` (the paper's k = 50 was for 50,000 CIFAR
  images; our training splits hold 2-25 thousand).
- ``ash`` (Djurisic et al. 2023, ASH-S): the lowest ``ASH_PERCENTILE`` of each sample's last feature map is zeroed,
  the rest scaled by exp(sum before / sum after), then the head's energy.
- ``scale`` (Xu et al. 2024, SCALE): the whole feature map scaled by the same factor, nothing pruned, then energy.
- ``rmd`` (Ren et al. 2021, "A Simple Fix to Mahalanobis Distance for Improving Near-OOD Detection", §3): on the same
  pooled features as KNN, a Gaussian per ID class with one shared covariance, and one background Gaussian over all
  fit rows; outlier score ``min_k [d_k(z) - d_0(z)]`` (squared Mahalanobis distances to class k and to the
  background), negated like the others.
  Subtracting ``d_0`` removes what every ID image shares, which is what near-OOD images (parts of ID species) share
  with them too. Fitted on the ID training rows with their labels **and** ``RMD_VIEWS`` re-drawn copies of each
  (``fit_views``: the ``style`` augmentation, drawing changes only), so that the class Gaussians cover how a
  silhouette may be drawn: at the 95% ID threshold the KD students accepted 70% of outline-rewritten ID images
  with RMD fitted on clean rows alone, 84% with the views, at nearly the same OOD rejection (BENCHMARKS "Relative
  Mahalanobis"). Computed in float64 (the covariance of ~10^4 rows of 576 features is inverted).

ASH and SCALE need the model cut into ``backbone`` (image -> 4-D feature map) and ``head`` (feature map -> logits);
``split_model`` knows torchvision's MobileNetV3 / EfficientNet / ConvNeXt / ResNet and timm CNNs. For a K+1 model the
energy is taken over the K ID columns only (the sink has its own score). A model that cannot be cut, or a machine
without pytorch-ood, gets ``{"skipped": reason}`` in the report instead of silently fewer rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "FEATURE_SCORES",
    "KNN_K",
    "ASH_PERCENTILE",
    "SCALE_PERCENTILE",
    "RMD_VIEWS",
    "RMD_VIEW_SEED",
    "has_style_views",
    "style_view_batches",
    "style_view_images",
    "split_model",
    "pool_features",
    "feature_scores",
    "finite_scores",
]

FEATURE_SCORES = ("knn", "ash", "scale", "rmd")
KNN_K = 10
ASH_PERCENTILE = 0.65  # ASH-S at p = 65%: the authors' setting for their ResNet/MobileNet ImageNet runs
SCALE_PERCENTILE = 0.85  # SCALE's default percentile in its paper
RMD_VIEWS = 4  # re-drawn copies of each fit row for RMD (module docstring)
RMD_VIEW_SEED = 20211  # fixed: the same views, hence the same detector, on every evaluation of a run


def split_model(model: nn.Module) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(backbone, head)`` with ``head(backbone(x)) == model(x)`` and a 4-D backbone output; a ``ValueError``
    naming the model when it has no such cut (e.g. a ViT, whose tokens are not a feature map)."""
    if all(hasattr(model, a) for a in ("features", "avgpool", "classifier")):  # torchvision MobileNet/EffNet/ConvNeXt
        if type(model).__name__ == "ConvNeXt":
            return model.features, lambda f: model.classifier(model.avgpool(f))  # its classifier flattens
        return model.features, lambda f: model.classifier(torch.flatten(model.avgpool(f), 1))
    if all(hasattr(model, a) for a in ("layer4", "avgpool", "fc")) and hasattr(model, "conv1"):  # torchvision ResNet

        def backbone(x: Tensor) -> Tensor:
            x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
            return model.layer4(model.layer3(model.layer2(model.layer1(x))))

        return backbone, lambda f: model.fc(torch.flatten(model.avgpool(f), 1))
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):  # timm (4-D output checked on use)
        return model.forward_features, model.forward_head
    raise ValueError(f"{type(model).__name__}: no backbone/head cut known for feature-based OOD scores")


@torch.no_grad()
def pool_features(maps: Tensor) -> Tensor:
    """(B, C) features KNN works on: the last feature map (B, C, h, w) globally average-pooled and flattened. The
    one definition for evaluation, the exported features model and the served KNN bank, so they cannot drift."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


@torch.no_grad()
def _collect(fn: Callable[[Tensor], Tensor], batches: Iterable[Tensor]) -> Tensor:
    return torch.cat([fn(x).float().cpu() for x in batches])


def feature_scores(
    model: nn.Module,
    batches: Callable[[], Iterable[Tensor]],
    fit_batches: Callable[[], Iterable[Tensor]],
    num_id_classes: int,
    knn_k: int = KNN_K,
    fit_labels: np.ndarray | None = None,
    fit_views: Callable[[], Iterable[Tensor]] | None = None,
) -> dict[str, Any]:
    """``{"scores": {name: (N,) array, higher = ID}, "params": {...}}`` for ``FEATURE_SCORES`` on the rows of
    ``batches()`` (normalized inputs in row order), with KNN fitted on ``fit_batches()`` (ID training rows); or
    ``{"skipped": reason}`` when pytorch-ood is missing or the model cannot be cut (module docstring).

    RMD needs ``fit_labels`` (the ID labels of the ``fit_batches()`` rows; without them ``params["rmd"]`` says it
    was skipped and there is no ``rmd`` score); ``fit_views()`` (optional) yields re-drawn copies of the same rows,
    view after view in the same row order (``style_view_batches``), added to RMD's fit only."""
    try:
        from pytorch_ood.detector import ASH, KNN, RMD, SCALE, EnergyBased
    except ImportError:
        return {"skipped": "pytorch-ood is not installed (pip install 'stillroom[ood]')"}
    try:
        backbone, head = split_model(model)
    except ValueError as err:
        return {"skipped": str(err)}
    model.eval()
    k = num_id_classes

    def energy_id(logits: Tensor) -> Tensor:  # outlier score over the K ID columns (the sink has its own score)
        return EnergyBased.score(logits[:, :k])

    def pooled(x: Tensor) -> Tensor:
        return pool_features(backbone(x))

    maps = _collect(backbone, batches())
    if maps.ndim != 4:
        return {"skipped": f"{type(model).__name__}: its features are not a 4-D feature map (shape {list(maps.shape)})"}
    train_feats = _collect(pooled, fit_batches())
    if len(train_feats) <= knn_k:
        return {"skipped": f"KNN needs more than k = {knn_k} training rows, got {len(train_feats)}"}
    knn = KNN(None, k=knn_k).fit_features(train_feats, torch.zeros(len(train_feats), dtype=torch.long))
    ash = ASH(backbone, head, variant="ash-s", percentile=ASH_PERCENTILE, detector=energy_id)
    scale = SCALE(backbone, head, percentile=SCALE_PERCENTILE, detector=energy_id)
    with torch.no_grad():
        feats = pool_features(maps)
        scores = {
            "knn": -knn.predict_features(feats),
            "ash": -ash.predict_feature_maps(maps),
            "scale": -scale.predict_feature_maps(maps),
        }
    params: dict[str, Any] = {
        "knn": {"k": knn_k, "fit_rows": len(train_feats), "features": "globally pooled last feature map, L2"},
        "ash": {"variant": "ash-s", "percentile": ASH_PERCENTILE},
        "scale": {"percentile": SCALE_PERCENTILE},
        "library": "pytorch-ood",
    }
    if fit_labels is None:
        params["rmd"] = {"skipped": "no class labels for the fit rows"}
    else:
        rmd, params["rmd"] = _fit_rmd(RMD, train_feats, np.asarray(fit_labels), fit_views, pooled)
        scores["rmd"] = -rmd.predict_features(feats.double())
    out = {}
    for name, score in scores.items():
        out[name], bad = finite_scores(score.double().numpy())
        if bad:
            params[name]["non_finite_rows"] = bad
    return {"scores": out, "params": params}


def _fit_rmd(
    rmd_cls: Any,
    train_feats: Tensor,
    labels: np.ndarray,
    fit_views: Callable[[], Iterable[Tensor]] | None,
    pooled: Callable[[Tensor], Tensor],
) -> tuple[Any, dict[str, Any]]:
    """pytorch-ood's RMD fitted in float64 on the clean fit rows and their views (labels repeated per view)."""
    if len(labels) != len(train_feats):
        raise ValueError(f"RMD: {len(labels)} fit labels for {len(train_feats)} fit rows")
    # pytorch-ood wants labels 0..C-1 all present: classes without a training row are no candidate for min_k
    present, y = np.unique(labels, return_inverse=True)
    feats = [train_feats]
    if fit_views is not None:
        feats.append(_collect(pooled, fit_views()))
    z = torch.cat(feats).double()
    if len(z) % len(train_feats):
        raise ValueError(f"RMD: {len(z) - len(train_feats)} view rows are not whole copies of {len(train_feats)} rows")
    views = len(z) // len(train_feats) - 1
    # pytorch-ood allocates its means and covariance with torch.zeros / torch.eye (the default dtype): float64 input
    # alone would leave them float32 and the inverse of a near-singular covariance of ReLU-like features inexact
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rmd = rmd_cls(None).fit_features(z, torch.from_numpy(np.tile(y, views + 1)).long())
    finally:
        torch.set_default_dtype(default)
    params = {"fit_rows": len(train_feats), "views": views, "classes": len(present),
              "features": "globally pooled last feature map", "reference": "Ren et al. 2021, §3"}  # fmt: skip
    return rmd, params


def has_style_views(recipe: dict) -> bool:
    """Whether an index recipe's images can be re-drawn by the ``style`` augmentation: single-channel silhouettes
    (for photos the views have no meaning, and RMD fits the clean rows alone)."""
    return recipe.get("kind", "silhouette") == "silhouette" and int(recipe.get("channels", 1)) == 1


def style_view_images(images: np.ndarray, rows: np.ndarray, view: int, batch_size: int = 256) -> np.ndarray:
    """(len(rows), C, S, S) uint8: view ``view`` of ``images[rows]`` under the ``style`` augmentation (stroke
    thickness, re-rendering at 24-48 px, no geometry), seeded by ``(RMD_VIEW_SEED, row, view)``: every call, and the
    ladder's RMD fit (``deploy._run_knn``), gets the same images."""
    from stillroom.data.augment import AUGMENTS, augment_batch, augment_rng

    style = AUGMENTS.get("style")
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        raw = torch.from_numpy(np.ascontiguousarray(images[chunk]))
        out.append(augment_batch(style, raw, [augment_rng(RMD_VIEW_SEED, int(r), view) for r in chunk]).numpy())
    return np.concatenate(out) if out else np.asarray(images[rows[:0]])


def style_view_batches(
    images: np.ndarray, rows: np.ndarray, normalizer: nn.Module, batch_size: int, views: int = RMD_VIEWS
) -> Iterable[Tensor]:
    """Normalized batches of ``views`` re-drawn copies of ``images[rows]`` (uint8 silhouettes, ``style_view_images``),
    view after view in row order."""
    device = next(normalizer.buffers()).device
    for view in range(views):
        for start in range(0, len(rows), batch_size):
            drawn = style_view_images(images, rows[start : start + batch_size], view, batch_size)
            yield normalizer(torch.from_numpy(drawn).to(device))


def finite_scores(s: np.ndarray) -> tuple[np.ndarray, int]:
    """``s`` with non-finite entries set to its lowest finite value (the most OOD-like), and how many there were.

    ASH-S divides by the sum of the pruned feature map; a sample whose last feature map is all zero gives 0 / 0 =
    NaN (seen on a target-dampened student at ood_weight 10: 1 of 861 test rows). Such a sample has no activation
    evidence for any class, so it is ranked as the most out-of-distribution; the count is recorded in the report's
    ``feature_scores`` parameters (``non_finite_rows``) instead of failing the whole evaluation.
    """
    bad = ~np.isfinite(s)
    if not bad.any():
        return s, 0
    fill = float(s[~bad].min()) if (~bad).any() else 0.0
    return np.where(bad, fill, s), int(bad.sum())
