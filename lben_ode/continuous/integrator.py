"""How a continuous-time model is integrated: the torchdiffeq method, its options, the gradient method,
and the rule that a fixed step must meet for the model's rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigurationError, unknown_name
from ..solvers.ode_dynamics import ADAPTIVE_METHODS, FIXED_STEP_METHODS, METHODS
from ..solvers.options import Option, one_of, positive_float, positive_int, validate_options

#: How gradients reach the parameters: through torchdiffeq's operations, or by its adjoint method.
GRADIENTS: tuple[str, ...] = ("backprop", "adjoint")

#: Stability polynomials R(z) (coefficients of 1, z, z², …) of torchdiffeq's explicit fixed-step
#: Runge-Kutta methods: one step on dz/dt = λz multiplies z by R(hλ).
STABILITY_POLYNOMIALS: dict[str, tuple[float, ...]] = {
    "euler": (1.0, 1.0),
    "midpoint": (1.0, 1.0, 0.5),
    "heun2": (1.0, 1.0, 0.5),
    "heun3": (1.0, 1.0, 0.5, 1.0 / 6.0),
    "rk4": (1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0),
}

INTEGRATOR_OPTIONS: dict[str, Option] = {
    "rtol": Option(
        None, positive_float(allow_none=True), "a float > 0 or None",
        "relative error tolerance per step of an adaptive method (None: 1e-5)",
    ),
    "atol": Option(
        None, positive_float(allow_none=True), "a float > 0 or None",
        "absolute error tolerance per step of an adaptive method (None: 1e-6)",
    ),
    "step_size": Option(
        None, positive_float(allow_none=True), "a float > 0 or None",
        "largest step of a fixed-step method; every sample time is also a step boundary (None: one "
        "step per sample interval)",
    ),
    "first_step": Option(
        None, positive_float(allow_none=True), "a float > 0 or None", "first step of an adaptive method"
    ),
    "max_step": Option(
        None, positive_float(allow_none=True), "a float > 0 or None", "largest step of an adaptive method"
    ),
    "max_steps": Option(
        100_000, positive_int, "an int ≥ 1",
        "budget of attempted steps (accepted and rejected) of one forward simulation",
    ),
    "adjoint_rtol": Option(
        None, positive_float(allow_none=True), "a float > 0 or None",
        "rtol of the backward pass with gradient='adjoint' (None: rtol)",
    ),
    "adjoint_atol": Option(
        None, positive_float(allow_none=True), "a float > 0 or None",
        "atol of the backward pass with gradient='adjoint' (None: atol)",
    ),
    "step_check": Option(
        "warn", one_of("warn", "raise", "off"), "'warn', 'raise' or 'off'",
        "what a fixed step that breaks the step rule (see check_fixed_step) gives: a StepSizeWarning, "
        "a ConfigurationError, or nothing",
    ),
}

_ADAPTIVE_ONLY = ("rtol", "atol", "first_step", "max_step", "adjoint_rtol", "adjoint_atol")
DEFAULT_RTOL, DEFAULT_ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class IntegratorConfig:
    """A validated choice of torchdiffeq method, gradient method and options."""

    method: str = "dopri5"
    gradient: str = "backprop"
    options: dict[str, Any] = field(default_factory=lambda: validate_options("dopri5", INTEGRATOR_OPTIONS, {}))

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps from an error estimate."""
        return self.method in ADAPTIVE_METHODS

    @property
    def tolerances(self) -> tuple[float, float]:
        """(rtol, atol) of the forward pass."""
        rtol, atol = self.options["rtol"], self.options["atol"]
        return (DEFAULT_RTOL if rtol is None else rtol), (DEFAULT_ATOL if atol is None else atol)

    @property
    def adjoint_tolerances(self) -> tuple[float, float]:
        """(rtol, atol) of the adjoint backward pass."""
        rtol, atol = self.tolerances
        a_rtol, a_atol = self.options["adjoint_rtol"], self.options["adjoint_atol"]
        return (rtol if a_rtol is None else a_rtol), (atol if a_atol is None else a_atol)


def make_integrator_config(method: str, gradient: str, options: dict[str, Any]) -> IntegratorConfig:
    """Validate a method, gradient method and options into an :class:`IntegratorConfig`.

    Raises:
        UnknownNameError: an unknown method, gradient method or option name (valid ones listed).
        ConfigurationError: a bad option value, or an option that does not apply to the method
            (``step_size`` for an adaptive method; tolerances and ``first_step``/``max_step`` for a
            fixed-step one).
    """
    if method not in METHODS:
        raise unknown_name("integration method", method, METHODS)
    if gradient not in GRADIENTS:
        raise unknown_name("gradient method", gradient, GRADIENTS)
    values = validate_options(method, INTEGRATOR_OPTIONS, options)
    if method in ADAPTIVE_METHODS and values["step_size"] is not None:
        raise ConfigurationError(
            f"step_size is for the fixed-step methods ({', '.join(FIXED_STEP_METHODS)}); the adaptive method "
            f"{method!r} chooses its own steps (bound them with max_step)"
        )
    if method in FIXED_STEP_METHODS:
        given = [name for name in _ADAPTIVE_ONLY if values[name] is not None]
        if given:
            raise ConfigurationError(
                f"option(s) {', '.join(given)} are for adaptive methods ({', '.join(ADAPTIVE_METHODS)}); the "
                f"fixed-step method {method!r} takes step_size"
            )
    return IntegratorConfig(method, gradient, values)


