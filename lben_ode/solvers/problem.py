"""What a solver is asked to solve: the fixed point ``z = σ(W z + b)`` for a batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..activations import Activation

#: Added to ‖z‖ in the relative residual so that an all-zero equilibrium counts as converged.
RESIDUAL_FLOOR = 1e-12


class EquilibriumOperator(Protocol):
    """The linear part W of an equilibrium model, seen by solvers (no autograd graph).

    Implementations act on batches shaped ``(batch, *state_shape)``.
    """

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """W z for each sample."""

    def transpose(self) -> EquilibriumOperator:
        """The operator of Wᵀ (used by the adjoint equilibrium of implicit gradients)."""

    def forward_backward_step(self) -> float:
        """A forward-backward step α that the model's monotonicity proves convergent."""

    # Optional (solvers fall back when an operator lacks them):
    #   forward_backward_contraction() -> (α, ρ | None): the step with the best proven contraction
    #       factor ρ per step in the metric below (None: no proven rate);
    #   monotonicity() -> (μ, L) of I − W in that metric;
    #   metric_weights() -> tensor broadcastable to the state, the metric's diagonal (None: identity).

    def resolvent(self, alpha: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """v ↦ (I + α(I − W))⁻¹ v, or None when the model has no efficient inverse."""


@dataclass
class FixedPointProblem:
    """The equilibrium ``z = σ(W z + injection)`` of a batch.

    Attributes:
        operator: the linear map W.
        injection: ``U x + b_z`` per sample, shape ``(batch, *state_shape)``.
        activation: σ, monotone with slope in [0, 1].
    """

    operator: EquilibriumOperator
    injection: torch.Tensor
    activation: Activation

    @property
    def batch_size(self) -> int:
        """Number of samples."""
        return self.injection.shape[0]

    def fixed_point_map(self, z: torch.Tensor) -> torch.Tensor:
        """σ(W z + injection)."""
        return self.activation(self.operator.apply(z) + self.injection)

    def relative_residual(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample ``‖z − σ(Wz + b)‖ / (‖z‖ + floor)``, shape ``(batch,)``; NaN stays NaN."""
        r = (z - self.fixed_point_map(z)).flatten(1).norm(dim=1)
        return r / (z.flatten(1).norm(dim=1) + RESIDUAL_FLOOR)
