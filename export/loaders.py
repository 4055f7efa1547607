"""Lazy, composable loaders in the manner of Polygraphy: ``EngineFromOnnx(OnnxFromTorch(m))``.

A loader is a callable that produces its object when called, not when built, so a
chain of loaders describes work that runs only when the last one is called. Each
loader accepts, where it takes an input, either the object itself or another loader
(or a zero-argument function) that produces it.
"""

from __future__ import annotations

import abc
import functools
import types
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Loader", "resolve"]

T = TypeVar("T")


class Loader(abc.ABC, Generic[T]):
    """Produces one object on each call; ``call_impl`` does the work."""

    def __call__(self) -> T:
        return self.call_impl()

    @abc.abstractmethod
    def call_impl(self) -> T:
        """Build and return the object."""


def resolve(value: T | Callable[[], T]) -> T:
    """``value`` itself, or what it produces when it is a loader or a plain function.

    Other callables (a torch module, say) are values, never called here.
    """
    if isinstance(value, Loader | types.FunctionType | types.MethodType | functools.partial):
        return value()
    # any other callable is a value: mypy cannot tell T from Callable[[], T] here
    return value  # type: ignore[return-value]
