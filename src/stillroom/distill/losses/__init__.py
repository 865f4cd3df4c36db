"""Distillation losses: one registry, one small module per loss (REFERENCE 2; STYLE habits 1-4).

Every loss is an ``nn.Module`` registered in ``LOSSES`` and built by name with ``build_loss(name, **params)``.
The call surface is the same for all of them::

    loss(student_logits (B, K_s), teacher_logits (M, B, K) or None, target (B,) long, **ctx) -> dict[str, Tensor]

The returned dict holds named scalar terms (``loss_ce``, ``loss_kd``, ...), each already multiplied by its
weight; the trainer sums them for the backward pass and logs them one by one. ``ctx`` carries optional extras
(epoch, OOD mask...) that a loss may read and must otherwise ignore.

Parameters are typed: each loss declares a frozen pydantic model (``DistillLoss.Params``, a ``LossParams``) with
the ranges of its parameters, its presets (named defaults that explicit parameters override) and the deprecated
names it still reads. ``resolve_loss_params`` gives the values a config stands for; ``check_loss_config``
validates a whole run config's loss section (and that teachers are given exactly when the loss needs them)
before anything trains. ``stillroom.config`` stays below this package: it holds the raw ``loss.params`` mapping.

Teacher logits are detached inside every loss: the teacher is frozen by construction, whether its logits come
from a cached store or from a live forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import ValidationError
from torch import Tensor, nn

from stillroom._io import StillroomError
from stillroom._registry import Registry
from stillroom.distill.losses._params import LossParams, describe_errors

if TYPE_CHECKING:
    from stillroom.config import TrainConfig

__all__ = [
    "DEFAULT_TEMPERATURE",
    "LOSSES",
    "DistillLoss",
    "LossParams",
    "build_loss",
    "check_loss_config",
    "list_losses",
    "register_loss",
    "resolve_loss_params",
]

#: softmax temperature of every loss that has one, unless a preset or the config says otherwise: T = 4, the CIFAR
#: setting of mdistiller, DKD's and LumiNet's reference configs and seed 000 §2.4 (the presets that cite them use it)
DEFAULT_TEMPERATURE = 4.0


class DistillLoss(nn.Module):
    """Base class: typed parameters, shared input checks, and the class attributes the trainer and tests read.

    A loss is built from keyword parameters (validated by its ``Params`` model; an invalid or unknown one is a
    ``StillroomError`` naming the loss and the parameter) or from a ready ``Params`` instance; ``self.params``
    holds the resolved, frozen values.
    """

    #: the loss's parameter model; the subclass declares its own
    Params: ClassVar[type[LossParams]] = LossParams
    #: the registry name, set by ``register_loss``
    loss_name: ClassVar[str] = ""
    #: whether ``forward`` needs teacher logits (a CE baseline does not, so no teacher is loaded for it)
    needs_teacher: ClassVar[bool] = False
    #: constructor params that reduce the loss to plain cross-entropy (conformance tests); None: no such setting
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = None
    #: misspelt or foreign parameter names -> hint shown with the "unknown parameter" error
    param_hints: ClassVar[dict[str, str]] = {}

    def __init__(self, params: LossParams | None = None, /, **kwargs: Any) -> None:
        super().__init__()
        if params is None:
            params = self.resolve_params(kwargs)
        elif kwargs or type(params) is not self.Params:
            raise StillroomError(
                f"loss {self.loss_name!r}: pass one {self.Params.__name__} or keyword parameters, got "
                f"{type(params).__name__}" + (f" and {', '.join(kwargs)}" if kwargs else "")
            )
        self.params = params

    @classmethod
    def resolve_params(cls, params: Mapping[str, Any]) -> LossParams:
        """Validate raw parameters (a config's ``loss.params``): aliases read, preset applied, defaults filled."""
        for old, new in cls.Params.aliases.items():
            if old in params:
                warnings.warn(
                    f"loss {cls.loss_name!r}: parameter {old!r} is deprecated and read as {new!r}; rename it",
                    FutureWarning,
                    stacklevel=3,
                )
        try:
            return cls.Params.model_validate(dict(params))
        except ValidationError as err:
            raise StillroomError(
                f"loss {cls.loss_name!r}: {describe_errors(err, cls.Params, cls.param_hints)}"
            ) from None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.resolved().items())

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
L = TypeVar("L", bound=type[DistillLoss])


def register_loss(name: str) -> Callable[[L], L]:
    """Class decorator: register a loss in ``LOSSES`` under ``name`` (which its error messages then use)."""

    def deco(cls: L) -> L:
        cls.loss_name = name
        return LOSSES.register(name)(cls)

    return deco


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


# Registration happens on import of each loss module; they import LOSSES from here, so they come last.
from stillroom.distill.losses import ce, dkd, kd, luminet, target_dampened  # noqa: E402, F401
