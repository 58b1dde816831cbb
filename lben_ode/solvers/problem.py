"""What a solver is asked to solve: the fixed point ``z = σ(W z + b)`` for a batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..activations import Activation

#: Added to ‖z‖ in the relative residual so that an all-zero equilibrium counts as converged.
RESIDUAL_FLOOR = 1e-12


#: The capability of an operator to apply the resolvent ``(I + α(I − W))⁻¹`` cheaply.
RESOLVENT = "resolvent"

#: The capability of an operator to give W as an explicit ``(n, n)`` matrix: attribute ``W`` and
#: flag ``transposed`` (the operator applies ``z ↦ z @ W.T``, or ``z ↦ z @ W`` when transposed).
DENSE_MATRIX = "dense_matrix"

#: Every capability an operator may declare, with what it means (for messages).
CAPABILITIES: dict[str, str] = {
    RESOLVENT: "the resolvent (I + α(I − W))⁻¹",
    DENSE_MATRIX: "an explicit dense matrix W",
}


def describe_capability(name: str) -> str:
    """A capability in words, e.g. ``"the resolvent (I + α(I − W))⁻¹"``."""
    return CAPABILITIES.get(name, repr(name))


class EquilibriumOperator(Protocol):
    """The linear part W of an equilibrium model, seen by solvers (no autograd graph).

    Implementations act on batches shaped ``(batch, *state_shape)``. Every operator applies W and
    Wᵀ and gives a forward-backward step; what it provides beyond that it declares in a class
    attribute ``PROVIDES`` (a frozenset of :data:`CAPABILITIES` names), which solvers' ``REQUIRES``
    are checked against.
    """

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """W z for each sample."""

    def transpose(self) -> EquilibriumOperator:
        """The operator of Wᵀ (used by the adjoint equilibrium of implicit gradients)."""

    def forward_backward_step(self) -> float:
        """A forward-backward step α that the model's monotonicity proves convergent."""

    # Optional (solvers fall back when an operator lacks them):
    #   apply_affine(z, c) -> W z + c in one fused operation;
    #   forward_backward_contraction() -> (α, ρ | None): the step with the best proven contraction
    #       factor ρ per step in the metric below (None: no proven rate);
    #   monotonicity() -> (μ, L) of I − W in that metric;
    #   metric_weights() -> tensor broadcastable to the state, the metric's diagonal (None: identity).

    def resolvent(self, alpha: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """v ↦ (I + α(I − W))⁻¹ v, or None when the model has no efficient inverse."""


def operator_capabilities(operator: EquilibriumOperator) -> frozenset[str]:
    """What ``operator`` provides beyond W and Wᵀ: its ``PROVIDES``, or for an operator that does not
    declare it, ``{"resolvent"}`` when its ``resolvent(1.0)`` is not None."""
    declared = getattr(operator, "PROVIDES", None)
    if declared is not None:
        return frozenset(declared)
    return frozenset({RESOLVENT}) if operator.resolvent(1.0) is not None else frozenset()


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
        """σ(W z + injection); one fused product where the operator offers ``apply_affine(z, c)``."""
        affine = getattr(self.operator, "apply_affine", None)
        if affine is not None and z.dim() == 2:
            return self.activation(affine(z, self.injection))
        return self.activation(self.operator.apply(z) + self.injection)

    def residuals(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample absolute ``‖z − σ(Wz + b)‖`` and relative ``‖z − σ(Wz + b)‖ / (‖z‖ + floor)``
        residuals, each ``(batch,)``; NaN stays NaN. The solve loop's checks use both."""
        dims = tuple(range(1, z.dim()))
        absolute = torch.linalg.vector_norm(z - self.fixed_point_map(z), dim=dims)
        return absolute, absolute / torch.linalg.vector_norm(z, dim=dims).add_(RESIDUAL_FLOOR)

    def relative_residual(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample ``‖z − σ(Wz + b)‖ / (‖z‖ + floor)``, shape ``(batch,)``; NaN stays NaN."""
        return self.residuals(z)[1]
