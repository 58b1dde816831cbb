"""The dense linear operator W as seen by the solvers, with cached factorisations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch

from ..solvers.problem import RESOLVENT

#: Up to this width the Peaceman-Rachford step uses the exact monotonicity constants (a few ms).
EXACT_CONSTANTS_MAX_WIDTH = 256


class DenseOperator:
    """W as an explicit ``(n, n)`` matrix acting on row-vector batches ``(batch, n)``.

    Args:
        W: the explicit matrix (no autograd graph).
        metric: the diagonal of Λ in which ``I − W`` is strongly monotone, or None when the model has
            no known metric (then the forward-backward step is ``fb_step``).
        fb_step: forward-backward step used when ``metric`` is None.
        transposed: whether this operator is Wᵀ (built by :meth:`transpose`).
    """

    #: An explicit matrix has a resolvent: one inverse per α, cached.
    PROVIDES: ClassVar[frozenset[str]] = frozenset({RESOLVENT, "dense_matrix"})

    def __init__(
        self,
        W: torch.Tensor,
        metric: torch.Tensor | None,
        fb_step: float = 1.0,
        transposed: bool = False,
        _shared: dict | None = None,
    ) -> None:
        self.W = W
        self.metric = metric
        self.fb_step = fb_step
        self.transposed = transposed
        # Caches shared by an operator and its transpose: one factorisation serves both.
        self._shared = {} if _shared is None else _shared

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """W z (or Wᵀ z) for each row of ``z``."""
        return z @ self.W if self.transposed else z @ self.W.T

    def apply_affine(self, z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """W z + offset (or Wᵀ z + offset) for each row, in one fused product (``addmm``)."""
        return torch.addmm(offset, z, self.W if self.transposed else self.W.T)

    def transpose(self) -> DenseOperator:
        """Wᵀ, sharing this operator's caches."""
        return DenseOperator(self.W, self.metric, self.fb_step, not self.transposed, self._shared)

    def monotonicity(self) -> tuple[float, float]:
        """(μ, L): strong-monotonicity and Lipschitz constants of I − W in the Λ-metric.

        With ``M = Λ^{1/2}(I − W)Λ^{-1/2}``, μ is the smallest eigenvalue of ``(M + Mᵀ)/2`` and L is
        ``‖M‖₂``; both are the same for Wᵀ in the Λ⁻¹-metric (M becomes Mᵀ).
        """
        if "mu_L" not in self._shared:
            if self.metric is None:
                raise RuntimeError("monotonicity constants need the model's metric Λ")
            M = self._metric_matrix(torch.float64)
            mu = torch.linalg.eigvalsh((M + M.T) / 2)[0]
            # ‖M‖₂ = √λ_max(MᵀM): a symmetric eigenvalue problem is about half the cost of the SVD.
            L = torch.linalg.eigvalsh(M.T @ M)[-1].clamp_min(0).sqrt()
            self._shared["mu_L"] = (float(mu), float(L))
        return self._shared["mu_L"]

    def forward_backward_step(self) -> float:
        """α = μ / L², for which forward-backward contracts by √(1 − μ²/L²) per step."""
        if self.metric is None:
            return self.fb_step
        mu, L = self.monotonicity()
        return mu / L**2

    def forward_backward_contraction(self) -> tuple[float, float | None]:
        """(α, ρ): the forward-backward step with the smallest proven contraction factor, and ρ.

        One step maps the error e to ``prox(a) − prox(a*)`` with ``Λ^{½}(a − a*) = (I − αM)Λ^{½}e``
        (M as in :meth:`monotonicity`); prox acts elementwise and is 1-Lipschitz, so
        ``‖e⁺‖_Λ ≤ ‖I − αM‖₂ ‖e‖_Λ``. ``ρ(α) = ‖I − αM‖₂`` is convex in α; its minimiser is found by
        golden-section search on log α between μ/L² (where ρ ≤ √(1 − μ²/L²)) and 2/L (beyond
        which ρ ≥ 1). On ill-conditioned models it is hundreds of times faster than μ/L² (whose
        bound ``√(1 − μ²/L²)`` ignores the structure of M). The same (α, ρ) holds for Wᵀ in the
        Λ⁻¹-metric (M becomes Mᵀ). Without a metric: ``(fb_step, None)`` (no proven rate).
        """
        if self.metric is None:
            return self.fb_step, None
        if "fb_contraction" not in self._shared:
            self._shared["fb_contraction"] = self._best_contraction()
        return self._shared["fb_contraction"]

    def _best_contraction(self) -> tuple[float, float]:
        mu, L = self.monotonicity()
        M = self._metric_matrix(torch.float64)
        eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
        sym, gram = (M + M.T) / 2, M.T @ M

        def rho(alpha: float) -> float:
            # ‖I − αM‖₂² = λ_max(I − 2α sym(M) + α² MᵀM): one symmetric eigenvalue problem.
            return float(torch.linalg.eigvalsh(eye - 2 * alpha * sym + alpha**2 * gram)[-1].clamp_min(0).sqrt())

        lo, hi = math.log(mu / L**2), math.log(2 / L)
        golden = (math.sqrt(5) - 1) / 2
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        fa, fb = rho(math.exp(a)), rho(math.exp(b))
        for _ in range(24):  # the bracket shrinks to 1e-5 of its width: α within a few 1e-4 relative
            if fa <= fb:
                hi, b, fb = b, a, fa
                a = hi - golden * (hi - lo)
                fa = rho(math.exp(a))
            else:
                lo, a, fa = a, b, fb
                b = lo + golden * (hi - lo)
                fb = rho(math.exp(b))
        start = mu / L**2
        candidates = [(fa, math.exp(a)), (fb, math.exp(b)), (rho(start), start)]
        best_rho, best_alpha = min(candidates)
        return best_alpha, best_rho

    def metric_weights(self) -> torch.Tensor | None:
        """Diagonal of the metric in which forward-backward contracts: Λ (Λ⁻¹ for Wᵀ), or None."""
        if self.metric is None:
            return None
        return 1.0 / self.metric if self.transposed else self.metric

    def resolvent(self, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ (I + α(I − W))⁻¹ v (or its transpose), from an inverse computed once per α."""
        inverse = self._inverse(alpha)
        if self.transposed:
            return lambda v: v @ inverse
        return lambda v: v @ inverse.T

    def reflected_resolvent_affine(self, alpha: float) -> Callable[..., torch.Tensor]:
        """(w, c, out=None) ↦ (2(I + α(I − W))⁻¹ − I) w + c (or with the transpose) for rows w, c:
        one fused product (``addmm``, into ``out`` when given) with a matrix cached per α."""
        key = ("reflected", float(alpha))
        if key not in self._shared:
            inverse = self._inverse(alpha)
            self._shared[key] = 2 * inverse - torch.eye(inverse.shape[0], dtype=inverse.dtype, device=inverse.device)
        reflected = self._shared[key]
        factor = reflected if self.transposed else reflected.T
        return lambda w, c, out=None: torch.addmm(c, w, factor, out=out)

    def _inverse(self, alpha: float) -> torch.Tensor:
        key = ("inverse", float(alpha))
        if key not in self._shared:
            n = self.W.shape[0]
            eye = torch.eye(n, dtype=self.W.dtype, device=self.W.device)
            self._shared[key] = torch.linalg.inv(eye + alpha * (eye - self.W))
        return self._shared[key]

    def peaceman_rachford_constants(self) -> tuple[float, float]:
        """(μ, L) of I − W in the Λ-metric for choosing Peaceman-Rachford's step: the exact
        :meth:`monotonicity` for n ≤ ``EXACT_CONSTANTS_MAX_WIDTH`` or when already computed
        (forward-backward needs it), else estimates.

        The estimates take 30 power iterations each, for L on ``MᵀM`` and for ``L − μ`` on
        ``L·I − (M + Mᵀ)/2`` (M as in :meth:`monotonicity`): about 60 matrix-vector products
        where the exact constants take one SVD and one symmetric eigendecomposition in float64
        (at n = 500, about 50 ms per parameter update against 5 ms on a CPU). Any step converges,
        so the estimates only set the speed (μ comes out a little high, α a little low). Without a
        metric: (0, 0), which tells the step rule to use α = 1.
        """
        if "mu_L" in self._shared or (self.metric is not None and self.W.shape[0] <= EXACT_CONSTANTS_MAX_WIDTH):
            return self.monotonicity()
        if "pr_constants" not in self._shared:
            self._shared["pr_constants"] = self._estimate_monotonicity()
        return self._shared["pr_constants"]

    def numerical_range_box(self) -> tuple[float, float, float]:
        """(μ, L_s, K): the extreme eigenvalues of ``(M + Mᵀ)/2`` and the norm of ``(M − Mᵀ)/2``
        (M as in :meth:`monotonicity`; the identity metric when the model has none), so the
        numerical range of M lies in ``[μ, L_s] × [−K, K]`` (the ODE solver's ``method='auto'``
        chooses its step from this box). Exact (float64) for n ≤ ``EXACT_CONSTANTS_MAX_WIDTH``,
        else 30 power iterations each; the same for Wᵀ. Cached with the operator."""
        if "box" not in self._shared:
            self._shared["box"] = self._numerical_range_box()
        return self._shared["box"]

    def _numerical_range_box(self, iterations: int = 30) -> tuple[float, float, float]:
        n = self.W.shape[0]
        exact = n <= EXACT_CONSTANTS_MAX_WIDTH
        M = self._metric_matrix(torch.float64 if exact else self.W.dtype)
        eye = torch.eye(n, dtype=M.dtype, device=M.device)
        sym, skew = (M + M.T) / 2, (M - M.T) / 2
        if exact:
            eig = torch.linalg.eigvalsh(sym)
            values = torch.stack([eig[0], eig[-1], torch.linalg.matrix_norm(skew, ord=2)])
        else:
            top = _power_norm(sym, iterations)  # ‖sym‖ ≥ λ_max; equal when sym ⪰ 0
            bottom = top - _power_norm(top * eye - sym, iterations)
            values = torch.stack([bottom, top, _power_norm(skew, iterations)])
        mu, l_sym, k = values.tolist()  # one host read per parameter update
        return mu, l_sym, k

    def _estimate_monotonicity(self, iterations: int = 30) -> tuple[float, float]:
        if self.metric is None:
            return 0.0, 0.0
        M = self._metric_matrix(self.W.dtype)
        eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
        L = _power_norm(M, iterations)
        # L·I − sym ⪰ 0 (λ_max(sym) ≤ ‖M‖), so its norm is L − μ; a low estimate of it makes μ high.
        mu = L - _power_norm(L * eye - (M + M.T) / 2, iterations)
        mu, L = torch.stack([mu, L]).tolist()  # one host read per parameter update
        return mu, L

    def _metric_matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """``M = Λ^{½}(I − W)Λ^{-½}`` in ``dtype`` (``I − W`` without a metric), shape ``(n, n)``."""
        W = self.W.to(dtype)
        M = torch.eye(W.shape[0], dtype=dtype, device=W.device) - W
        if self.metric is None:
            return M
        s = self.metric.to(dtype).sqrt()
        return M * s[:, None] / s[None, :]


def _power_norm(A: torch.Tensor, iterations: int) -> torch.Tensor:
    """‖A‖₂ (0-dim tensor) by power iteration on AᵀA from a fixed generic start (no random state is
    touched): an estimate from below that converges to ‖A‖₂."""
    start = torch.linspace(1.0, 2.0, A.shape[0], dtype=A.dtype, device=A.device).cos()
    v = start / start.norm()
    for _ in range(iterations):
        v = A.T @ (A @ v)
        v = v / v.norm()
    return (A @ v).norm()
