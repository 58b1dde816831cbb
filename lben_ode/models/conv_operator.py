"""The convolutional LBEN's W, applied without forming a matrix (DESIGN §4).

With circular convolutions A, B (channels → channels) and U (input channels → channels), the
output map ``W_o z = R · avg_pool(z)`` (R a linear readout) and the diagonal metric Λ,

    H = ½(γ⁻¹ W_oᵀW_o + γ⁻¹ ΛUUᵀΛ + AᵀA + m I) + B − Bᵀ,    W = I − Λ⁻¹H,

so that ``2Λ − ΛW − WᵀΛ − γ⁻¹W_oᵀW_o − γ⁻¹ΛUUᵀΛ = AᵀA + mI ≻ 0`` for every parameter value.
:class:`ConvWeights` applies H, W and Wᵀ with autograd (convolutions in space);
:class:`ConvOperator` is what the solvers use: no graph, the translation-invariant part
``½AᵀA + B − Bᵀ`` applied in the Fourier domain, and the forward-backward step from bounds that
are provable, computed exactly per frequency.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch.nn import functional as F

from .circular import average_pool_adjoint, circular_conv, circular_conv_adjoint, frequency_response


@dataclass
class ConvWeights:
    """The tensors that define a convolutional LBEN's W and output map.

    Attributes:
        A: ``(C, C, k, k)`` kernel of the convolution whose AᵀA is H's positive semidefinite part.
        B: ``(C, C, k, k)`` kernel whose B − Bᵀ is H's skew-symmetric part.
        U: ``(C, C_in, k, k)`` input convolution kernel.
        readout: ``(n_y, C · H/pool · W/pool)`` linear map after average pooling.
        lam: diagonal of Λ, positive, broadcastable to ``(C, H, W)``.
        inv_gamma: 1/γ (a 0-d tensor), or None for the unconstrained model.
        margin: m > 0.
        pool: average-pooling window (kernel = stride).
    """

    A: torch.Tensor
    B: torch.Tensor
    U: torch.Tensor
    readout: torch.Tensor
    lam: torch.Tensor
    inv_gamma: torch.Tensor | None
    margin: float
    pool: int

    def detached(self) -> ConvWeights:
        """The same weights without autograd graph."""
        return replace(
            self,
            A=self.A.detach(),
            B=self.B.detach(),
            U=self.U.detach(),
            readout=self.readout.detach(),
            lam=self.lam.detach(),
            inv_gamma=None if self.inv_gamma is None else self.inv_gamma.detach(),
        )

    # -- the pieces -------------------------------------------------------------------------------
    def output_map(self, z: torch.Tensor) -> torch.Tensor:
        """W_o z = R · avg_pool(z): ``(batch, C, H, W) → (batch, n_y)`` (no bias)."""
        pooled = F.avg_pool2d(z, self.pool) if self.pool > 1 else z
        return pooled.flatten(1) @ self.readout.T

    def output_adjoint(self, y: torch.Tensor, state_shape: tuple[int, int, int]) -> torch.Tensor:
        """W_oᵀ y: ``(batch, n_y) → (batch, C, H, W)``."""
        c, h, w = state_shape
        pooled = (y @ self.readout).reshape(y.shape[0], c, h // self.pool, w // self.pool)
        return average_pool_adjoint(pooled, self.pool)

    @property
    def channelwise_metric(self) -> bool:
        """Whether Λ is constant over pixels (the ``channels`` and ``identity`` metrics)."""
        return self.lam.shape[-2:] == (1, 1)

    def input_term(self, z: torch.Tensor) -> torch.Tensor:
        """½γ⁻¹ ΛUUᵀΛ z (requires a bound γ)."""
        lam_z = self.lam * z
        return (0.5 * self.inv_gamma) * self.lam * circular_conv(circular_conv_adjoint(lam_z, self.U), self.U)

    def output_term(self, z: torch.Tensor) -> torch.Tensor:
        """½γ⁻¹ W_oᵀW_o z (requires a bound γ)."""
        return (0.5 * self.inv_gamma) * self.output_adjoint(self.output_map(z), tuple(z.shape[1:]))

    def lipschitz_terms(self, z: torch.Tensor) -> torch.Tensor:
        """½γ⁻¹(ΛUUᵀΛ + W_oᵀW_o) z, the symmetric part of H that carries the bound γ."""
        if self.inv_gamma is None:
            return torch.zeros_like(z)
        return self.input_term(z) + self.output_term(z)

    def apply_h(self, z: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """H z (or Hᵀ z) with convolutions in space, for ``z`` shaped ``(batch, C, H, W)``."""
        skew = circular_conv(z, self.B) - circular_conv_adjoint(z, self.B)
        if transpose:
            skew = -skew
        gram = circular_conv_adjoint(circular_conv(z, self.A), self.A)
        return 0.5 * (gram + self.margin * z) + skew + self.lipschitz_terms(z)

    def apply_w(self, z: torch.Tensor) -> torch.Tensor:
        """W z = z − Λ⁻¹ H z."""
        return z - self.apply_h(z) / self.lam

    def apply_w_transpose(self, z: torch.Tensor) -> torch.Tensor:
        """Wᵀ z = z − Hᵀ Λ⁻¹ z."""
        return z - self.apply_h(z / self.lam, transpose=True)


class FrequencyMap:
    """A translation-invariant map channels → channels applied by the real 2-D FFT.

    At each frequency the map is a complex ``(C, C)`` matrix T. It is stored as a real
    ``(2C, 2C)`` matrix acting on interleaved (real, imaginary) pairs, because real batched
    products are much faster than complex ones on CPUs, and the transform runs over the leading
    axes of a ``(H, W, batch, C)`` view so that the spectrum needs one copy only.

    Args:
        response: ``(H, W // 2 + 1, C, C)`` complex matrices (see
            :func:`~lben_ode.models.circular.frequency_response`).
        image_size: (H, W).
    """

    def __init__(self, response: torch.Tensor, image_size: tuple[int, int]) -> None:
        h, w_half, c, _ = response.shape
        re, im = response.real, response.imag
        # out[2o + r] = Σ_i block[2o + r, 2i + s] · in[2i + s] for (r, s) ∈ {re, im}².
        block = torch.stack(
            [torch.stack([re, -im], dim=-1), torch.stack([im, re], dim=-1)], dim=-3
        )  # (h, w', C_out, 2, C_in, 2)
        block = block.reshape(h * w_half, 2 * c, 2 * c)
        self.block_t = block.transpose(1, 2).contiguous()
        self.image_size = image_size
        self.channels = c

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """T z for ``z`` shaped ``(batch, C, H, W)``."""
        batch, c = z.shape[0], self.channels
        spectrum = torch.fft.rfft2(z.permute(2, 3, 0, 1), dim=(0, 1)).contiguous()
        h, w_half = spectrum.shape[:2]
        rows = torch.view_as_real(spectrum).reshape(h * w_half, batch, 2 * c)
        out = torch.view_as_complex(torch.bmm(rows, self.block_t).reshape(h, w_half, batch, c, 2))
        return torch.fft.irfft2(out, s=self.image_size, dim=(0, 1)).permute(2, 3, 0, 1).contiguous()


class ConvOperator:
    """W (or Wᵀ) of a convolutional LBEN for the solvers: matrix-free, without autograd graph.

    Args:
        weights: the model's weights, detached.
        state_shape: (C, H, W).
        transposed: whether this operator is Wᵀ (built by :meth:`transpose`).
    """

    #: No resolvent: the metric Λ breaks the Fourier diagonalisation of I + α(I − W).
    PROVIDES: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        weights: ConvWeights,
        state_shape: tuple[int, int, int],
        transposed: bool = False,
        _shared: dict | None = None,
    ) -> None:
        self.weights = weights
        self.state_shape = state_shape
        self.transposed = transposed
        # Caches shared by an operator and its transpose: responses, step bounds.
        self._shared = {} if _shared is None else _shared

    # -- cached pieces ----------------------------------------------------------------------------
    def _responses(self) -> dict[str, torch.Tensor]:
        """Frequency responses of A, B, U, computed once."""
        if "responses" not in self._shared:
            size = self.state_shape[1:]
            w = self.weights
            self._shared["responses"] = {
                "A": frequency_response(w.A, size),
                "B": frequency_response(w.B, size),
                "U": frequency_response(w.U, size),
            }
        return self._shared["responses"]

    def _translation_invariant(self) -> FrequencyMap:
        """The translation-invariant part of H (or Hᵀ) as a :class:`FrequencyMap`.

        ``½(AᵀA + mI) ± (B − Bᵀ)``, plus ``½γ⁻¹ΛUUᵀΛ`` when Λ is constant over pixels (then Λ
        commutes with the Fourier transform).
        """
        key = "invariant_t" if self.transposed else "invariant"
        if key not in self._shared:
            w = self.weights
            r = self._responses()
            a, b = r["A"], r["B"]
            eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            skew = b - b.mH
            matrix = 0.5 * (a.mH @ a + w.margin * eye) + (-skew if self.transposed else skew)
            if w.inv_gamma is not None and w.channelwise_metric:
                lam_u = w.lam.reshape(-1, 1).to(a.dtype) * r["U"]
                matrix = matrix + (0.5 * w.inv_gamma) * (lam_u @ lam_u.mH)
            self._shared[key] = FrequencyMap(matrix, self.state_shape[1:])
        return self._shared[key]

    # -- the operator interface -------------------------------------------------------------------
    def _h(self, z: torch.Tensor) -> torch.Tensor:
        """H z, or Hᵀ z for the transposed operator (the γ terms are symmetric)."""
        w = self.weights
        h = self._translation_invariant()(z)
        if w.inv_gamma is None:
            return h
        if not w.channelwise_metric:
            h = h + w.input_term(z)
        return h + w.output_term(z)

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """W z (or Wᵀ z) for ``z`` shaped ``(batch, C, H, W)``."""
        lam = self.weights.lam
        if self.transposed:
            return z - self._h(z / lam)
        return z - self._h(z) / lam

    def transpose(self) -> ConvOperator:
        """Wᵀ, sharing this operator's caches."""
        return ConvOperator(self.weights, self.state_shape, not self.transposed, self._shared)

    def monotonicity(self) -> tuple[float, float]:
        """(μ, L): a lower bound on the strong monotonicity and an upper bound on the Lipschitz
        constant of I − W in the Λ-metric, i.e. of ``M = Λ^{-1/2} H Λ^{-1/2}``.

        Both are provable and computed exactly per frequency; the same pair holds for Wᵀ in the
        Λ⁻¹-metric (M becomes Mᵀ). With ``Λ_lo ⪯ Λ ⪯ Λ_hi`` the per-channel extremes of Λ (equal
        to Λ for the ``identity`` and ``channels`` metrics):

        - ``sym(H) ⪰ ½(AᵀA + mI)``, so ``μ ≥ min_ω λ_min(Λ_hi^{-1/2} ½(Â(ω)ᴴÂ(ω) + mI) Λ_hi^{-1/2})``;
        - ``‖M‖ ≤ ‖Λ_lo^{-1/2}(½AᵀA + ½mI + B − Bᵀ)Λ_lo^{-1/2}‖ + ½γ⁻¹‖Λ_hi^{1/2}U‖² +
          ½γ⁻¹‖W_oΛ^{-1/2}‖²``, the first two per frequency, the last exactly (average pooling of
          Λ^{-1/2}z is a diagonal scaling of a map with orthonormal rows).
        """
        if "mu_L" not in self._shared:
            self._shared["mu_L"] = self._bounds()
        return self._shared["mu_L"]

    def _bounds(self) -> tuple[float, float]:
        w = self.weights
        r = self._responses()
        c, h, wd = self.state_shape
        lam = w.lam.double().expand(c, h, wd)
        lam_lo, lam_hi = lam.amin(dim=(1, 2)), lam.amax(dim=(1, 2))
        a, b, u = (r[k].to(torch.complex128) for k in ("A", "B", "U"))
        eye = torch.eye(c, dtype=a.dtype, device=a.device)
        s_hi = lam_hi.rsqrt().to(a.dtype)
        gram = 0.5 * (a.mH @ a + w.margin * eye)
        mu = torch.linalg.eigvalsh(s_hi[:, None] * gram * s_hi[None, :]).amin()
        s_lo = lam_lo.rsqrt().to(a.dtype)
        invariant = gram + b - b.mH
        lipschitz = torch.linalg.matrix_norm(s_lo[:, None] * invariant * s_lo[None, :], ord=2).amax()
        if w.inv_gamma is not None:
            inv_gamma = float(w.inv_gamma)
            scaled_u = lam_hi.sqrt().to(a.dtype)[:, None] * u
            input_norm = torch.linalg.matrix_norm(scaled_u, ord=2).amax()
            pool = w.pool
            window = F.avg_pool2d(lam.reciprocal()[None], pool)[0] if pool > 1 else lam.reciprocal()
            readout = w.readout.double() * (window.sqrt() / pool).flatten()[None, :]
            output_norm = torch.linalg.matrix_norm(readout, ord=2)
            lipschitz = lipschitz + 0.5 * inv_gamma * (input_norm**2 + output_norm**2)
        return float(mu), float(lipschitz)

    def forward_backward_step(self) -> float:
        """α = μ / L² from :meth:`monotonicity`: provably convergent, contracting by
        √(1 − μ²/L²) per step in the Λ-metric."""
        mu, lipschitz = self.monotonicity()
        return mu / lipschitz**2

    def forward_backward_contraction(self) -> tuple[float, float]:
        """(α, ρ) = (μ/L², √(1 − μ²/L²)) from :meth:`monotonicity`: the step and its proven
        contraction factor in the Λ-metric (Λ⁻¹ for Wᵀ)."""
        mu, lipschitz = self.monotonicity()
        return mu / lipschitz**2, math.sqrt(max(0.0, 1.0 - (mu / lipschitz) ** 2))

    def metric_weights(self) -> torch.Tensor:
        """Diagonal of the metric in which forward-backward contracts, broadcastable to the state:
        Λ, or Λ⁻¹ for Wᵀ."""
        lam = self.weights.lam
        return 1.0 / lam if self.transposed else lam

    def resolvent(self, alpha: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """None: the metric Λ breaks the Fourier diagonalisation, so there is no cheap inverse."""
        return None
