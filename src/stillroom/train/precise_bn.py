"""Precise BatchNorm: re-estimate running statistics on clean (un-augmented) training images.

Why (issue 2, measured): torchvision's MobileNetV3 uses BN momentum 0.01; with few steps per epoch the running
statistics lag far behind the weights, and they are averaged over augmented images. Eval-mode test top-1 of a
MobileNetV3-Small at 64 px swung 51-76 % across seeds as trained and became 77-85 % after re-estimation.

How (issue 13; REFERENCE 1.1): the statistics must not depend on the order of rows. The first version averaged
per-batch variances over batches taken in index order; every index is sorted by species, so each batch held a few
species, the variance *between* batches was never counted and eval-mode accuracy collapsed (cross-view mnv3-small
16.8% as saved vs 50.5% with the same weights re-estimated on shuffled rows). Two changes fix it:

1. Exact pooled statistics. A forward pre-hook on every BN layer records each batch's per-channel count, mean and
   sum of squared deviations (float64) and they are pooled with the parallel-variance formula (Chan et al.):
   ``mean = sum_b n_b m_b / N``, ``M2 = sum_b [M2_b + n_b (m_b - mean)^2]``. The pooled variance is the population
   variance of the layer's inputs over all rows (law of total variance), whatever the batches were; the stored
   ``running_var`` is the unbiased ``M2 / (N - 1)``, as PyTorch keeps it.
2. A canonical order (``canonical_bn_rows``): the chosen rows are sorted, then permuted by a seeded generator, so
   the batches mix classes like training batches do, and the same set of rows gives the same batches whatever order
   the caller passed them in. This matters below the first BN layer: while statistics are gathered every BN layer
   normalizes with its batch statistics (train mode, as during training), so what deeper layers see depends on
   how batches are composed.

Only BN buffers change; weights are never touched, and dropout stays off while the statistics are gathered.

The guard (``bn_consistency``): eval-mode top-1 on clean training images vs top-1 of the same weights when every BN
layer normalizes with the statistics of shuffled batches (train-mode BN, nothing else in train mode). Correct running
statistics give nearly the same accuracy; a large drop in eval mode names BatchNorm statistics as the suspect.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from stillroom.models.inference import batch_inference_model, iter_batches

__all__ = [
    "recompute_bn_stats",
    "recompute_bn_on_rows",
    "canonical_bn_rows",
    "bn_consistency",
    "has_batchnorm",
    "bn_layers",
    "BN_GAP_WARN",
]

# Eval-mode top-1 more than this far below batch-statistics top-1 on the same clean images is flagged (absolute,
# as a fraction). Chosen loose: correct statistics measured 0-3 points apart on the demo students; the order bug
# gave 12-34 points.
BN_GAP_WARN = 0.10


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(bn_layers(model))


def canonical_bn_rows(rows: np.ndarray, max_images: int | None, seed: int) -> np.ndarray:
    """The rows used for BN statistics, in the order they are fed: the sorted unique ``rows`` (at most
    ``max_images``, drawn without replacement by ``seed``), then permuted by ``seed``. Depends only on the set of
    rows, never on the order they came in, and mixes classes within every batch."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    rng = np.random.default_rng(seed)
    if max_images is not None and len(rows) > max_images:
        rows = np.sort(rng.choice(rows, max_images, replace=False))
    return rows[rng.permutation(len(rows))]


