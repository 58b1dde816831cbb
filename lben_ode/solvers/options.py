"""Declared, validated solver options: one place that says what each option is and accepts."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, unknown_name


@dataclass(frozen=True)
class Option:
    """One solver option: its default, a check of its value, and what it means."""

    default: Any
    check: Callable[[Any], bool]
    expects: str
    doc: str


def positive_float(allow_none: bool = False) -> Callable[[Any], bool]:
    """Check: a finite float > 0 (or None when allowed)."""

    def check(v: Any) -> bool:
        if v is None:
            return allow_none
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    return check


def positive_int(v: Any) -> bool:
    """Check: an int ≥ 1."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def one_of(*choices: str) -> Callable[[Any], bool]:
    """Check: one of the given strings."""
    return lambda v: v in choices


#: Options every solver accepts.
COMMON_OPTIONS: dict[str, Option] = {
    "tol": Option(
        1e-5,
        positive_float(),
        "a float > 0",
        "per-sample relative fixed-point residual ‖z − σ(Wz+b)‖/‖z‖ at which a sample has converged",
    ),
    "max_iter": Option(300, positive_int, "an int ≥ 1", "iteration budget of one solve"),
    "check_every": Option(
        10,
        positive_int,
        "an int ≥ 1",
        "most iterations between convergence checks (each is a host sync); the first two checks "
        "come ⌈check_every/2⌉ apart, later ones at the predicted crossing of tol",
    ),
    "on_nonconvergence": Option(
        "warn",
        one_of("warn", "raise"),
        "'warn' or 'raise'",
        "what to do when a sample misses the tolerance: a ConvergenceWarning or a ConvergenceError",
    ),
}


def validate_options(
    solver: str, declared: dict[str, Option], given: dict[str, Any]
) -> dict[str, Any]:
    """Merge ``given`` over the defaults of ``declared``, refusing unknown names and bad values.

    Raises:
        UnknownNameError: for an option the solver does not have (the message lists valid ones).
        ConfigurationError: for a value the option does not accept.
    """
    for name in given:
        if name not in declared:
            raise unknown_name(f"option of solver {solver!r}:", name, list(declared))
    values = {name: opt.default for name, opt in declared.items()}
    for name, value in given.items():
        if not declared[name].check(value):
            raise ConfigurationError(
                f"solver {solver!r} option {name!r} must be {declared[name].expects}, got {value!r}"
            )
        values[name] = value
    return values
