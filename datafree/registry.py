"""A small name -> factory registry: register at the definition site, create through one factory."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import UserInputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lowercase names to factories.

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("tiny")
        ... def tiny(num_classes: int) -> object: ...
        >>> "tiny" in MODELS
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``fn`` under ``name``; a duplicate name is an error."""
        key = name.lower()

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} is already registered")
            self._items[key] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a clear error lists the known names otherwise."""
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UserInputError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the object registered as ``name``."""
        return self.get(name)(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(k for k in self._items if fnmatch.fnmatch(k, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
