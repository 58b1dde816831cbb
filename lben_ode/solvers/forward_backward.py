"""Forward-backward splitting (DESIGN §2) and its provably safe step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import IterativeSolver
from .options import Option, positive_float, positive_int
from .problem import FixedPointProblem
from .registry import register

#: Iteration budget when the model proves no contraction factor (e.g. a model without a metric).
FALLBACK_BUDGET = 2000


def forward_backward_map(problem: FixedPointProblem, alpha: float, z: torch.Tensor) -> torch.Tensor:
    """One forward-backward step ``prox_{αf}((1 − α) z + α (W z + b))``, z shaped like the injection."""
    a = (1 - alpha) * z + alpha * (problem.operator.apply(z) + problem.injection)
    return problem.activation.prox(a, alpha)


@dataclass(frozen=True)
class SafeStep:
    """The forward-backward step the model proves convergent, and what the proof gives.

    Attributes:
        alpha: the step α.
        rate: ρ < 1 with ``‖e⁺‖ ≤ ρ‖e‖`` per step in the metric ``weights`` (e = z − z*), or None
            when the model proves no rate.
        weights: diagonal of that metric, broadcastable to the state (None: the identity).
        growth: G with relative residual ``≤ G ρᵏ`` after k steps from z = 0: with κ the metric's
            condition number and L the Lipschitz constant of I − W in it, ``‖W‖ ≤ 1 + L√κ`` and
            the residual is at most ``(1 + ‖W‖)`` times the error, ``‖eₖ‖ ≤ √κ ρᵏ ‖z*‖`` and
            ``‖zₖ‖ ≥ ‖z*‖/2`` once ``√κ ρᵏ ≤ ½``, so ``G = 2(2 + L√κ)√κ``.
    """

    alpha: float
    rate: float | None
    weights: torch.Tensor | None
    growth: float

    def budget(self, tol: float) -> int:
        """Steps that provably bring the relative residual of a start at zero under ``tol``."""
        if self.rate is None or not self.rate < 1:
            return FALLBACK_BUDGET
        if self.rate <= 0:
            return 1
        return max(1, math.ceil(math.log(max(self.growth, 1.0) / tol) / -math.log(self.rate)))


def safe_step(problem: FixedPointProblem) -> SafeStep:
    """The provably convergent step of ``problem``'s operator (see :class:`SafeStep`).

    Operators that implement ``forward_backward_contraction()`` give the step with the best
    proven rate; others only ``forward_backward_step()`` (then no rate is known).
    """
    operator = problem.operator
    # Cached with the operator's own caches (rebuilt when the parameters change): the condition
    # number below is read on the host, which must not happen at every solve.
    shared = getattr(operator, "_shared", None)
    key = ("safe_step", bool(getattr(operator, "transposed", False)))
    if isinstance(shared, dict) and key in shared:
        return shared[key]
    step = _safe_step(operator)
    if isinstance(shared, dict):
        shared[key] = step
    return step


def _safe_step(operator: object) -> SafeStep:
    contraction = getattr(operator, "forward_backward_contraction", None)
    alpha, rate = contraction() if contraction is not None else (operator.forward_backward_step(), None)
    metric = getattr(operator, "metric_weights", None)
    weights = metric() if metric is not None else None
    growth = math.inf
    monotonicity = getattr(operator, "monotonicity", None)
    if rate is not None and monotonicity is not None:
        kappa = 1.0 if weights is None else float(weights.max() / weights.min())
        _, lipschitz = monotonicity()
        growth = 2 * (2 + lipschitz * math.sqrt(kappa)) * math.sqrt(kappa)
    return SafeStep(float(alpha), None if rate is None or not math.isfinite(growth) else float(rate), weights, growth)


def resolve_step_size(alpha: float | None, problem: FixedPointProblem) -> float:
    """The α to use: the given one, or (None) the step the model proves convergent."""
    return safe_step(problem).alpha if alpha is None else float(alpha)


def _optional_positive_int(v: object) -> bool:
    return v is None or positive_int(v)


#: The budget option of the solvers that can derive theirs from the model's contraction factor.
DERIVED_MAX_ITER = Option(
    None,
    _optional_positive_int,
    "an int ≥ 1 or None",
    "iteration budget of one solve; None derives it from the model's proven contraction factor "
    f"(enough for a start at zero; {FALLBACK_BUDGET} when the model proves none)",
)


@register
class ForwardBackward(IterativeSolver):
    """``z⁺ = prox_{αf}((1 − α) z + α (W z + b))``.

    Converges when ``ρ(α) = ‖I − αM‖ < 1`` in the model's Λ-metric (M = Λ^{½}(I − W)Λ^{-½};
    α < 2μ/L² suffices). By default α is the step with the smallest proven ρ that the model computes
    from its own parameters (``forward_backward_contraction``; models that give only
    ``forward_backward_step`` use that), and the budget is derived from ρ (:class:`SafeStep`), so
    the default never runs out before a well-posed model's solve from zero has converged. A
    user-given α is used as is; if it is too large the residual grows and the solve is reported as
    not converged.
    """

    name = "fb"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "alpha": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "step size; None takes the step with the best contraction factor the model proves",
        ),
        "max_iter": DERIVED_MAX_ITER,
    }

    def step_size(self, problem: FixedPointProblem) -> float:
        """The α used for ``problem``: the user's, or the model's provably safe step."""
        return resolve_step_size(self.options["alpha"], problem)

    def step_budget(self, problem: FixedPointProblem) -> int:
        """``max_iter``, or (None) the budget the model's proven contraction factor gives."""
        if self.options["max_iter"] is not None:
            return self.options["max_iter"]
        if self.options["alpha"] is not None:
            return FALLBACK_BUDGET
        return safe_step(problem).budget(self.tol)

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> tuple[torch.Tensor, float]:
        return z0, self.step_size(problem)

    def step(self, problem: FixedPointProblem, state: tuple[torch.Tensor, float]) -> tuple[torch.Tensor, float]:
        z, alpha = state
        return forward_backward_map(problem, alpha, z), alpha

    def current(self, state: tuple[torch.Tensor, float]) -> torch.Tensor:
        return state[0]
