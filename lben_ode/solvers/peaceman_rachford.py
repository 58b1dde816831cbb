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
        return z0, z0.clone(), resolvent, alpha

    def step(self, problem: FixedPointProblem, state: _State) -> _State:
        z, u, resolvent, alpha = state
        u_half = 2 * z - u
        z_half = resolvent(u_half + alpha * problem.injection)
        u = 2 * z_half - u_half
        return problem.activation.prox(u, alpha), u, resolvent, alpha

    def current(self, state: _State) -> torch.Tensor:
        return state[0]
