"""The steady states of a contracting LBEN-ODE at constant inputs, as an equilibrium model."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..models.base import EquilibriumModel, ExplicitWeights, ForwardParts
from ..models.dense_operator import DenseOperator


class SteadyStateLBEN(EquilibriumModel):
    """The map from a constant input u to the output at the steady state of a continuous-time model.

    For a constant input, the only steady state of ``dz/dt = −z + σ(Wz + Uu + b_z)`` is the
    equilibrium ``z* = σ(W z* + U u + b_z)``; Condition 3 implies Conditions 1 and 2 of DESIGN §1
    with the same Λ, so ``u ↦ W_o z* + b_y`` is a well-posed LBEN, γ-Lipschitz in ℓ2 when the
    continuous model has the gain bound γ. This model *shares* the continuous model's parameters
    (it holds it as a submodule): it always has its current W, U, W_o and Λ, and training it
    trains the continuous model, which stays certified.

    Args:
        dynamic: the continuous-time model.
        solver: registry name of the equilibrium solver (``lben_ode.solvers.available()``).
        **solver_options: that solver's options.
    """

    OPERATOR_PROVIDES: ClassVar[frozenset[str]] = DenseOperator.PROVIDES

    # ``dynamic`` is a ContractingLBEN; typed loosely so that this module does not import its user.
    def __init__(self, dynamic: torch.nn.Module, solver: str = "pr", **solver_options: Any) -> None:
        super().__init__(dynamic.activation, solver, solver_options)
        self.dynamic = dynamic
        self.in_features = dynamic.input_size
        self.out_features = dynamic.output_size
        self.width = dynamic.width
        self.input_shape = (dynamic.input_size,)

    def weight_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, diag Λ) of the continuous model, with autograd graph."""
        weights = self.dynamic.weights()
        return weights.W, weights.lam

    def forward_parts(self) -> ForwardParts:
        weights = self.dynamic.weights()
        W, lam, U, b_z, W_o, b_y = weights.W, weights.lam, weights.U, weights.b_z, weights.W_o, weights.b_y
        operator = self.cached_operator(lambda: DenseOperator(W.detach(), lam.detach()), (W, lam))
        return ForwardParts(
            apply_W=lambda z: z @ W.T,
            injection=lambda x: x @ U.T + b_z,
            output=lambda z: z @ W_o.T + b_y,
            operator=operator,
        )

    def explicit_weights(self) -> ExplicitWeights:
        c = self.dynamic.certificate()
        return ExplicitWeights(c.W, c.U, c.b_z, c.W_o, c.b_y, c.lam)

    def lipschitz_bound(self) -> float | None:
        """γ of the continuous model (None when it is contracting only)."""
        return self.dynamic.gain_bound()

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}"
