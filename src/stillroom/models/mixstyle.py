"""MixStyle (Zhou et al. 2021, "Domain Generalization with MixStyle", ICLR; §3): a training-only regularizer that
mixes the feature statistics of two images so that a network cannot tie a class to one source's "style".

For a feature map ``x`` of shape ``(B, C, H, W)`` with per-image, per-channel mean ``mu(x)`` and standard deviation
``sig(x)`` over ``H, W`` (§3, eq. 4-6), and a batch permutation ``perm`` (the paper's "random shuffle" variant):

    lam ~ Beta(alpha, alpha)                                    (one per image)
    gamma = lam * sig(x) + (1 - lam) * sig(x)[perm]
    beta  = lam * mu(x)  + (1 - lam) * mu(x)[perm]
    MixStyle(x) = gamma * (x - mu(x)) / sig(x) + beta

applied with probability ``p`` per batch, after the early stages only (the paper's default: ResNet's res1 and
res2, ``p = 0.5``, ``alpha = 0.1``; §4.1), where the statistics carry style rather than class. The statistics are
detached (§3: gradients do not flow through them). Here a "style" is how an artist draws a silhouette: contour
roughness, stroke thickness, pixel-art steps; the demo's training data holds two (game sprites and the official
artwork) and is judged on a third.

It is attached as forward hooks (``attach_mixstyle``) rather than as modules, so the network's parameters and their
names are those of the plain architecture: the weights export, distil and load exactly as without it, and a model
in ``eval()`` (evaluation, precise-BN re-estimation, export) never mixes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stillroom._io import StillroomError

__all__ = ["MixStyle", "attach_mixstyle"]


class MixStyle:
    """A forward hook that mixes instance statistics (see the module docstring) while its module is training."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6) -> None:
        if not 0.0 <= p <= 1.0:
            raise StillroomError(f"MixStyle p must be in [0, 1], got {p}")
        if alpha <= 0:
            raise StillroomError(f"MixStyle alpha must be > 0, got {alpha}")
        self.p, self.alpha, self.eps = p, alpha, eps

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor | None:
        if not module.training or out.dim() != 4 or out.size(0) < 2 or torch.rand(()) >= self.p:
            return None  # None keeps the module's own output
        x = out.float()  # statistics in float32 even under bf16 autocast
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        b = x.size(0)
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((b, 1, 1, 1)).to(x.device)
        perm = torch.randperm(b, device=x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return ((x - mu) / sig * sig_mix + mu_mix).to(out.dtype)


def attach_mixstyle(
    model: nn.Module, layers: Sequence[str], p: float = 0.5, alpha: float = 0.1
) -> list[torch.utils.hooks.RemovableHandle]:
    """Mix styles after each submodule named in ``layers`` (``model.get_submodule`` names, e.g. ``layer1`` of a
    ResNet, ``features.2`` of a MobileNet); returns the hook handles (``handle.remove()`` detaches one)."""
    if not layers:
        raise StillroomError("MixStyle needs at least one layer name")
    hook = MixStyle(p, alpha)
    handles = []
    for name in layers:
        try:
            sub = model.get_submodule(name)
        except AttributeError:
            top = ", ".join(n for n, _ in model.named_children())
            raise StillroomError(
                f"MixStyle layer {name!r} is not a submodule of {type(model).__name__} (top-level: {top})"
            ) from None
        handles.append(sub.register_forward_hook(hook))
    return handles
