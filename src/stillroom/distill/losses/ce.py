"""Cross-entropy on hard labels: the scratch baseline every distillation method is compared to (seed 001 §4.1.3).

L_CE = -(1/B) sum_i log softmax(z_i)[y_i]        (with label smoothing eps: targets (1-eps) onehot + eps/K)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from stillroom._io import StillroomError
from stillroom.distill.losses import LOSSES, DistillLoss

__all__ = ["CELoss"]


@LOSSES.register("ce")
class CELoss(DistillLoss):
    """Plain cross-entropy; teacher logits, if given, are ignored.

    Args:
        label_smoothing: epsilon in [0, 1) as in ``torch.nn.functional.cross_entropy`` (default 0.0).

    Returns ``{"loss_ce": scalar}``.
    """

    needs_teacher: ClassVar[bool] = False
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = {}

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise StillroomError(f"loss 'ce': label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        self._check_inputs(student_logits, None, target)
        return {"loss_ce": F.cross_entropy(student_logits, target, label_smoothing=self.label_smoothing)}

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
