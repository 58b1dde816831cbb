"""The monotone operator equilibrium network (Winston & Kolter 2020), Λ = I."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..activations import Activation
from ..solvers.base import Solver
from ..validation import check_margin
from .dense import DenseEquilibriumModel, linear_init


class MonDEQ(DenseEquilibriumModel):
    """monDEQ: ``W = (1 − m) I − AᵀA + B − Bᵀ``, well-posed for every A, B (Λ = I).

    Its input-output map has no certified Lipschitz bound (:meth:`lipschitz_bound` is None).

    Args:
        in_features, out_features, width: sizes of x, y and z.
        activation: monotone activation with slope in [0, 1] (name or Activation).
        margin: m > 0, the strong-monotonicity margin of I − W.
        solver: registry name of the equilibrium solver.
        **solver_options: options of that solver.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int,
        activation: str | Activation = "relu",
        margin: float = 0.1,
        solver: str | Solver = "pr",
        **solver_options: Any,
    ) -> None:
        super().__init__(in_features, out_features, width, activation, solver, solver_options)
        self.margin = check_margin(margin)
        self.A = nn.Parameter(linear_init(width, width))
        self.B = nn.Parameter(linear_init(width, width))

    def weight_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.width, dtype=self.A.dtype, device=self.A.device)
        W = (1 - self.margin) * eye - self.A.T @ self.A + self.B - self.B.T
        return W, torch.ones(self.width, dtype=self.A.dtype, device=self.A.device)

    def lipschitz_bound(self) -> None:
        return None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, width={self.width}, "
            f"activation={self.activation!r}, margin={self.margin}, solver={self.solver!r}"
        )
