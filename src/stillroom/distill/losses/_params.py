"""Typed loss parameters: the pydantic base every loss's parameter model derives from, and its error messages.

A loss declares its parameters once, as a frozen model with ``extra="forbid"`` whose fields carry their ranges
(STYLE 5, 9), so a bad value is caught when a config is read, not when the loss is built hours into a sweep.

Presets: a loss may declare ``presets`` (name -> default values) and a ``preset`` field; the chosen preset's values
fill the parameters the caller left out, and explicit parameters override them. Aliases: deprecated parameter names
(``aliases``, old name -> current name) are still read, so finished runs' configs load, and never written:
the resolved parameters (``LossParams.resolved``) use the current names only.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar

import annotated_types as at
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic.fields import FieldInfo

__all__ = ["LossParams", "Fraction", "NonNegInt", "NonNegative", "Positive", "Smoothing", "describe_errors"]

# Numbers are strict (an int or a float; not a bool, not a string) and finite.
_Number = Annotated[float, Strict(), AllowInfNan(False)]
Fraction = Annotated[_Number, Field(ge=0, le=1)]
NonNegative = Annotated[_Number, Field(ge=0)]
Positive = Annotated[_Number, Field(gt=0)]
Smoothing = Annotated[_Number, Field(ge=0, lt=1)]  # label smoothing epsilon, as in F.cross_entropy
NonNegInt = Annotated[int, Strict(), Field(ge=0)]  # a width or a count: 128, not 128.0 nor True


class LossParams(BaseModel):
    """Base of the per-loss parameter models (module docstring); a loss with presets adds a ``preset`` field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: preset name -> default values that explicitly given parameters override
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: deprecated parameter name -> current name; read (old run configs), never written
    aliases: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _aliases_then_preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for old, new in cls.aliases.items():
            if old in data:
                if new in data:
                    raise ValueError(f"{old} is the deprecated name of {new}: give {new} only")
                data[new] = data.pop(old)
        if "preset" in cls.model_fields:
            preset = data.setdefault("preset", cls.model_fields["preset"].default)
            if preset not in cls.presets:
                raise ValueError(f"preset must be one of {tuple(cls.presets)}, got {preset!r}")
            data = {**cls.presets[preset], **data}
        return data

    def resolved(self) -> dict[str, Any]:
        """Every parameter under its current name, presets applied and defaults filled, as JSON-able values."""
        d = self.model_dump(mode="json")
        return {"preset": d.pop("preset"), **d} if "preset" in d else d


def _parts(tp: Any) -> Iterator[Any]:
    """The plain types and constraint objects inside an annotation (through Annotated, Field() and unions)."""
    if typing.get_origin(tp) is Annotated:
        yield from _parts(tp.__origin__)
        for m in tp.__metadata__:
            yield from m.metadata if isinstance(m, FieldInfo) else (m,)
    elif typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            yield from _parts(arg)
    else:
        yield tp


def _expected(field: FieldInfo) -> str:
    """What a field accepts, in words: "one of (...)", "in [0, 1]", "a finite number > 0", "an integer >= 1"."""
    parts = [*_parts(field.annotation), *field.metadata]
    for p in parts:
        if typing.get_origin(p) is typing.Literal:
            return f"one of {typing.get_args(p)}"
    bound = {type(m).__name__.lower(): m for m in parts if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt))}
    lo = f"[{bound['ge'].ge:g}" if "ge" in bound else f"({bound['gt'].gt:g}" if "gt" in bound else ""
    hi = f"{bound['le'].le:g}]" if "le" in bound else f"{bound['lt'].lt:g})" if "lt" in bound else ""
    if lo and hi:
        return f"in {lo}, {hi}"
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    kind = "an integer" if int in parts else "a finite number"
    return " ".join([kind, *(f"{ops[k]} {getattr(m, k):g}" for k, m in bound.items())])


def describe_errors(err: ValidationError, params: type[LossParams], hints: Mapping[str, str]) -> str:
    """One line naming each bad parameter, what it accepts and what came; unknown names with their hints."""
    unknown = [str(e["loc"][0]) for e in err.errors() if e["type"] == "extra_forbidden"]
    parts = []
    if unknown:
        known = list(params.model_fields)  # deprecated aliases are read, not advertised
        parts.append(
            f"unknown parameter(s) {', '.join(map(repr, unknown))}; known: {', '.join(known) or '(none)'}"
            + "".join(f"; {p!r}: {hints[p]}" for p in unknown if p in hints)
        )
    for e in err.errors():
        name = str(e["loc"][0]) if e["loc"] else ""
        if e["type"] == "extra_forbidden":
            continue
        if e["type"] == "value_error":  # our validators write whole phrases that name the parameter
            parts.append(str(e["ctx"]["error"]))
        elif name in params.model_fields:
            parts.append(f"{name} must be {_expected(params.model_fields[name])}, got {e['input']!r}")
        else:
            parts.append(f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}")
    return "; ".join(dict.fromkeys(parts))
