"""LumiNet: distillation on batch-standardised "perception" logits (seed 002 §3.2, eq. 1-4; REFERENCE 2).

Per class j, over the B samples of the batch (teacher and student separately; biased variance):

    h_ij = (z_ij - U_j) / sqrt(V_j + eps),   U_j = mean_i z_ij,   V_j = mean_i (z_ij - U_j)^2       (eq. 1)
    L = CE(z, y) + kd_scale (1/B) sum_i KL(softmax(h_t,i / tau) || softmax(h_s,i / tau))          (eq. 2-4)

The statistics are those of the batch at hand, so cached teacher logits work as they are: the teacher's U, V come
from the B cached rows of the batch. A batch of one has V = 0 and no perception at all: it is an error.
Gradients flow through the student's U_j and V_j (the standardisation is part of the student's function).

Multi-teacher: each teacher is standardised on its own, then the modes of ``_multi`` apply to the perception
logits: ``fused`` averages softmax(h_t,m / tau), ``split`` averages the per-teacher KL terms, ``logits`` takes
softmax(sum_m w_m h_t,m / tau). Standardising first puts teachers with different logit scales on one footing.

``kd_scale`` is an unbounded multiplier of the KL, not a [0, 1] mix like KD's ``kd_weight`` (hence its own name;
``kd_weight``, its former name, is still read so finished runs' configs load). Default ``kd_scale`` = 578 =
alpha^2 / CE_WEIGHT of the authors' CIFAR-100 ResNet32x4 -> ResNet8x4 recipe (alpha = 34, CE_WEIGHT = 2, T = 4;
seed 002): the same balance of CE and KL as theirs. Where we differ from their code
(``mdistiller/distillers/Luminet.py`` in the LumiNet repository):

- Weights: their loss is CE_WEIGHT CE + alpha^2 KL; ours is CE + kd_scale KL, so kd_scale = alpha^2 / CE_WEIGHT
  and our loss is theirs divided by CE_WEIGHT (for SGD: their learning rate is CE_WEIGHT times ours, weight decay
  aside).
- Warm-up: their code multiplies the KL by min(epoch / 20, 1), which the paper does not mention; ours has
  ``warmup_epochs`` = 0 by default (same schedule as DKD's when set, 0-based epoch, see ``_multi.warmup_factor``).
- eps = 1e-5 inside the square root as in their code (the paper has none). KL is a batch mean as in their code,
  where eq. 2 sums over the batch (a factor B). No T^2 factor, as in both.
- Batch size 1 is an error here; their code silently returns a zero KL. Multi-teacher modes are ours.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from stillroom._io import StillroomError
from stillroom.distill.losses._base import DEFAULT_TEMPERATURE, DistillLoss, register_loss
from stillroom.distill.losses._multi import MultiTeacherParams, check_classes, teacher_targets, warmup_factor
from stillroom.distill.losses._params import NonNegative, Positive

__all__ = ["LumiNetLoss", "LumiNetParams", "perception"]


def perception(logits: Tensor, eps: float = 1e-5, dim: int = -2) -> Tensor:
    """Eq. 1: standardise every class column over the batch dimension ``dim`` (biased variance, eps inside)."""
    mean = logits.mean(dim=dim, keepdim=True)
    var = logits.var(dim=dim, unbiased=False, keepdim=True)
    return (logits - mean) / (var + eps).sqrt()


class LumiNetParams(MultiTeacherParams):
    """kd_scale >= 0 (the KL's multiplier, alpha^2 / CE_WEIGHT), temperature tau > 0, eps > 0, warmup_epochs >= 0,
    multi_teacher, teacher_weights (``_multi``)."""

    aliases: ClassVar[dict[str, str]] = {"kd_weight": "kd_scale"}

    kd_scale: NonNegative = 578.0  # the authors' alpha^2 / CE_WEIGHT = 34^2 / 2 (module docstring)
    temperature: Positive = DEFAULT_TEMPERATURE
    eps: Positive = 1e-5
    warmup_epochs: NonNegative = 0.0


@register_loss("luminet")
class LumiNetLoss(DistillLoss):
    """Parameters: ``LumiNetParams``. Returns ``{"loss_ce": CE, "loss_kd": kd_scale f(epoch) KL}``. Needs batches
    of at least 2 samples."""

    Params: ClassVar[type[LumiNetParams]] = LumiNetParams
    params: LumiNetParams
    needs_teacher: ClassVar[bool] = True
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {"kd_scale": 0.0}
    learns_unlabelled: ClassVar[bool] = True  # the KL never reads the target; CE skips IGNORE_INDEX
    param_hints: ClassVar[dict[str, str]] = {
        "alpha": "use kd_scale = alpha^2 / CE_WEIGHT of the authors' config (34^2 / 2 = 578)",
        "lambda_": "use kd_scale",
        "tau": "use temperature",
        "T": "use temperature",
    }

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)  # (M, B, K), detached
        assert t is not None
        check_classes(student_logits, t, "luminet")
        if student_logits.shape[0] < 2:
            raise StillroomError(
                f"loss 'luminet': needs a batch of at least 2 samples (per-class batch statistics), "
                f"got {student_logits.shape[0]}"
            )
        p = self.params
        tau = p.temperature
        h_t = perception(t, p.eps, dim=1)  # (M, B, K): each teacher over its own batch column
        h_s = perception(student_logits, p.eps, dim=0)  # (B, K)
        log_q, w = teacher_targets(h_t, tau, p.multi_teacher, p.teacher_weights, "luminet")  # (M', B, K)
        log_p = F.log_softmax(h_s / tau, dim=1).expand_as(log_q)  # (M', B, K)
        kl = (w * F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(2).mean(1)).sum()
        factor = warmup_factor(ctx.get("epoch"), p.warmup_epochs, "luminet")
        return {"loss_ce": F.cross_entropy(student_logits, target), "loss_kd": p.kd_scale * factor * kl}
