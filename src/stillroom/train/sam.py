"""Sharpness-aware minimization (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR, §2 and Algorithm 1; adaptive variant: Kwon et al. 2021, ASAM, ICML, §3).

SAM minimizes the loss at the worst point of a small ball round the weights, ``max_{||e|| <= rho} L(w + e)``. Its
first-order solution is one ascent step along the normalized gradient,

    e(w) = rho * g / ||g||_2                                   (Foret et al. eq. 2, p = 2)
    e(w) = rho * T_w^2 g / ||T_w g||_2,   T_w = |w| (+ eta)     (ASAM, element-wise scaling)

after which the gradient is taken again at ``w + e(w)`` and the base optimizer (SGD, AdamW: weight decay, momentum
and the learning-rate schedule unchanged) steps from ``w`` with it. Each step costs two forward-backward passes.
Flat minima are what the domain-generalization literature credits for SAM's gains under distribution shift (e.g.
Cha et al. 2021, SWAD, §3); here it is offered for models that must read drawings in an unseen style (issue 14).
Measured on the demo's recipe (rho 0.05; BENCHMARKS "Sharpness-aware minimization and CutMix"): no gain for the
teacher on another artist's icons, and none for the student on the held-out styles' val species, so it is off by
default.

The second forward pass must not move BatchNorm's running statistics a second time (they would count the same
batch twice, at perturbed weights): ``frozen_bn_stats`` holds them for its duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from stillroom.train.precise_bn import bn_layers


@torch.no_grad()
def ascend(params: list[nn.Parameter], rho: float, adaptive: bool = False, eta: float = 0.01) -> list[torch.Tensor]:
    """Move every parameter with a gradient to ``w + e(w)`` (in place); return the ``e`` to undo with ``descend``.

    ``params``' ``.grad`` must hold the gradient at ``w``. Parameters without a gradient get ``e = 0``. A zero
    gradient (nothing to ascend) leaves the weights where they are.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    t = [p.abs() + eta if adaptive else None for p in params]  # ASAM's T_w; plain SAM: the identity
    scaled = [g if tw is None else tw * g for g, tw in zip(grads, t, strict=True)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s.float()) for s in scaled]))
    scale = rho / (float(norm) + 1e-12)
    eps = []
    for p, s, tw in zip(params, scaled, t, strict=True):
        e = s * scale if tw is None else tw * s * scale  # ASAM: T_w^2 g / ||T_w g||
        p.add_(e)
        eps.append(e)
    return eps


@torch.no_grad()
def descend(params: list[nn.Parameter], eps: list[torch.Tensor]) -> None:
    """Undo ``ascend``: back to ``w`` (the gradients in ``.grad`` are left for the optimizer)."""
    for p, e in zip(params, eps, strict=True):
        p.sub_(e)


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalize with the batch as in training but leave their running statistics untouched."""
    saved = [(m, m.momentum, m.num_batches_tracked.clone()) for m in bn_layers(model)]
    for m, _, _ in saved:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch, as precise_bn's pass does
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
