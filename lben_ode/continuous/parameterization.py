"""The direct parameterization of the contracting, gain-bounded LBEN-ODE (DESIGN §5, Condition 3).

Every value of the free parameters gives explicit weights that satisfy

    [ −2(1−α)P + γ⁻¹W_oᵀW_o    P + WᵀΛ     0   ]
    [  P + ΛW                  −2Λ         ΛU  ]  ≺ 0
    [  0                        UᵀΛ       −γI  ]

so ``dz/dt = −z + σ(Wz + Uu + b_z)``, ``y = W_o z + b_y`` contracts at rate α in the P-norm and has
incremental ℓ2 gain at most γ. The Schur complement in the last block leaves
``[[Q, −(P + WᵀΛ)], [−(P + ΛW), R]] ≻ 0`` with ``Q = 2(1−α)P − γ⁻¹W_oᵀW_o`` and
``R = 2Λ − γ⁻¹ΛUUᵀΛ``; for any factors ``F_Q F_Qᵀ = Q`` and ``F_R F_Rᵀ = R`` it holds exactly when
``‖F_R⁻¹(P + ΛW)F_Q⁻ᵀ‖₂ < 1``, so ``ΛW = F_R K F_Qᵀ − P`` with a strict contraction K is the whole set.

**Factors without subtraction.** DESIGN §5 writes ``chol(Q)`` and ``chol(R)`` of the differences
above. Here the factors come from the same free matrices in closed form, with no difference of
nearly equal matrices and no Cholesky factorisation that can fail: with ``L_o L_oᵀ = I + G_oᵀG_o``,
``I − K(G_o)ᵀK(G_o) = L_o⁻¹L_o⁻ᵀ`` gives ``Q = F_Q F_Qᵀ`` for ``F_Q = √(2(1−α)) C_P L_o⁻¹`` (lower
triangular: it *is* chol(Q)); with ``M_u M_uᵀ = I + G_uG_uᵀ``, ``I − K(G_u)K(G_u)ᵀ = (I + G_uG_uᵀ)⁻¹``
gives ``R = F_R F_Rᵀ`` for ``F_R = √2 Λ^{1/2} M_u⁻ᵀ``. F_R differs from chol(R) by an orthogonal
factor on the right, which K absorbs (an orthogonal map times a strict contraction is one), so the
set of models is the one of DESIGN §5. The only factorisations are of ``I + GᵀG``-type matrices
(eigenvalues ≥ 1) and of ``P = L_P L_Pᵀ + εI`` (eigenvalues ≥ ε).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class ContractingWeights(NamedTuple):
    """The explicit model for the current parameters (with autograd graph).

    Shapes for width n, input m, output p: W ``(n, n)``, U ``(n, m)``, b_z ``(n,)``, W_o ``(p, n)``,
    b_y ``(p,)``, P ``(n, n)`` (the contraction metric), lam ``(n,)`` (the diagonal of Λ).
    """

    W: torch.Tensor
    U: torch.Tensor
    b_z: torch.Tensor
    W_o: torch.Tensor
    b_y: torch.Tensor
    P: torch.Tensor
    lam: torch.Tensor


def strict_contraction(G: torch.Tensor) -> torch.Tensor:
    """``K(G) = G L⁻ᵀ`` with ``L Lᵀ = I + GᵀG``: a matrix of spectral norm < 1 from any G.

    ``KᵀK = I − L⁻¹L⁻ᵀ ≺ I``, and every strict contraction K is reached (by ``G = K(I − KᵀK)^{−1/2}``).

    Args:
        G: any ``(rows, cols)`` matrix.

    Returns:
        K, ``(rows, cols)``, with ``‖K‖₂² = σ²/(1 + σ²)`` for σ the largest singular value of G.
    """
    L = _cholesky_of_identity_plus_gram(G)
    # G L⁻ᵀ = (L⁻¹ Gᵀ)ᵀ.
    return torch.linalg.solve_triangular(L, G.T, upper=False).T


def _cholesky_of_identity_plus_gram(G: torch.Tensor) -> torch.Tensor:
    """chol(I + GᵀG), ``(cols, cols)``; never fails for finite G (its eigenvalues are ≥ 1)."""
    eye = torch.eye(G.shape[1], dtype=G.dtype, device=G.device)
    return torch.linalg.cholesky(eye + G.T @ G)


def contracting_weights(
    L_P: torch.Tensor,
    log_lambda: torch.Tensor,
    G: torch.Tensor,
    G_o: torch.Tensor,
    G_u: torch.Tensor,
    b_z: torch.Tensor,
    b_y: torch.Tensor,
    alpha: float,
    gamma: torch.Tensor | None,
    eps: float,
) -> ContractingWeights:
    """Explicit weights satisfying Condition 3 from the free parameters.

    Args:
        L_P: ``(n, n)``, any matrix; ``P = L_P L_Pᵀ + εI``.
        log_lambda: ``(n,)``; ``Λ = diag(exp(log_lambda))``.
        G: ``(n, n)``, any matrix; W is built from the strict contraction K(G).
        G_o: ``(p, n)``; with γ, ``W_o = √(2γ(1−α)) K(G_o) C_Pᵀ``; without γ, W_o itself.
        G_u: ``(n, m)``; with γ, ``U = √(2γ) Λ^{−1/2} K(G_u)``; without γ, U itself.
        b_z, b_y: the biases, ``(n,)`` and ``(p,)``.
        alpha: the contraction rate α in [0, 1).
        gamma: the incremental ℓ2 gain bound γ (0-dim tensor, may carry a graph), or None for a
            model that is contracting only (then U and W_o are free).
        eps: ε > 0, the floor of P's eigenvalues.

    Returns:
        The :class:`ContractingWeights`, differentiable in every free parameter.
    """
    n = L_P.shape[0]
    eye = torch.eye(n, dtype=L_P.dtype, device=L_P.device)
    P = L_P @ L_P.T + eps * eye
    C_P = torch.linalg.cholesky(P)
    lam = log_lambda.exp()
    lam_sqrt = (0.5 * log_lambda).exp()
    K = strict_contraction(G)
    if gamma is None:
        W_o, U = G_o, G_u
        # F_Q = √(2(1−α)) C_P, F_R = √2 Λ^{1/2}: F_R K F_Qᵀ = 2√(1−α) Λ^{1/2} K C_Pᵀ.
        coupling = 2.0 * math.sqrt(1.0 - alpha) * lam_sqrt[:, None] * (K @ C_P.T)
    else:
        L_o = _cholesky_of_identity_plus_gram(G_o)
        K_o = torch.linalg.solve_triangular(L_o, G_o.T, upper=False).T
        W_o = torch.sqrt(2.0 * (1.0 - alpha) * gamma) * (K_o @ C_P.T)
        U = torch.sqrt(2.0 * gamma) * strict_contraction(G_u) / lam_sqrt[:, None]
        M_u = _cholesky_of_identity_plus_gram(G_u.T)  # chol(I + G_u G_uᵀ), (n, n)
        # F_R K F_Qᵀ = 2√(1−α) Λ^{1/2} M_u⁻ᵀ K L_o⁻ᵀ C_Pᵀ.
        left = torch.linalg.solve_triangular(M_u.T, K, upper=True)  # M_u⁻ᵀ K
        middle = torch.linalg.solve_triangular(L_o, left.T, upper=False).T  # (M_u⁻ᵀ K) L_o⁻ᵀ
        coupling = 2.0 * math.sqrt(1.0 - alpha) * lam_sqrt[:, None] * (middle @ C_P.T)
    W = (coupling - P) / lam[:, None]
    return ContractingWeights(W, U, b_z, W_o, b_y, P, lam)
