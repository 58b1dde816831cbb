"""Forward-backward splitting (DESIGN §2)."""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import IterativeSolver
from .options import Option, positive_float, positive_int
from .problem import FixedPointProblem
from .registry import register


def forward_backward_map(problem: FixedPointProblem, alpha: float, z: torch.Tensor) -> torch.Tensor:
    """One forward-backward step ``prox_{αf}((1 − α) z + α (W z + b))``, z shaped like the injection."""
    a = (1 - alpha) * z + alpha * (problem.operator.apply(z) + problem.injection)
    return problem.activation.prox(a, alpha)


def resolve_step_size(alpha: float | None, problem: FixedPointProblem) -> float:
    """The α to use: the given one, or (None) the step the model's monotonicity proves convergent."""
    return problem.operator.forward_backward_step() if alpha is None else float(alpha)


@register
class ForwardBackward(IterativeSolver):
    """``z⁺ = prox_{αf}((1 − α) z + α (W z + b))``.

    Converges when α < 2μ/L², with μ and L the strong-monotonicity and Lipschitz constants of
    I − W in the model's Λ-metric. By default α is the step ``μ/L²`` that the model computes from its
    own parameters (see ``forward_backward_step``); a user-given α is used as is, and if it is too
    large the residual grows and the solve is reported as not converged.
    """

    name = "fb"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "alpha": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "step size; None takes the step the model's monotonicity margin proves convergent",
        ),
        # Safe steps are small, so forward-backward needs a larger budget than the other methods.
        "max_iter": Option(2000, positive_int, "an int ≥ 1", "iteration budget of one solve"),
    }

    def step_size(self, problem: FixedPointProblem) -> float:
        """The α used for ``problem``: the user's, or the model's provably safe step."""
        return resolve_step_size(self.options["alpha"], problem)

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> tuple[torch.Tensor, float]:
        return z0, self.step_size(problem)

    def step(self, problem: FixedPointProblem, state: tuple[torch.Tensor, float]) -> tuple[torch.Tensor, float]:
        z, alpha = state
        return forward_backward_map(problem, alpha, z), alpha

    def current(self, state: tuple[torch.Tensor, float]) -> torch.Tensor:
        return state[0]
