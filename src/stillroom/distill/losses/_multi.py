"""Helpers shared by the logit losses: multi-teacher targets (seed 001 §4.1.4, §9.4; REFERENCE 2), warm-up.

A loss that compares a student distribution with teacher distributions asks ``teacher_targets`` for the targets
and the weights to average its per-target terms with, so every loss handles the three modes the same way:

- ``fused``:  one target, log(sum_m w_m softmax(t_m / T)), the probability-averaged ensemble;
- ``split``:  M targets log softmax(t_m / T), each kept, with weights w_m (the loss averages its terms);
- ``logits``: one target, log softmax(sum_m w_m t_m / T), logit-space fusion (seed 001 §9.4).

w_m is uniform unless ``teacher_weights`` is given (non-negative, summing to 1). For a single teacher, or identical
teachers, the three modes give the same loss. Losses that transform logits first (LumiNet) pass the transformed
logits as ``t``. Their parameter models derive from ``MultiTeacherParams`` (``multi_teacher``, ``teacher_weights``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import Tensor

from stillroom._io import StillroomError
from stillroom.distill.losses._params import LossParams

__all__ = [
    "MULTI_TEACHER_MODES",
    "MultiTeacherParams",
    "check_classes",
    "teacher_targets",
    "teacher_weights",
    "warmup_factor",
]

MultiTeacherMode = Literal["fused", "split", "logits"]
MULTI_TEACHER_MODES: tuple[str, ...] = get_args(MultiTeacherMode)


class MultiTeacherParams(LossParams):
    """Parameters shared by the losses that handle several teachers (module docstring)."""

    multi_teacher: MultiTeacherMode = "fused"
    #: None: uniform over however many teachers come; else one non-negative weight per teacher, summing to 1
    teacher_weights: list[float] | None = None

    @field_validator("teacher_weights", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> list[float] | None:
        if v is None:
            return None
        ok = isinstance(v, (list, tuple)) and len(v) > 0
        ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < math.inf for x in v)
        if not ok or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"teacher_weights must be non-negative and sum to 1, got {v!r}")
        return [float(x) for x in v]

    def resolved(self) -> dict[str, Any]:
        d = super().resolved()
        shared = {k: d.pop(k) for k in ("multi_teacher", "teacher_weights")}
        return {**d, **shared}  # the loss's own parameters first


def check_classes(student_logits: Tensor, t: Tensor, loss: str) -> None:
    """Student and teachers must score the same K classes (an open-set student has its own loss)."""
    k_s, k = student_logits.shape[1], t.shape[2]
    if k_s != k:
        sink = " (an OOD sink column? open-set KD is a separate loss)" if k_s == k + 1 else ""
        raise StillroomError(f"loss {loss!r}: student has {k_s} outputs, teachers {k}{sink}")


def teacher_weights(t: Tensor, weights: list[float] | None, loss: str) -> Tensor:
    """(M,) weights of the M teachers in ``t`` (M, B, K): uniform when ``weights`` is None, else one per teacher."""
    m = t.shape[0]
    if weights is None:
        return torch.full((m,), 1.0 / m, dtype=t.dtype, device=t.device)
    if len(weights) != m:
        raise StillroomError(f"loss {loss!r}: {len(weights)} teacher_weights for {m} teachers")
    return torch.tensor(weights, dtype=t.dtype, device=t.device)


def teacher_targets(
    t: Tensor, temperature: float, mode: str, weights: list[float] | None, loss: str
) -> tuple[Tensor, Tensor]:
    """Targets for teacher logits ``t`` (M, B, K) at ``temperature``.

    Returns ``(log_targets (M', B, K), w (M',))``: M' = M with the teacher weights for ``split``, M' = 1 with
    w = [1] otherwise. The loss computes its batch-mean terms per target and returns ``(w * terms).sum()``.
    """
    w = teacher_weights(t, weights, loss)
    if mode == "split":
        return F.log_softmax(t / temperature, dim=2), w
    one = torch.ones(1, dtype=t.dtype, device=t.device)
    if mode == "fused":
        # log of the weighted mean probability, in log space so a confident teacher's zeros never reach log(0);
        # a zero weight gives log 0 = -inf inside logsumexp, which drops that teacher exactly
        log_p = F.log_softmax(t / temperature, dim=2)  # (M, B, K)
        return torch.logsumexp(log_p + w.log()[:, None, None], dim=0, keepdim=True), one  # (1, B, K)
    if mode == "logits":
        return F.log_softmax((w[:, None, None] * t).sum(0, keepdim=True) / temperature, dim=2), one  # (1, B, K)
    raise StillroomError(f"loss {loss!r}: multi_teacher must be one of {MULTI_TEACHER_MODES}, got {mode!r}")


def warmup_factor(epoch: Any, warmup_epochs: float, loss: str) -> float:
    """Linear warm-up min((epoch + 1) / warmup_epochs, 1) for the trainer's 0-based ``epoch`` index.

    Equals mdistiller's min(epoch / warmup, 1) with its 1-based epoch: 1/20 in the first epoch of a 20-epoch
    warm-up, full weight from the 20th on, never a zero factor (which would make the first epoch plain CE).
    1.0 when there is no warm-up or no epoch in ctx (a validation loss, a unit test).
    """
    if epoch is None or warmup_epochs == 0:
        return 1.0
    try:
        e = float(epoch)
    except (TypeError, ValueError):
        raise StillroomError(f"loss {loss!r}: epoch must be a 0-based epoch index, got {epoch!r}") from None
    if not e >= 0 or not math.isfinite(e):
        raise StillroomError(f"loss {loss!r}: epoch must be a 0-based epoch index >= 0, got {epoch!r}")
    return min((e + 1.0) / warmup_epochs, 1.0)
