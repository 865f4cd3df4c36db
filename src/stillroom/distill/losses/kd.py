"""Hinton knowledge distillation with one or several teachers (Hinton et al. 2015; seed 001 §4.1.3, §4.1.4, §9.4).

    L = (1 - kd_weight) CE(z, y) + kd_weight T^2 (1/B) sum_i KL(p_t,i^T || p_s,i^T),   p^T = softmax(logits / T)

``kd_weight`` is seed 001's alpha (weight of the KD term). torchdistill's ``alpha`` weights the CE term instead
(REFERENCE 6), hence the unambiguous name. T^2 keeps the gradient scale of the soft term independent of T.
Multi-teacher modes (``_multi.teacher_targets``, shared with DKD and LumiNet), weights w_m uniform unless
``teacher_weights`` is given:

- ``fused``  (default): KL(sum_m w_m softmax(t_m / T) || p_s^T), the probability-averaged ensemble target;
- ``split``: sum_m w_m KL(softmax(t_m / T) || p_s^T), each teacher's distribution kept (seed 001's "split");
- ``logits``: KL(softmax(sum_m w_m t_m / T) || p_s^T), logit-space fusion (seed 001 §9.4).

All three coincide for one teacher or identical teachers. Seed 001 trains at T = 2; our default T =
``DEFAULT_TEMPERATURE`` = 4.0 follows the CIFAR reference setting (mdistiller).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from stillroom.distill.losses._base import DEFAULT_TEMPERATURE, DistillLoss, register_loss
from stillroom.distill.losses._multi import MULTI_TEACHER_MODES, MultiTeacherParams, check_classes, teacher_targets
from stillroom.distill.losses._params import Fraction, Positive, Smoothing

__all__ = ["KDLoss", "KDParams", "MULTI_TEACHER_MODES"]


class KDParams(MultiTeacherParams):
    """kd_weight in [0, 1], temperature > 0, multi_teacher, teacher_weights (``_multi``), label_smoothing for CE."""

    kd_weight: Fraction = 0.5
    temperature: Positive = DEFAULT_TEMPERATURE
    label_smoothing: Smoothing = 0.0


@register_loss("kd")
class KDLoss(DistillLoss):
    """Parameters: ``KDParams``. Returns ``{"loss_ce": (1 - kd_weight) CE, "loss_kd": kd_weight T^2 KL}``."""

    Params: ClassVar[type[KDParams]] = KDParams
    params: KDParams
    needs_teacher: ClassVar[bool] = True
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {"kd_weight": 0.0}
    learns_unlabelled: ClassVar[bool] = True  # the KL never reads the target; CE skips IGNORE_INDEX
    param_hints: ClassVar[dict[str, str]] = {
        "alpha": "use kd_weight (the weight of the KD term, seed 001's alpha; torchdistill's alpha is 1 - kd_weight)",
        "T": "use temperature",
    }

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)  # (M, B, K), detached
        assert t is not None
        check_classes(student_logits, t, "kd")
        p = self.params
        temp = p.temperature
        log_q, w = teacher_targets(t, temp, p.multi_teacher, p.teacher_weights, "kd")  # (M', B, K), (M',)
        log_p_s = F.log_softmax(student_logits / temp, dim=1)  # (B, K)
        # per-target batch-mean KL, shape (M',); split averages them with the teacher weights
        kl_m = F.kl_div(log_p_s.expand_as(log_q), log_q, reduction="none", log_target=True).sum(2).mean(1)
        kl = (w * kl_m).sum()
        ce = F.cross_entropy(student_logits, target, label_smoothing=p.label_smoothing)
        return {"loss_ce": (1.0 - p.kd_weight) * ce, "loss_kd": p.kd_weight * temp**2 * kl}
