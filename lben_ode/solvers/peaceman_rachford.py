"""Peaceman-Rachford splitting (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from .base import IterativeSolver
from .options import Option, positive_float
from .problem import RESOLVENT, FixedPointProblem
from .registry import register

_State = tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], float]


@register
class PeacemanRachford(IterativeSolver):
    """``u½ = 2z − u;  z½ = (I + α(I − W))⁻¹(u½ + α b);  u = 2z½ − u½;  z = prox_{αf}(u)``.

    Converges for every α > 0 when the model is well-posed; α only sets the speed. The resolvent
    ``(I + α(I − W))⁻¹`` comes from the model, which factors it once per parameter update, so it
    needs a model with an efficient inverse (the dense ones).
    """

    name = "pr"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "alpha": Option(1.0, positive_float(), "a float > 0", "step size (any α > 0 converges)"),
    }
    REQUIRES: ClassVar[frozenset[str]] = frozenset({RESOLVENT})

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> _State:
        alpha = float(self.options["alpha"])
        resolvent = problem.operator.resolvent(alpha)
        return z0, self.reflected_start(problem, z0, alpha), resolvent, alpha

    @staticmethod
    def reflected_start(problem: FixedPointProblem, z0: torch.Tensor, alpha: float) -> torch.Tensor:
        """The u that goes with a start z0: ``u0 = z0 + α(W z0 + b − z0)``, and u0 = 0 where z0 = 0.

        At the solution ``u* = z* + α(W z* + b − z*)`` (from ``z½ = z*`` at the fixed point), so a
        warm start at z* with this u0 is already the fixed point of the iteration; with u0 = z0 it
        would be as far from u* as a cold start on every inactive unit. A sample whose start is all
        zeros keeps u0 = 0, the cold start.
        """
        started = (z0.flatten(1) != 0).any(dim=1).reshape(-1, *([1] * (z0.dim() - 1)))
        reflected = z0 + alpha * (problem.operator.apply(z0) + problem.injection - z0)
        return torch.where(started, reflected, z0)

    def step(self, problem: FixedPointProblem, state: _State) -> _State:
        z, u, resolvent, alpha = state
        u_half = 2 * z - u
        z_half = resolvent(u_half + alpha * problem.injection)
        u = 2 * z_half - u_half
        return problem.activation.prox(u, alpha), u, resolvent, alpha

    def current(self, state: _State) -> torch.Tensor:
        return state[0]
