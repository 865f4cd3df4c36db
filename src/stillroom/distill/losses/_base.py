"""The base of every loss: ``DistillLoss`` (input checks, typed parameters), the ``LOSSES`` registry and
``register_loss``. The loss modules import this, the package ``__init__`` imports them: no import cycle."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError, model_validator
from torch import Tensor, nn

from stillroom._io import StillroomError
from stillroom._registry import Registry
from stillroom.data.index import IGNORE_INDEX
from stillroom.distill.losses._params import LossParams, describe_errors

__all__ = [
    "DEFAULT_TEMPERATURE",
    "IGNORE_INDEX",
    "LOSSES",
    "DistillLoss",
    "FeatureTermLoss",
    "LossParams",
    "WrapperLoss",
    "WrapperParams",
    "register_loss",
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
    #: whether the loss learns from rows without a class (a KD transfer set, ``data.transfer``): their target is
    #: ``IGNORE_INDEX``, which its cross-entropy skips, and its teacher term never reads the target
    learns_unlabelled: ClassVar[bool] = False
    #: constructor params that reduce the loss to plain cross-entropy (conformance tests); None: no such setting
    ce_equivalent_params: ClassVar[dict[str, Any] | None] = None
    #: whether ``forward`` needs ``features=`` (B, D), the student's pooled penultimate features (``supcon``): the
    #: trainer then taps them from the network (``models.features``) and passes them with the logits
    needs_features: ClassVar[bool] = False
    #: whether a wrapper (``WrapperParams``) may take it as its ``base``: a K-class loss that reads no sink rows
    wrappable: ClassVar[bool] = True
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


class WrapperParams(LossParams):
    """The parameters of a loss that wraps another (``outlier_exposure``, ``logitnorm``): ``base``, a registered
    K-class loss, and ``base_params``, its parameters, stored resolved (its preset applied and its defaults
    filled, so a run records every value it trained with)."""

    base: str = "luminet"
    base_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _resolve_base(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        base, params = data.get("base", "luminet"), data.get("base_params", {})
        if not isinstance(base, str) or base not in LOSSES or not LOSSES.get(base).wrappable:
            known = ", ".join(n for n in LOSSES.list() if LOSSES.get(n).wrappable)
            raise ValueError(f"base must be a K-class loss ({known}), got {base!r}")
        if not isinstance(params, Mapping):
            raise ValueError(f"base_params must be a mapping of {base!r}'s parameters, got {params!r}")
        try:
            data["base_params"] = LOSSES.get(base).resolve_params(params).resolved()
        except StillroomError as err:
            raise ValueError(f"base_params: {err}") from None
        return data


class WrapperLoss(DistillLoss):
    """A loss that hands the batch, changed, to a ``base`` loss (``WrapperParams``): it builds the base and takes
    its need of teachers as its own (an instance attribute: what the trainer and the config checks read)."""

    Params: ClassVar[type[WrapperParams]] = WrapperParams
    params: WrapperParams
    needs_teacher: ClassVar[bool] = True  # the default base's; the instance follows its base
    wrappable: ClassVar[bool] = False  # one wrapper around another: not a combination anything here has measured

    def __init__(self, params: WrapperParams | None = None, /, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.base = LOSSES.get(self.params.base)(**self.params.base_params)  # checked by the params
        self.needs_teacher = self.base.needs_teacher


class FeatureTermLoss(WrapperLoss):
    """A wrapper that returns its base's terms unchanged and adds one term (``term_name``) computed by
    ``feature_term`` on the student's pooled penultimate features, which the trainer passes as ``features=`` to a
    loss that ``needs_features`` (``supcon``, ``similarity``). ``term_needs_teacher``: the term reads the teachers'
    logits, so the loss needs them whatever its base does."""

    needs_features: ClassVar[bool] = True
    term_name: ClassVar[str] = ""
    term_needs_teacher: ClassVar[bool] = False

    def __init__(self, params: WrapperParams | None = None, /, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.needs_teacher = self.needs_teacher or self.term_needs_teacher

    def bind_features(self, dim: int, seed: int) -> None:
        """Called by the trainer once the student exists, before its optimizer: ``dim`` is the width of the pooled
        features (``models.features.feature_dim``). A term with weights of its own (``supcon``'s projection head)
        builds them here, from ``seed``; the trainer then trains them with the student and keeps them in its
        resumable state, and the served model never holds them. Default: nothing to build."""

    def feature_term(self, features: Tensor, teacher_logits: Tensor | None, target: Tensor) -> Tensor:
        """The added term, weighted: ``features`` (B, D), ``teacher_logits`` (M, B, K) detached or None."""
        raise NotImplementedError

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None,
        target: Tensor,
        features: Tensor | None = None,
        **ctx: Any,
    ) -> dict[str, Tensor]:
        t = self._check_inputs(student_logits, teacher_logits, target)
        if features is None or features.ndim != 2 or features.shape[0] != student_logits.shape[0]:
            got, b = None if features is None else tuple(features.shape), student_logits.shape[0]
            raise StillroomError(f"loss {self.loss_name!r}: needs the student's pooled features ({b}, D), got {got}")
        terms = self.base(student_logits, teacher_logits, target, **ctx)
        return {**terms, self.term_name: self.feature_term(features, t, target)}
