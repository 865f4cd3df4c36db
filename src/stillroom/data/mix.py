"""Mixed training batches (``TrainConfig.mix``): CutMix and mixup, one draw per batch.

Kept apart from ``data.augment`` (per-image views, a function of (seed, row, view), which replay stores re-create):
a mixed image depends on the batch it lands in, so no store can hold its teacher logits, and only online teachers
(or none) can train on it (``config.MixConfig``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["mix_batch"]


def mix_batch(
    x: torch.Tensor, mode: str, alpha: float, prob: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mixed uint8 batch, partner of each row, share ``lam`` of each row's own image) for ``TrainConfig.mix``.

    One draw per batch, as in the papers' reference code: with probability ``prob``, ``lam ~ Beta(alpha, alpha)``
    and a random permutation pairs every image with another of the batch. ``cutmix`` (Yun et al. 2019, §3.1) pastes
    the partner's pixels into a box of area ``(1 - lam) H W`` centred uniformly (clipped at the border; ``lam`` is then
    recomputed from the clipped box, so it is the exact pixel share): a binary silhouette stays binary, so the
    mixed image carries no rendering cue. ``mixup`` (Zhang et al. 2018) blends ``lam x + (1 - lam) x[partner]``,
    rounded back to uint8 (grey levels on binary masks). ``lam = 1`` and the identity partner when not mixed.
    """
    b, _, h, w = x.shape
    keep = torch.arange(b, device=x.device)
    if mode == "none" or b < 2 or rng.random() >= prob:
        return x, keep, 1.0
    lam = float(rng.beta(alpha, alpha))
    partner = torch.as_tensor(rng.permutation(b), device=x.device)
    if mode == "mixup":
        mixed = lam * x.float() + (1.0 - lam) * x[partner].float()
        return mixed.round_().clamp_(0, 255).to(torch.uint8), partner, lam
    if mode != "cutmix":
        raise ValueError(f"mix mode {mode!r}: use none, cutmix or mixup")
    r = math.sqrt(1.0 - lam)
    ch, cw = int(h * r), int(w * r)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    if y1 <= y0 or x1 <= x0:
        return x, keep, 1.0
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]  # gathers the box only, not whole images
    return mixed, partner, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
