"""A tiny registry per extension point: a dict, a decorator, a fnmatch listing, did-you-mean lookups."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from edgecnn.errors import EdgeCNNError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (models, backends, ...)."""

    def __init__(self, kind: str, list_hint: str) -> None:
        self.kind = kind
        self.list_hint = list_hint
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> T:
        """Remove and return an entry (a plugin or a test that registered one cleans up after itself)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise EdgeCNNError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)} (see `{self.list_hint}`)"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
