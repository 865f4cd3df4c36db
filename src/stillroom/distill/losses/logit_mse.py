"""Logit matching: the student regresses the teacher's raw logits (Kim et al. 2021, "Comparing Kullback-Leibler
Divergence and Mean Squared Error Loss in Knowledge Distillation", IJCAI, §3-4; Hinton et al. 2015 §2.1 as T -> inf).

    L = (1 - kd_weight) CE(z, y) + kd_weight (1/(B K)) sum_i ||z_i - t_i||^2

Why a loss of its own next to ``kd``: KL at any temperature only sees softmax(z / T), which is blind to a shift of
all logits, so the student copies the teacher's *relative* scores but not their level. Logit-based OOD scores
(MaxLogit, Energy) read that level: a teacher that stays low on a silhouette that is no species passes this doubt
on only if the student regresses the logits themselves. The mean over the B x K elements (as ``F.mse_loss`` and
Kim et al.'s code) keeps the gradient per logit 2 (z - t) / K, the same order as KD's T^2 KL gradient at high T
(Hinton et al. §2.1: (z - t) / K for zero-mean logits), so ``kd_weight`` means about what it means for ``kd``.

Several teachers: ``fused`` and ``logits`` regress the weighted mean of the teachers' logits; ``split`` sums the
weighted per-teacher terms (the same gradient; the loss value adds the teachers' spread around their mean).
A top-k store gives the classes it dropped one shared logit (their softmax mass spread evenly): this loss copies
that level as if it were the teacher's score, so logit matching wants a full store.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from stillroom.distill.losses._base import DistillLoss, register_loss
from stillroom.distill.losses._multi import MultiTeacherParams, check_classes, teacher_weights
from stillroom.distill.losses._params import Fraction, Smoothing

__all__ = ["LogitMSELoss", "LogitMSEParams"]


class LogitMSEParams(MultiTeacherParams):
    """kd_weight in [0, 1] (weight of the MSE term), label_smoothing for CE, multi_teacher, teacher_weights."""

    kd_weight: Fraction = 0.5
    label_smoothing: Smoothing = 0.0


@register_loss("logit_mse")
class LogitMSELoss(DistillLoss):
    """Parameters: ``LogitMSEParams``. Returns ``{"loss_ce": (1 - kd_weight) CE, "loss_kd": kd_weight MSE}``."""

    Params: ClassVar[type[LogitMSEParams]] = LogitMSEParams
    params: LogitMSEParams
    needs_teacher: ClassVar[bool] = True
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {"kd_weight": 0.0}
    learns_unlabelled: ClassVar[bool] = True  # the MSE never reads the target; CE skips IGNORE_INDEX
    param_hints: ClassVar[dict[str, str]] = {
        "alpha": "use kd_weight (the weight of the MSE term)",
        "temperature": "logit matching has no temperature (it is KD's limit T -> inf)",
    }

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)  # (M, B, K), detached
        assert t is not None
        check_classes(student_logits, t, "logit_mse")
        p = self.params
        w = teacher_weights(t, p.teacher_weights, "logit_mse")  # (M,)
        if p.multi_teacher == "split":
            mse = (w * ((student_logits.unsqueeze(0) - t) ** 2).mean(dim=(1, 2))).sum()
        else:  # fused and logits: the weighted mean of the teachers' logits
            mse = F.mse_loss(student_logits, (w[:, None, None] * t).sum(0))
        ce = F.cross_entropy(student_logits, target, label_smoothing=p.label_smoothing)
        return {"loss_ce": (1.0 - p.kd_weight) * ce, "loss_kd": p.kd_weight * mse}
