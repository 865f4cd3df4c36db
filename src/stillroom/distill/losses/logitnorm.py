"""LogitNorm: a student that learns from the direction of its logits, not from their length (issue 16 item 5).

Wei, Xie, Cheng, Feng, An and Li, "Mitigating Neural Network Overconfidence with Logit Normalization" (ICML 2022):
cross-entropy keeps growing the logits' norm on training images, so a softmax score grows with it whatever the
input, OOD included; training on the logits scaled to a fixed norm 1/tau removes that drive:

    L = CE(z / (tau ||z||_2), y)

Here the normalised logits go to any registered K-class loss ``base`` (default ``luminet``, the demo's), every term
of it: for ``ce`` this is the paper's loss (tested against pytorch-ood's ``LogitNorm``); for a distillation loss
the student's side of the KL is the normalised logits too (the teacher's logits are left as they are). The served
model is unchanged: its raw logits, whose argmax is the same, are what the evaluation, the post-hoc scores and the
ladder read. ``tau`` = 0.04, the paper's value for CIFAR-10 (a norm of 25: a softmax that can still reach ~1 over
151 classes); 1e-7 is added to the norm as in pytorch-ood.

    loss: {name: logitnorm, params: {base: luminet, tau: 0.04}}
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from stillroom.distill.losses._base import WrapperLoss, WrapperParams, register_loss
from stillroom.distill.losses._params import Positive

__all__ = ["LogitNormLoss", "LogitNormParams", "logit_norm"]


def logit_norm(logits: Tensor, tau: float, eps: float = 1e-7) -> Tensor:
    """Each row scaled to the L2 norm 1/tau (eps keeps an all-zero row finite)."""
    return logits / (tau * (logits.norm(p=2, dim=1, keepdim=True) + eps))


class LogitNormParams(WrapperParams):
    """base (a registered K-class loss), base_params (its parameters, stored resolved), tau > 0."""

    tau: Positive = 0.04  # Wei et al. 2022, CIFAR-10


@register_loss("logitnorm")
class LogitNormLoss(WrapperLoss):
    """Parameters: ``LogitNormParams``. Returns the base loss's terms, computed on the normalised student
    logits."""

    Params: ClassVar[type[LogitNormParams]] = LogitNormParams
    params: LogitNormParams

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor, **ctx: Any
    ) -> dict[str, Tensor]:
        return self.base(logit_norm(student_logits, self.params.tau), teacher_logits, target, **ctx)