def _batches_of(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Near-equal contiguous batches of at most ``batch_size`` rows (no trailing batch of 1, which BN refuses in
    train mode when a layer's spatial size is 1)."""
    n_batches = max(1, -(-len(rows) // batch_size))
    return [b for b in np.array_split(rows, n_batches) if len(b)]


class _Pooled:
    """Per-channel count / mean / M2 of one BN layer's inputs, pooled over batches in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach()
        dims = [d for d in range(x.ndim) if d != 1]  # every dim but channels: (N, C, ...) -> C
        n_b = x.numel() // x.shape[1]
        xd = x.double()
        m_b = xd.mean(dim=dims)
        m2_b = (xd - m_b.view(1, -1, *([1] * (x.ndim - 2)))).square().sum(dim=dims)
        if self.mean is None:
            self.n, self.mean, self.m2 = n_b, m_b, m2_b
            return
        n = self.n + n_b
        delta = m_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta.square() * (self.n * n_b / n)
        self.n = n


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BN layer's running mean/var to the pooled population statistics of its inputs over ``batches``
    (module docstring). BN layers normalize with batch statistics meanwhile; everything else is in eval mode.
    Returns the number of images seen; leaves the model in eval mode. Feed batches in a mixed order
    (``canonical_bn_rows``): the first BN layer's statistics are order-free, deeper ones depend on batch makeup."""
    bns = bn_layers(model)
    if not bns:
        model.eval()
        return 0
    momenta = [bn.momentum for bn in bns]
    pools = [_Pooled() for _ in bns]
    hooks = [bn.register_forward_pre_hook(pool) for bn, pool in zip(bns, pools, strict=True)]
    for bn in bns:
        bn.momentum = 0.0  # running buffers stay put during the pass; they are overwritten below
    model.eval()
    for bn in bns:
        bn.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    for bn, pool in zip(bns, pools, strict=True):
        if pool.mean is None:
            continue  # a layer the forward never reached (e.g. an unused branch): leave it as it was
        bn.running_mean.copy_(pool.mean.to(bn.running_mean.dtype))
        bn.running_var.copy_((pool.m2 / max(pool.n - 1, 1)).to(bn.running_var.dtype))
    return seen


def recompute_bn_on_rows(
    model: nn.Module,
    normalizer: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    seed: int = 0,
    max_images: int | None = None,
) -> dict[str, Any]:
    """``recompute_bn_stats`` over ``images[rows]`` in the canonical order. Returns what was used (recorded in
    ``model.json`` as ``precise_bn``): rows, batches, batch size, seed, method."""
    order = canonical_bn_rows(rows, max_images, seed)
    batches = _batches_of(order, batch_size)
    seen = recompute_bn_stats(model, (x for b in batches for x in iter_batches(images, b, normalizer, len(b))))
    return {
        "rows": int(seen),
        "batches": len(batches),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "method": "pooled population mean/var per channel (order-free rows: sorted, then seeded permutation)",
    }


@torch.no_grad()
def bn_consistency(
    model: nn.Module,
    normalizer: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 128,
    seed: int = 0,
    max_images: int | None = 2048,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Eval-mode top-1 vs batch-statistics top-1 of ``model`` on the same clean ``images[rows]`` (module docstring).

    ``labels`` are the labels of all images (indexed by row); ``num_classes`` limits the argmax to the first
    classes (the K ID classes of a K+1 model; rows labelled >= it are skipped). Returns ``eval_top1``,
    ``batch_stats_top1``, ``gap`` (batch-stats minus eval), ``rows`` and ``suspect`` (gap > ``BN_GAP_WARN``) with a
    message. The model itself is not changed."""
    rows = np.asarray(rows, dtype=np.int64)
    if num_classes is not None:
        rows = rows[np.asarray(labels)[rows] < num_classes]
    order = canonical_bn_rows(rows, max_images, seed)
    y = torch.from_numpy(np.asarray(labels)[order].astype(np.int64))
    out: dict[str, Any] = {"rows": int(len(order)), "batch_size": int(batch_size), "threshold": BN_GAP_WARN}
    if not has_batchnorm(model) or len(order) < 2:
        return {**out, "eval_top1": None, "batch_stats_top1": None, "gap": None, "suspect": False}
    k = num_classes
    batches = _batches_of(order, batch_size)

    # a copy, channels-last on the CPU (1.3-1.6x faster there; models.inference.batch_inference_model)
    net, channels_last = batch_inference_model(model)

    def top1(m: nn.Module) -> float:
        preds = [
            m(x)[:, :k].argmax(1).cpu()
            for b in batches
            for x in iter_batches(images, b, normalizer, len(b), channels_last)
        ]
        return float((torch.cat(preds) == y).double().mean())

    was_training = model.training
    net.eval()
    try:
        eval_top1 = top1(net)
    finally:
        model.train(was_training)
    probe = copy.deepcopy(net).eval()
    for bn in bn_layers(probe):
        bn.train()
        bn.momentum = 0.0  # batch statistics for normalization; the copy's buffers are irrelevant
    batch_top1 = top1(probe)
    gap = batch_top1 - eval_top1
    out.update(eval_top1=eval_top1, batch_stats_top1=batch_top1, gap=gap, suspect=bool(gap > BN_GAP_WARN))
    if out["suspect"]:
        out["message"] = (
            f"eval-mode top-1 on {len(order)} clean training images is {100 * eval_top1:.1f}% but "
            f"{100 * batch_top1:.1f}% with batch statistics: the BatchNorm running statistics look wrong "
            "(re-estimate them on shuffled clean training rows; see stillroom.train.precise_bn)"
        )
    return out
