"""Cross-entropy on hard labels: the scratch baseline every distillation method is compared to (seed 001 §4.1.3).

L_CE = -(1/B) sum_i log softmax(z_i)[y_i]        (with label smoothing eps: targets (1-eps) onehot + eps/K)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from stillroom.distill.losses._base import DistillLoss, LossParams, register_loss
from stillroom.distill.losses._params import Smoothing

__all__ = ["CELoss", "CEParams"]


class CEParams(LossParams):
    """label_smoothing: epsilon in [0, 1) as in ``torch.nn.functional.cross_entropy``."""

    label_smoothing: Smoothing = 0.0


@register_loss("ce")
class CELoss(DistillLoss):
    """Plain cross-entropy; teacher logits, if given, are ignored. Parameters: ``CEParams``.

    Returns ``{"loss_ce": scalar}``.
    """

    Params: ClassVar[type[CEParams]] = CEParams
    params: CEParams
    needs_teacher: ClassVar[bool] = False
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {}

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        self._check_inputs(student_logits, None, target)
        return {"loss_ce": F.cross_entropy(student_logits, target, label_smoothing=self.params.label_smoothing)}