def sample_aligned_grid(step: float | None) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A torchdiffeq ``grid_constructor``: every given time is a grid point, each interval between
    two given times is cut into equal steps of at most ``step`` (None: one step per interval).

    Steps never straddle a sample time, where a zero-order-hold input jumps and a linear one has a
    kink. It works in either direction (the adjoint pass integrates backwards interval by interval).
    """

    def grid(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if step is None:
            return t
        gaps = (t[1:] - t[:-1]).abs()
        pieces = torch.ceil(gaps / step - 1e-9).clamp(min=1).long().tolist()
        points = [t[:1]]
        for k, count in enumerate(pieces):
            fractions = torch.arange(1, count + 1, dtype=t.dtype, device=t.device) / count
            segment = t[k] + (t[k + 1] - t[k]) * fractions
            segment[-1] = t[k + 1]
            points.append(segment)
        return torch.cat(points)

    return grid


def largest_fixed_step(times: torch.Tensor, step: float | None) -> float:
    """The longest step a fixed-step method takes on the grid of :func:`sample_aligned_grid`."""
    if times.numel() < 2:
        return 0.0
    gaps = times[1:] - times[:-1]
    if step is None:
        return float(gaps.max())
    pieces = torch.ceil(gaps / step - 1e-9).clamp(min=1)
    return float((gaps / pieces).max())


def stable_for(method: str, step: float, radius: float, rate: float, points: int = 512) -> bool:
    """Whether ``|R(hλ)| ≤ 1`` for every λ with ``|λ| ≤ radius`` and ``Re λ ≤ −rate``.

    R is the method's stability polynomial. ``|R|`` is subharmonic, so its largest value on that
    compact set is on its boundary, sampled here (the set is symmetric about the real axis): the arc
    ``|λ| = radius`` left of ``Re λ = −rate`` and the segment of that line inside the circle.
    """
    coefficients = STABILITY_POLYNOMIALS[method]
    if rate >= radius:
        boundary = np.array([-radius + 0j])
    else:
        start = math.acos(-rate / radius)
        arc = radius * np.exp(1j * np.linspace(start, math.pi, points))
        height = math.sqrt(radius**2 - rate**2)
        segment = -rate + 1j * np.linspace(0.0, height, points)
        boundary = np.concatenate([arc, segment])
    z = step * boundary
    value = np.polynomial.polynomial.polyval(z, coefficients)
    return bool(np.abs(value).max() <= 1.0 + 1e-14)


def largest_stable_step(method: str, radius: float, rate: float) -> float:
    """The largest h with :func:`stable_for` (bisection; 0 when no h > 0 qualifies)."""
    lo, hi = 0.0, 8.0 / radius  # no explicit RK method of order ≤ 4 is stable at |hλ| = 8
    if not stable_for(method, 1e-9 * hi, radius, rate):
        return 0.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable_for(method, mid, radius, rate) else (lo, mid)
    return lo


def fixed_step_problem(method: str, step: float, W: torch.Tensor, rate: float) -> str | None:
    """Check a fixed step against the model; returns what is wrong, or None when the step is fine.

    **The rule.** Every Jacobian of the vector field is ``J = −I + DW`` with D diagonal in [0, 1]
    (the slopes of σ), and Condition 3 gives ``JᵀP + PJ ≼ −2αP``, so every eigenvalue λ of every
    such J has ``Re λ ≤ −α``; and ``|λ| ≤ ‖J‖₂ ≤ ρ = 1 + ‖W‖₂``. The step h passes when the method
    is stable for every λ in that set: ``|R(hλ)| ≤ 1`` for R the method's stability polynomial (see
    :func:`stable_for`). Then every frozen linearisation is stepped stably; it is a check of the
    linearisations, not a proof that the discrete map contracts. Methods without a stability
    polynomial here (the Adams methods) are not checked.
    """
    if method not in STABILITY_POLYNOMIALS or step <= 0:
        return None
    radius = 1.0 + float(torch.linalg.matrix_norm(W.detach().double(), ord=2))
    if stable_for(method, step, radius, rate):
        return None
    limit = largest_stable_step(method, radius, rate)
    advice = f"a step of at most {limit:.3g}" if limit > 0 else "a method stable near the imaginary axis (rk4, heun3)"
    return (
        f"fixed step {step:.3g} of {method!r} is too coarse for this model: with ‖W‖₂ = {radius - 1:.3g} and "
        f"contraction rate {rate:g}, the Jacobians −I + DW may have eigenvalues where {method!r} is unstable; "
        f"use {advice}, an adaptive method, or step_check='off' to integrate anyway"
    )
