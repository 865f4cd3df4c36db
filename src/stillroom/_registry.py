"""One tiny registry class for every kind of plug-in (models, losses, splits, OOD scores...).

Entries are registered with a decorator, found by name, and listed with an fnmatch filter; an unknown name raises
an error listing the known ones (timm ``_registry.py`` habit).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from stillroom._io import StillroomError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"{self.kind} registry: entry needs a name")
            if key in self._entries:
                raise ValueError(f"{self.kind} registry: {key!r} registered twice")
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise StillroomError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
