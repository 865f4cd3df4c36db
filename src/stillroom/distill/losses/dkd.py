"""Decoupled knowledge distillation (Zhao et al., CVPR 2022; seed 001 §4.1.5; REFERENCE 2).

With p^T = softmax(logits / T), target class g, binary b = (p_g, 1 - p_g) and the renormalised non-target
distribution p~_j = p_j / (1 - p_g), j != g (batch means over i):

    TCKD = KL(b_t || b_s),   NCKD = KL(p~_t || p~_s)

Two presets (``preset``; named defaults that explicit parameters override, ``DKDParams.presets``), each with its
own form of the CE / TCKD weights:

- ``reference`` (default; Zhao et al. / mdistiller CIFAR-100): ce_weight 1.0, alpha 1.0, beta 8.0, T 4.0,
  warmup_epochs 20;  L = ce_weight CE + f(epoch) T^2 (alpha TCKD + beta NCKD);
- ``seed001``: kd_weight a = 0.5, beta b = 4.0, T = 2.0, warmup_epochs 0;
  L = (1 - a) CE + f(epoch) T^2 (a TCKD + b NCKD).

They coincide for ce_weight = 1 - a, alpha = a once warm-up is over; kd_weight with ce_weight or alpha is an error.
``parameterisation``, the former name of ``preset``, is still read (configs of finished runs).

Warm-up f(epoch) = min((epoch + 1) / warmup_epochs, 1) where ``epoch`` (from ctx) is the 0-based epoch index the
trainer passes: the same schedule as mdistiller's min(epoch / warmup, 1) with its 1-based epoch (1/20 in the first
epoch, full from the 20th), and never a zero factor, which would make the first epoch plain CE. Without ``epoch`` in
ctx (e.g. a validation loss) f = 1. The warm-up scales TCKD and NCKD, never CE, as in mdistiller.

Where we differ from the paper's code (mdistiller ``distillers/DKD.py``) and from seed 001:

- NCKD drops the target column exactly (the K-1 non-target log-probabilities are gathered and renormalised with
  logsumexp) instead of subtracting 1000 from the target logit; no inf enters, so no NaN gradient either.
- TCKD takes log(1 - p_g) as logsumexp of the non-target log-probabilities, not torch.log of a sum of softmax
  outputs, which is -inf (NaN loss) once p_g rounds to 1 in float32.
- TCKD and NCKD come back as separate terms (mdistiller returns their sum as ``loss_kd``); the total is the same.
- Multi-teacher modes (``multi_teacher``, ``teacher_weights``; see ``_multi``) are ours: ``fused`` and ``logits``
  build one teacher distribution before the decoupling, ``split`` averages the per-teacher TCKD and NCKD terms.
- Seed 001 prints TCKD as -(1/n) sum_i p_t,g log p_s,g. That keeps only the target half of the binary
  cross-entropy, so it always pushes p_s,g up; we use the binary KL of the paper and REFERENCE 2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor

from stillroom._io import StillroomError
from stillroom.distill.losses._base import DEFAULT_TEMPERATURE, DistillLoss, register_loss
from stillroom.distill.losses._multi import MultiTeacherParams, check_classes, teacher_targets, warmup_factor
from stillroom.distill.losses._params import Fraction, NonNegative, Positive

__all__ = ["DKDLoss", "DKDParams"]

_WEIGHTS = ("ce_weight", "alpha", "kd_weight")  # the CE / TCKD weights: a preset sets one form of them


class DKDParams(MultiTeacherParams):
    """preset, its weights (ce_weight and alpha >= 0, or kd_weight in [0, 1]), beta >= 0, temperature > 0,
    warmup_epochs >= 0 (each from the preset unless given), multi_teacher, teacher_weights (``_multi``)."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "reference": {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": DEFAULT_TEMPERATURE,
                      "warmup_epochs": 20},
        "seed001": {"kd_weight": 0.5, "beta": 4.0, "temperature": 2.0, "warmup_epochs": 0},
    }  # fmt: skip
    aliases: ClassVar[dict[str, str]] = {"parameterisation": "preset"}

    preset: str = "reference"
    ce_weight: NonNegative | None = None
    alpha: NonNegative | None = None
    kd_weight: Fraction | None = None
    beta: NonNegative  # the fields without a default come from the preset
    temperature: Positive
    warmup_epochs: NonNegative

    @model_validator(mode="after")
    def _one_form(self) -> DKDParams:
        own = [n for n in _WEIGHTS if n in self.presets[self.preset]]
        foreign = [n for n in _WEIGHTS if n not in own and getattr(self, n) is not None]
        if foreign:
            raise ValueError(
                f"{', '.join(foreign)} is not a parameter of preset {self.preset!r} (its weights: {', '.join(own)}; "
                f"kd_weight a stands for ce_weight = 1 - a, alpha = a)"
            )
        return self

    @property
    def ce_tckd_weights(self) -> tuple[float, float]:
        """(weight of CE, weight of TCKD) in either form."""
        if self.kd_weight is not None:
            return 1.0 - self.kd_weight, self.kd_weight
        assert self.ce_weight is not None and self.alpha is not None
        return self.ce_weight, self.alpha

    def resolved(self) -> dict[str, Any]:
        return {k: v for k, v in super().resolved().items() if v is not None or k not in _WEIGHTS}  # one form


