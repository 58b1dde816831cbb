"""The solver registry: solvers are chosen by name."""

from __future__ import annotations

from typing import Any, TypeVar

from ..errors import unknown_name

_SOLVERS: dict[str, type] = {}

S = TypeVar("S", bound=type)


def register(cls: S) -> S:
    """Class decorator: make a :class:`~lben_ode.solvers.base.Solver` available by its ``name``."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered")
    if cls.name in _SOLVERS and _SOLVERS[cls.name] is not cls:
        raise ValueError(f"a solver named {cls.name!r} is already registered ({_SOLVERS[cls.name].__name__})")
    _SOLVERS[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered solvers."""
    return sorted(_SOLVERS)


def solver_class(name: str) -> type:
    """The solver class registered as ``name``; an unknown name lists the valid ones."""
    if name not in _SOLVERS:
        raise unknown_name("solver", name, available())
    return _SOLVERS[name]


def get_solver(name: str, **options: Any):
    """A solver instance by registry name, with validated options."""
    return solver_class(name)(**options)
