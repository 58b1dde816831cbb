"""The Lipschitz-bounded equilibrium network (DESIGN §1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..activations import Activation
from ..errors import unknown_name
from ..solvers.base import Solver
from ..validation import check_count, check_margin
from .base import register_gamma
from .dense import DenseEquilibriumModel, linear_init

METRICS = ("diagonal", "identity")


class LBEN(DenseEquilibriumModel):
    """A dense LBEN: ``z = σ(W z + U x + b_z)``, ``y = W_o z + b_y``, γ-Lipschitz by construction.

    W comes from the direct parameterization of DESIGN §1,

        H = ½(γ⁻¹ W_oᵀW_o + γ⁻¹ ΛUUᵀΛ + VᵀV + m I) + S − Sᵀ,    W = I − Λ⁻¹H,

    so that ``2Λ − ΛW − WᵀΛ − γ⁻¹W_oᵀW_o − γ⁻¹ΛUUᵀΛ = VᵀV + mI ≻ 0`` for every parameter value:
    the network is well-posed and x ↦ y is γ-Lipschitz in ℓ2 (in the units of x).

    Args:
        in_features: size of x.
        out_features: size of y (number of logits).
        width: size n of the hidden state z.
        gamma: the Lipschitz bound γ > 0, or None for the unconstrained LBEN (well-posed only).
        activation: name of a monotone activation with slope in [0, 1] (``relu``, ``leaky_relu``,
            ``tanh``, ``sigmoid``, ``softplus``) or an :class:`~lben_ode.activations.Activation`.
        margin: m > 0, keeps the conditions strict; larger m means faster solves, less freedom.
        metric: ``"diagonal"`` learns Λ = diag(exp d); ``"identity"`` fixes Λ = I.
        learn_gamma: learn γ through log γ (the bound then changes during training).
        rank: rows r of V (default: width).
        solver: registry name of the equilibrium solver (see ``lben_ode.solvers.available()``).
        **solver_options: options of that solver (``tol``, ``max_iter``, ``alpha``, …).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int,
        gamma: float | None = 1.0,
        activation: str | Activation = "relu",
        margin: float = 0.1,
        metric: str = "diagonal",
        learn_gamma: bool = False,
        rank: int | None = None,
        solver: str | Solver = "pr",
        **solver_options: Any,
    ) -> None:
        super().__init__(in_features, out_features, width, activation, solver, solver_options)
        register_gamma(self, gamma, learn_gamma)
        if metric not in METRICS:
            raise unknown_name("metric", metric, METRICS)
        self.margin = check_margin(margin)
        self.metric = metric
        rank = width if rank is None else check_count("rank", rank)
        self.V = nn.Parameter(linear_init(rank, width))
        self.S = nn.Parameter(linear_init(width, width))
        if metric == "diagonal":
            self.log_lambda = nn.Parameter(torch.zeros(width))
        else:
            self.register_buffer("log_lambda", torch.zeros(width))

    @property
    def gamma(self) -> torch.Tensor | None:
        """γ as a tensor (None when unconstrained)."""
        return None if self.log_gamma is None else self.log_gamma.exp()

    def weight_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        lam = self.log_lambda.exp()
        n = self.width
        eye = torch.eye(n, dtype=lam.dtype, device=lam.device)
        sym = self.V.T @ self.V + self.margin * eye
        if self.log_gamma is not None:
            lam_u = lam[:, None] * self.U
            sym = sym + (self.W_o.T @ self.W_o + lam_u @ lam_u.T) / self.gamma
        H = 0.5 * sym + self.S - self.S.T
        return eye - H / lam[:, None], lam

    def lipschitz_bound(self) -> float | None:
        return None if self.log_gamma is None else float(self.gamma)

    def extra_repr(self) -> str:
        g = self.lipschitz_bound()
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, width={self.width}, "
            f"gamma={'None' if g is None else f'{g:.4g}'}, activation={self.activation!r}, "
            f"margin={self.margin}, metric={self.metric!r}, solver={self.solver!r}"
        )