@register_loss("dkd")
class DKDLoss(DistillLoss):
    """Parameters: ``DKDParams``. Returns ``{"loss_ce", "loss_tckd", "loss_nckd"}``, each with its weight, T^2 and
    warm-up factor applied."""

    Params: ClassVar[type[DKDParams]] = DKDParams
    params: DKDParams
    needs_teacher: ClassVar[bool] = True
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {"alpha": 0.0, "beta": 0.0}
    param_hints: ClassVar[dict[str, str]] = {"T": "use temperature", "warmup": "use warmup_epochs"}

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)  # (M, B, K), detached
        assert t is not None
        check_classes(student_logits, t, "dkd")
        if t.shape[2] < 2:
            raise StillroomError(f"loss 'dkd': needs at least 2 classes, got {t.shape[2]}")
        p = self.params
        temp = p.temperature
        log_q, w = teacher_targets(t, temp, p.multi_teacher, p.teacher_weights, "dkd")  # (M', B, K), (M',)
        log_p = F.log_softmax(student_logits / temp, dim=1).expand_as(log_q)  # (M', B, K)
        gt = F.one_hot(target, t.shape[2]).bool().expand_as(log_q)  # (M', B, K)
        bin_q, non_q = _decouple(log_q, gt)
        bin_p, non_p = _decouple(log_p, gt)
        # batch-mean KL per target, (M',); split averages them with the teacher weights
        tckd = (w * F.kl_div(bin_p, bin_q, reduction="none", log_target=True).sum(2).mean(1)).sum()
        nckd = (w * F.kl_div(non_p, non_q, reduction="none", log_target=True).sum(2).mean(1)).sum()
        scale = warmup_factor(ctx.get("epoch"), p.warmup_epochs, "dkd") * temp**2
        ce_weight, alpha = p.ce_tckd_weights
        return {
            "loss_ce": ce_weight * F.cross_entropy(student_logits, target),
            "loss_tckd": scale * alpha * tckd,
            "loss_nckd": scale * p.beta * nckd,
        }


def _decouple(log_p: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probabilities (M, B, K) -> binary (log p_g, log(1 - p_g)) (M, B, 2) and the renormalised non-target
    log-probabilities (M, B, K-1), classes in their original order. Exact: no column is masked with a constant."""
    m, b, k = log_p.shape
    log_g = log_p[gt].view(m, b, 1)  # boolean indexing keeps row-major order: one target per row
    log_non = log_p[~gt].view(m, b, k - 1)
    log_rest = torch.logsumexp(log_non, dim=2, keepdim=True)  # log(1 - p_g), stable as p_g -> 1
    return torch.cat([log_g, log_rest], dim=2), log_non - log_rest
