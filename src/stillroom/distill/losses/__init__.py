"""Distillation losses: one registry, one small module per loss (REFERENCE 2; STYLE habits 1-4).

Every loss is an ``nn.Module`` registered in ``LOSSES`` and built by name with ``build_loss(name, **params)``.
The call surface is the same for all of them::

    loss(student_logits (B, K_s), teacher_logits (M, B, K) or None, target (B,) long, **ctx) -> dict[str, Tensor]

The returned dict holds named scalar terms (``loss_ce``, ``loss_kd``, ...), each already multiplied by its
weight; the trainer sums them for the backward pass and logs them one by one. ``ctx`` carries optional extras
(epoch, OOD mask...) that a loss may read and must otherwise ignore.

Teacher logits are detached inside every loss: the teacher is frozen by construction, whether its logits come
from a cached store or from a live forward pass.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from torch import Tensor, nn

from stillroom._io import StillroomError
from stillroom._registry import Registry

__all__ = ["LOSSES", "DistillLoss", "build_loss", "list_losses"]


class DistillLoss(nn.Module):
    """Base class: shared input checks and the class attributes the trainer and conformance tests read."""

    #: whether ``forward`` needs teacher logits (a CE baseline does not, so no teacher is loaded for it)
    needs_teacher: ClassVar[bool] = False
    #: constructor params that reduce the loss to plain cross-entropy (conformance tests); None: no such setting
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = None
    #: misspelt or foreign parameter names -> hint shown by ``build_loss``
    param_hints: ClassVar[dict[str, str]] = {}

    def _check_inputs(self, student_logits: Tensor, teacher_logits: Tensor | None, target: Tensor) -> Tensor | None:
        """Validate shapes; return teacher logits as a detached (M, B, K) tensor in the student's dtype."""
        name = type(self).__name__
        if student_logits.ndim != 2:
            raise StillroomError(f"{name}: student_logits must be (B, K), got shape {tuple(student_logits.shape)}")
        batch = student_logits.shape[0]
        if target.ndim != 1 or target.shape[0] != batch:
            raise StillroomError(f"{name}: target must be ({batch},), got shape {tuple(target.shape)}")
        if teacher_logits is None:
            if self.needs_teacher:
                raise StillroomError(f"{name}: needs teacher logits (M, B, K), got None")
            return None
        if teacher_logits.ndim == 2:  # a single teacher given as (B, K)
            teacher_logits = teacher_logits.unsqueeze(0)
        if teacher_logits.ndim != 3 or teacher_logits.shape[1] != batch:
            raise StillroomError(
                f"{name}: teacher_logits must be (M, {batch}, K), got shape {tuple(teacher_logits.shape)}"
            )
        return teacher_logits.detach().to(student_logits.dtype)


LOSSES: Registry[type[DistillLoss]] = Registry("loss")


def build_loss(name: str, **params: Any) -> DistillLoss:
    """Build the loss registered as ``name``; an unknown parameter is an error naming it and the loss."""
    cls = LOSSES.get(name)
    sig = inspect.signature(cls.__init__)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    known = [p for p in sig.parameters if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [p for p in params if p not in known]
    if unknown and not accepts_any:
        hints = "".join(f"; {p!r}: {cls.param_hints[p]}" for p in unknown if p in cls.param_hints)
        raise StillroomError(
            f"loss {name!r}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(known) or '(none)'}{hints}"
        )
    return cls(**params)


def list_losses(pattern: str = "*") -> list[str]:
    return LOSSES.list(pattern)


# Registration happens on import of each loss module; they import LOSSES from here, so they come last.
from stillroom.distill.losses import ce, dkd, kd, luminet, target_dampened  # noqa: E402, F401
