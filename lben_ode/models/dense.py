"""Dense equilibrium models: the shared machinery for an explicit matrix W."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ..activations import Activation
from ..solvers.base import Solver
from ..validation import check_count
from .base import EquilibriumModel, ExplicitWeights, ForwardParts
from .dense_operator import DenseOperator


def linear_init(rows: int, cols: int) -> torch.Tensor:
    """Uniform(±1/√cols), the scale of ``nn.Linear``'s default initialisation."""
    bound = 1.0 / math.sqrt(cols)
    return torch.empty(rows, cols).uniform_(-bound, bound)


class DenseEquilibriumModel(EquilibriumModel):
    """An equilibrium network on flat inputs ``(batch, in_features)`` with an explicit W.

    Holds U ``(width, in_features)``, b_z ``(width,)``, W_o ``(out_features, width)`` and b_y;
    subclasses build W and the metric from their own parameters in :meth:`weight_matrix`.
    """

    OPERATOR_PROVIDES: ClassVar[frozenset[str]] = DenseOperator.PROVIDES

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int,
        activation: str | Activation,
        solver: str | Solver,
        solver_options: dict[str, Any],
    ) -> None:
        super().__init__(activation, solver, solver_options)
        self.in_features = check_count("in_features", in_features)
        self.out_features = check_count("out_features", out_features)
        self.width = check_count("width", width)
        self.input_shape = (in_features,)
        self.U = nn.Parameter(linear_init(width, in_features))
        self.b_z = nn.Parameter(torch.zeros(width))
        self.W_o = nn.Parameter(linear_init(out_features, width))
        self.b_y = nn.Parameter(torch.zeros(out_features))

    @abstractmethod
    def weight_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W, diag Λ) from the free parameters, with autograd graph; Λ None if no metric."""

    def forward_step_fallback(self) -> float:
        """Forward-backward step for models without a metric."""
        return 1.0

    def forward_parts(self) -> ForwardParts:
        W, lam = self.weight_matrix()

        def build() -> DenseOperator:
            return DenseOperator(W.detach(), None if lam is None else lam.detach(), self.forward_step_fallback())

        operator = self.cached_operator(build, (W, lam))
        U, b_z, W_o, b_y = self.U, self.b_z, self.W_o, self.b_y
        return ForwardParts(
            apply_W=lambda z: z @ W.T,
            injection=lambda x: x @ U.T + b_z,
            output=lambda z: z @ W_o.T + b_y,
            operator=operator,
        )

    def explicit_weights(self) -> ExplicitWeights:
        with torch.no_grad():
            W, lam = self.weight_matrix()
            return ExplicitWeights(
                W.detach().clone(),
                self.U.detach().clone(),
                self.b_z.detach().clone(),
                self.W_o.detach().clone(),
                self.b_y.detach().clone(),
                None if lam is None else lam.detach().clone(),
            )
