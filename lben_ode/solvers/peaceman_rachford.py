"""Peaceman-Rachford splitting (DESIGN §2) and its step size from the model."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from .base import IterativeSolver
from .options import Option, positive_float
from .problem import RESOLVENT, EquilibriumOperator, FixedPointProblem
from .registry import register

#: The step used when the model gives no monotonicity constants (the classical default).
UNIT_STEP = 1.0


def peaceman_rachford_step(operator: EquilibriumOperator) -> float:
    """The default Peaceman-Rachford step ``α = min(1, 1/√(μL))`` from the operator's monotonicity
    constants (μ, L of ``I − W`` in its metric), or 1 when it gives none.

    Why this rule. PR maps ``u ↦ C_{αf}(C_{αA}(u))`` with the reflected resolvents
    ``C = 2(I + α·)⁻¹ − I``; ``C_{αf}`` is nonexpansive, and for a symmetric ``M`` with spectrum in
    [μ, L] the linear part contracts by ``max(|1 − αλ|/(1 + αλ))`` over that spectrum, smallest at
    ``α = 1/√(μL)`` (the two ends equalised) with factor ``(√κ − 1)/(√κ + 1)``, κ = L/μ. Trained
    LBENs are close to that case (the spectrum of ``I − W`` spreads along the real axis). When the
    skew part of M dominates (untrained random models: |Im λ| ≫ Re λ) the linear analysis overstates
    the best α, and the measured best is near 1, where the cap holds the step. Measured on width-80
    MNIST models (``benchmarks/solvers.py --trained``): 10–11 iterations to 1e-4 after 1–5 epochs of
    training where α = 1 takes 11–21, and never more than α = 1 on the benchmark's random models.

    Operators may cache the constants (``peaceman_rachford_constants``); any α > 0 converges, so
    estimates of μ and L serve as well as exact ones here.
    """
    constants = getattr(operator, "peaceman_rachford_constants", None)
    if constants is None:
        return UNIT_STEP
    mu, L = constants()
    if not (mu > 0 and math.isfinite(L) and L > 0):
        return UNIT_STEP
    return min(UNIT_STEP, 1.0 / math.sqrt(mu * L))


#: (z, ũ = u − α b, the resolvent, α, α b)
_State = tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], float, torch.Tensor]


@register
class PeacemanRachford(IterativeSolver):
    """``u½ = 2z − u;  z½ = (I + α(I − W))⁻¹(u½ + α b);  u = 2z½ − u½;  z = prox_{αf}(u)``.

    Converges for every α > 0 when the model is well-posed; α only sets the speed. By default α is
    :func:`peaceman_rachford_step` of the model (``extra["alpha"]`` in the statistics says which).
    The resolvent ``(I + α(I − W))⁻¹`` comes from the model, which factors it once per parameter
    update, so PR needs a model with an efficient inverse (the dense ones).

    One iteration is one matrix product and four elementwise operations. The state keeps
    ``ũ = u − α b`` in place of u, so that ``u½ + α b = 2z − ũ`` and ``ũ⁺ = 2z½ − (2z − ũ)``: both
    reflections ``2a − c`` are single ``lerp`` calls and ``α b`` is added once per step, before the
    prox (``z⁺ = prox(ũ⁺ + α b)``). Applying R to ``α b`` separately instead (``R u½ + R(αb)``)
    would save that addition but cancel large terms after the product and lose float32 accuracy
    where ``‖z*‖ ≪ ‖b‖``.
    """

    name = "pr"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "alpha": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "step size (any α > 0 converges); None: min(1, 1/√(μL)) from the model's monotonicity "
            "constants, 1 for a model without them",
        ),
    }
    REQUIRES: ClassVar[frozenset[str]] = frozenset({RESOLVENT})

    def step_size(self, problem: FixedPointProblem) -> float:
        """The α used for ``problem``: the user's, or :func:`peaceman_rachford_step` of its operator."""
        alpha = self.options["alpha"]
        return float(alpha) if alpha is not None else peaceman_rachford_step(problem.operator)

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> _State:
        alpha = self.step_size(problem)
        shift = alpha * problem.injection
        return z0, z0 - shift, problem.operator.resolvent(alpha), alpha, shift

    def step(self, problem: FixedPointProblem, state: _State) -> _State:
        z, shifted_u, resolvent, alpha, shift = state
        reflected = torch.lerp(shifted_u, z, 2.0)  # 2z − ũ = u½ + α b
        shifted_u = torch.lerp(reflected, resolvent(reflected), 2.0)  # 2z½ − (u½ + α b) = u⁺ − α b
        return problem.activation.prox(shifted_u + shift, alpha), shifted_u, resolvent, alpha, shift

    def current(self, state: _State) -> torch.Tensor:
        return state[0]

    def extra_stats(self, state: _State, checks: int) -> dict[str, Any]:
        """``alpha``: the step size used."""
        return {"alpha": state[3]}
