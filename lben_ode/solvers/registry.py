"""The solver registry: solvers are chosen by name."""

from __future__ import annotations

from typing import Any, TypeVar

from ..errors import unknown_name
from .base import Solver

_SOLVERS: dict[str, type[Solver]] = {}

S = TypeVar("S", bound=type[Solver])


def register(cls: S) -> S:
    """Class decorator: make a :class:`~lben_ode.solvers.base.Solver` subclass available by its ``name``.

    Raises:
        TypeError: ``cls`` is not a Solver subclass or has no ``name``.
        ValueError: another class is registered under the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Solver)):
        raise TypeError(f"only Solver subclasses can be registered, got {cls!r}")
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered")
    if cls.name in _SOLVERS and _SOLVERS[cls.name] is not cls:
        raise ValueError(f"a solver named {cls.name!r} is already registered ({_SOLVERS[cls.name].__name__})")
    _SOLVERS[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered solvers."""
    return sorted(_SOLVERS)


def solver_class(name: str) -> type[Solver]:
    """The solver class registered as ``name``; an unknown name lists the valid ones."""
    if name not in _SOLVERS:
        raise unknown_name("solver", name, available())
    return _SOLVERS[name]


def get_solver(name: str, **options: Any) -> Solver:
    """A solver instance by registry name, with validated options."""
    return solver_class(name)(**options)
