"""Peaceman-Rachford splitting (DESIGN §2) and its step size from the model."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch

from ..activations import Activation
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
    LBENs after 1–5 epochs of MNIST training (``configs/mnist.yaml`` settings): median 10–11
    iterations to 1e-4 where α = 1 takes 11–21, and α = 1 itself on the benchmark's random models.

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


class _State(NamedTuple):
    """PR's state: ``u`` (z = prox(u)) and ``w = u½ + α b``, with what every step reuses."""

    z: torch.Tensor | None  # the start z₀ until the first step (prox(u₀) need not equal it)
    u: torch.Tensor
    w: torch.Tensor
    reflect: Callable[..., torch.Tensor]
    alpha: float
    shift: torch.Tensor
    activation: Activation


def reflected_resolvent_affine(
    operator: object, alpha: float
) -> Callable[..., torch.Tensor]:
    """``(w, c) ↦ (2(I + α(I − W))⁻¹ − I) w + c``: the operator's ``reflected_resolvent_affine(α)``
    (one fused product) where it has one, else ``2R w − w + c`` from its resolvent. Called as
    ``f(w, c, out=None)``; ``out`` (w's shape, no longer needed) may receive the result."""
    reflected = getattr(operator, "reflected_resolvent_affine", None)
    if reflected is not None:
        return reflected(alpha)
    resolvent = operator.resolvent(alpha)
    return lambda w, c, out=None: torch.lerp(w, resolvent(w), 2.0).add_(c)


@register
class PeacemanRachford(IterativeSolver):
    """``u½ = 2z − u;  z½ = (I + α(I − W))⁻¹(u½ + α b);  u = 2z½ − u½;  z = prox_{αf}(u)``.

    Converges for every α > 0 when the model is well-posed; α only sets the speed. By default α is
    :func:`peaceman_rachford_step` of the model (``extra["alpha"]`` in the statistics says which).
    The resolvent ``(I + α(I − W))⁻¹`` comes from the model, which factors it once per parameter
    update, so PR needs a model with an efficient inverse (the dense ones).

    One iteration is one fused matrix product and one or two elementwise operations. With
    ``C = 2R − I`` (the reflected resolvent, R = (I + α(I − W))⁻¹) and ``w = u½ + α b``, the
    updates are ``u⁺ = C w + α b`` and ``w⁺ = 2 prox(u⁺) − u⁺ + α b``: a step is one ``addmm``
    (models with ``reflected_resolvent_affine(α)`` give C as one matrix, others ``2R w − w``) and
    the activation's shifted reflected prox (ReLU: ``|u⁺| + α b``); z = prox(u) is formed only
    when a check asks for it. α b is added after the product, elementwise: applying R to it
    separately would cancel large products and lose float32 accuracy where ``‖z*‖ ≪ ‖b‖`` (w stays
    small where σ is inactive, u½ + α b ≈ 0).
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
        # u₀ = z₀, so w₀ = 2z₀ − u₀ + α b = z₀ + α b.
        reflect = reflected_resolvent_affine(problem.operator, alpha)
        return _State(z0, z0, z0 + shift, reflect, alpha, shift, problem.activation)

    def step(self, problem: FixedPointProblem, state: _State) -> _State:
        # After the first step u and w are the solver's own, so the new ones overwrite them (at
        # batch 1024 fresh allocations cost as much as the elementwise work); u₀ is the caller's z₀.
        first = state.z is not None
        u = state.reflect(state.w, state.shift, out=None if first else state.u)  # u⁺ = C w + α b
        w = state.activation.reflected_prox(u, state.alpha, state.shift, out=state.w)  # 2 prox(u⁺) − u⁺ + α b
        return _State(None, u, w, state.reflect, state.alpha, state.shift, state.activation)

    def current(self, state: _State) -> torch.Tensor:
        if state.z is not None:
            return state.z
        z = state.activation.prox(state.u, state.alpha)
        # The next step overwrites u: a prox that returns its input (an identity piece) must not alias it.
        return z.clone() if z is state.u else z

    def extra_stats(self, state: _State, checks: int) -> dict[str, Any]:
        """``alpha``: the step size used."""
        return {"alpha": state.alpha}
