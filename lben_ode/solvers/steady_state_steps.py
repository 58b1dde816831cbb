"""Fixed integration steps chosen for reaching a steady state fast, from the model's numerical range.

The ODE ``dz/dt = −z + σ(W z + b)`` linearised at any state is ``de/dt = −(I − D W) e`` with D the
activation's slopes. Its eigenvalues are −λ with λ in the spectrum of ``I − D W``; for a
piecewise-linear σ (slopes 0 or 1) that spectrum is 1 (inactive units) and the spectrum of a principal
submatrix of ``I − W``, whose numerical range lies inside the numerical range of
``M = Λ^{½}(I − W)Λ^{-½}`` (a compression's numerical range is inside the whole one's), which lies in
the box ``Re λ ∈ [μ, L_s]``, ``|Im λ| ≤ K`` (μ, L_s the extreme eigenvalues of ``(M + Mᵀ)/2``, K the
norm of ``(M − Mᵀ)/2``). A Runge-Kutta method of stability polynomial P maps a mode −λ by
``P(−hλ)`` per step, so over the box the error decays at least by ``max |P(−hλ)|`` per step, and
``−log max|P| / stages`` per right-hand-side evaluation. :func:`steady_state_step` picks the method
and step h that make that decay per evaluation largest.

This is a prediction of the asymptotic rate (eigenvalues, not norms: a non-normal linearisation may
grow for a while before it decays), so the solver still measures the residual and halves h when
it stalls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: The ``method`` value of the ODE solver that picks its method and step with :func:`steady_state_step`.
AUTO = "auto"

#: Stability polynomials' coefficients (P(z) = Σ cₖ zᵏ) and stages of the fixed-step methods considered.
STABILITY_POLYNOMIALS: dict[str, tuple[tuple[float, ...], int]] = {
    "euler": ((1.0, 1.0), 1),
    "midpoint": ((1.0, 1.0, 0.5), 2),
    # Every 3-stage explicit method of order 3 has this polynomial; heun2 is midpoint's.
    "heun3": ((1.0, 1.0, 0.5, 1.0 / 6.0), 3),
    "rk4": ((1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0), 4),
}

#: Candidate steps: a log grid from 10⁻³ to 4 (beyond every method's stability interval on −ℝ).
_STEP_GRID = torch.logspace(-3, 0.6, 121, dtype=torch.float64)
#: Points per side of the box where |P| is evaluated (|P| is largest on the boundary).
_SAMPLES = 24


@dataclass(frozen=True)
class SteadyStateStep:
    """A fixed-step method and step for reaching steady state, and its predicted decay.

    Attributes:
        method: torchdiffeq method name (``"euler"``, ``"midpoint"``, ``"heun3"`` or ``"rk4"``).
        step_size: h (ODE time units).
        factor: predicted ``max |P(−hλ)|`` over the box, per step (< 1).
        decay_per_evaluation: ``−log(factor) / stages``.
    """

    method: str
    step_size: float
    factor: float
    decay_per_evaluation: float


def _box_boundary(mu: float, l_sym: float, skew: float) -> torch.Tensor:
    """Points on the upper half of the box's boundary (P has real coefficients: |P| is symmetric
    in Im λ), as a complex128 tensor."""
    xs = torch.linspace(mu, l_sym, _SAMPLES + 1, dtype=torch.float64)
    ys = torch.linspace(0.0, skew, _SAMPLES + 1, dtype=torch.float64)
    top = torch.complex(xs, torch.full_like(xs, skew))
    left = torch.complex(torch.full_like(ys, mu), ys)
    right = torch.complex(torch.full_like(ys, l_sym), ys)
    return torch.cat([top, left, right])


def steady_state_step(mu: float, l_sym: float, skew: float) -> SteadyStateStep | None:
    """The method and step with the fastest predicted decay per evaluation over the box
    ``[μ, L_s] × [−K, K]`` (see the module docstring), or None when no step decays (μ ≤ 0, or
    constants that are not finite). Runs on the host in float64 (well under a millisecond).

    Args:
        mu: smallest eigenvalue of the symmetric part of M (> 0 for a well-posed model).
        l_sym: largest eigenvalue of the symmetric part.
        skew: spectral norm of the skew-symmetric part.
    """
    if not (math.isfinite(mu) and math.isfinite(l_sym) and math.isfinite(skew) and 0 < mu <= l_sym):
        return None
    points = _box_boundary(mu, l_sym, max(skew, 0.0))
    z = -_STEP_GRID[:, None] * points[None, :]  # (steps, points)
    best: SteadyStateStep | None = None
    for method, (coefficients, stages) in STABILITY_POLYNOMIALS.items():
        value = torch.zeros_like(z)
        for c in reversed(coefficients):
            value = value * z + c
        factor = value.abs().amax(dim=1)  # worst point of the box, per step size
        decay = -factor.clamp_min(1e-300).log() / stages
        k = int(decay.argmax())
        if factor[k] < 1 and (best is None or float(decay[k]) > best.decay_per_evaluation):
            best = SteadyStateStep(method, float(_STEP_GRID[k]), float(factor[k]), float(decay[k]))
    return best


def numerical_range_box(operator: object) -> tuple[float, float, float] | None:
    """(μ, L_s, K) of the operator (see the module docstring): its ``numerical_range_box()``, or
    from ``monotonicity()`` (μ, L) the looser box ``[μ, L] × [−√(L² − μ²), √(L² − μ²)]`` (the
    numerical range lies in ``Re λ ≥ μ``, ``|λ| ≤ L``), or None for an operator with neither."""
    box = getattr(operator, "numerical_range_box", None)
    if box is not None:
        return box()
    monotonicity = getattr(operator, "monotonicity", None)
    if monotonicity is None:
        return None
    try:
        mu, L = monotonicity()
    except RuntimeError:  # e.g. a dense operator without a metric
        return None
    return mu, L, math.sqrt(max(L * L - mu * mu, 0.0))
