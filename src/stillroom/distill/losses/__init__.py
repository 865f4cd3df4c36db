"""Distillation losses: one registry, one small module per loss (REFERENCE 2; STYLE habits 1-4).

Every loss is an ``nn.Module`` registered in ``LOSSES`` and built by name with ``build_loss(name, **params)``.
The call surface is the same for all of them::

    loss(student_logits (B, K_s), teacher_logits (M, B, K) or None, target (B,) long, **ctx) -> dict[str, Tensor]

The returned dict holds named scalar terms (``loss_ce``, ``loss_kd``, ...), each already multiplied by its
weight; the trainer sums them for the backward pass and logs them one by one. ``ctx`` carries optional extras
(epoch, OOD mask, the student's pooled features for a loss that ``needs_features``...) that a loss may read and
must otherwise ignore.

Parameters are typed: each loss declares a frozen pydantic model (``DistillLoss.Params``, a ``LossParams``) with
the ranges of its parameters, its presets (named defaults that explicit parameters override) and the deprecated
names it still reads. ``resolve_loss_params`` gives the values a config stands for; ``check_loss_config``
validates a whole run config's loss section (and that teachers are given exactly when the loss needs them)
before anything trains. ``stillroom.config`` stays below this package: it holds the raw ``loss.params`` mapping.

Teacher logits are detached inside every loss: the teacher is frozen by construction, whether its logits come
from a cached store or from a live forward pass.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stillroom._io import StillroomError
from stillroom.distill.losses import (  # noqa: F401 (registers each)
    ce,
    dkd,
    kd,
    logit_mse,
    logitnorm,
    luminet,
    outlier_exposure,
    similarity,
    supcon,
    target_dampened,
)
from stillroom.distill.losses._base import DEFAULT_TEMPERATURE, LOSSES, DistillLoss, LossParams, register_loss

if TYPE_CHECKING:
    from stillroom.config import TrainConfig

__all__ = [
    "DEFAULT_TEMPERATURE",
    "LOSSES",
    "DistillLoss",
    "LossParams",
    "build_loss",
    "check_loss_config",
    "describe_loss",
    "list_losses",
    "register_loss",
    "resolve_loss_params",
]


def build_loss(name: str, **params: Any) -> DistillLoss:
    """Build the loss registered as ``name``; an unknown or invalid parameter is an error naming it and the loss."""
    return LOSSES.get(name)(**params)


def resolve_loss_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The full parameter values that ``params`` stands for, as plain JSON-able types: the preset applied, defaults
    filled, deprecated names read under their current ones. What a run's metadata should record."""
    return LOSSES.get(name).resolve_params(params).resolved()


def check_loss_config(cfg: TrainConfig, source: str = "<config>") -> dict[str, Any]:
    """Validate a run config's loss: name, parameters, and teachers given exactly when the loss needs them.

    Raises ``StillroomError`` prefixed with ``source`` (a file, a sweep cell) that names the loss and the bad
    parameter; returns the resolved parameters (``resolve_loss_params``). Call it before anything is written.
    """
    try:
        cls = LOSSES.get(cfg.loss.name)
        loss = cls(cls.resolve_params(cfg.loss.params))
    except StillroomError as err:
        raise StillroomError(f"{source}: {err}") from None
    if loss.needs_teacher and not cfg.teachers.count:
        raise StillroomError(f"{source}: loss {cfg.loss.name!r} needs teachers: set teachers.cached or teachers.online")
    if cfg.teachers.count and not loss.needs_teacher:
        raise StillroomError(
            f"{source}: loss {cfg.loss.name!r} ignores teachers; remove them or use a distillation loss"
        )
    return loss.params.resolved()


def list_losses(pattern: str = "*") -> list[str]:
    return LOSSES.list(pattern)


def describe_loss(name: str) -> dict[str, Any]:
    """What ``stillroom losses`` shows of a registered loss: ``summary`` (the first paragraph of its module
    docstring, which names the method and its source), ``needs_teacher`` (of its default parameters: a wrapper
    follows its base) and ``params`` (its default parameters, resolved)."""
    cls = LOSSES.get(name)
    doc = inspect.getdoc(sys.modules[cls.__module__]) or ""
    summary = " ".join(doc.split("\n\n", 1)[0].split())
    return {
        "name": name,
        "summary": summary,
        "needs_teacher": bool(cls().needs_teacher),
        "params": resolve_loss_params(name, {}),
    }
