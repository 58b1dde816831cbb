"""The explicit model and metrics that certify contraction and the gain bound (Condition 3)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class ContractionCertificate(NamedTuple):
    """Everything needed to check Condition 3 independently (detached tensors).

    The model is ``dz/dt = −z + σ(W z + U u + b_z)``, ``y = W_o z + b_y``. Shapes for width n,
    input m, output p: W ``(n, n)``, U ``(n, m)``, b_z ``(n,)``, W_o ``(p, n)``, b_y ``(p,)``, P
    ``(n, n)``, lam ``(n,)`` (the diagonal of Λ). ``alpha`` is the certified contraction rate (per
    unit of time) and ``gamma`` the incremental ℓ2 gain bound, or None for a model that is
    contracting only.
    """

    W: torch.Tensor
    U: torch.Tensor
    b_z: torch.Tensor
    W_o: torch.Tensor
    b_y: torch.Tensor
    P: torch.Tensor
    lam: torch.Tensor
    alpha: float
    gamma: float | None

    def condition3_matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The matrix of Condition 3, negative definite for a certified model.

        With γ: the ``(2n + m)`` square block matrix of DESIGN §5; without γ: its contraction part,
        ``[[−2(1−α)P, P + WᵀΛ], [P + ΛW, −2Λ]]`` of size 2n. Built in ``dtype`` (float64 default).
        """
        W, U, W_o, P = (x.to(dtype) for x in (self.W, self.U, self.W_o, self.P))
        Lam = torch.diag(self.lam.to(dtype))
        alpha = self.alpha
        top_left = -2.0 * (1.0 - alpha) * P
        off = P + Lam @ W
        if self.gamma is None:
            return torch.cat([torch.cat([top_left, off.T], 1), torch.cat([off, -2.0 * Lam], 1)], 0)
        gamma = self.gamma
        n, m = U.shape
        zeros = torch.zeros(n, m, dtype=dtype, device=W.device)
        eye_m = torch.eye(m, dtype=dtype, device=W.device)
        return torch.cat(
            [
                torch.cat([top_left + W_o.T @ W_o / gamma, off.T, zeros], 1),
                torch.cat([off, -2.0 * Lam, Lam @ U], 1),
                torch.cat([zeros.T, U.T @ Lam, -gamma * eye_m], 1),
            ],
            0,
        )
