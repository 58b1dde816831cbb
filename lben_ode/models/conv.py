"""The convolutional Lipschitz-bounded equilibrium network (DESIGN §4)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..activations import Activation
from ..errors import ConfigurationError, unknown_name
from ..solvers.base import Solver
from ..solvers.problem import RESOLVENT
from ..validation import check_count, check_margin, check_non_negative
from .base import EquilibriumModel, ExplicitWeights, ForwardParts, register_gamma
from .circular import circular_conv
from .conv_operator import ConvOperator, ConvWeights
from .dense import linear_init

#: Structures of the metric Λ (see :class:`ConvLBEN`).
METRICS = ("full", "channels", "image", "identity")

#: Largest state or input size (entries) that :meth:`ConvLBEN.explicit_weights` materialises.
MAX_EXPLICIT_SIZE = 4096


def _check_image_size(image_size: Any) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_size)
    ):
        raise ConfigurationError(f"image_size must be a positive int or a pair (H, W) of them, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _kernel_init(out_channels: int, in_channels: int, kernel_size: int, scale: float = 1.0) -> torch.Tensor:
    """Uniform(±scale/√(k² · max(in, out))).

    For in = out this is ``nn.Conv2d``'s default scale. Scaling by the larger channel count keeps the
    input map U's gain near 1 when it widens few input channels to many: its γ⁻¹ΛUUᵀΛ term in H
    would otherwise dominate H's norm and slow the solvers.
    """
    bound = scale / math.sqrt(kernel_size * kernel_size * max(in_channels, out_channels))
    return torch.empty(out_channels, in_channels, kernel_size, kernel_size).uniform_(-bound, bound)


class ConvLBEN(EquilibriumModel):
    """A convolutional LBEN on images, γ-Lipschitz in ℓ2 by construction.

    ``z = σ(W z + U x + b_z)``, ``y = W_o z + b_y`` with the state z an image ``(C, H, W)``: U is a
    circular convolution from the input channels, ``W_o z = R · avg_pool(z, pool)`` with a linear
    readout R, b_z is one bias per channel, and W is built from circular convolutions A, B and the
    diagonal metric Λ = diag(exp d) as

        H = ½(γ⁻¹ W_oᵀW_o + γ⁻¹ ΛUUᵀΛ + AᵀA + m I) + B − Bᵀ,    W = I − Λ⁻¹H,

    so that ``2Λ − ΛW − WᵀΛ − γ⁻¹W_oᵀW_o − γ⁻¹ΛUUᵀΛ = AᵀA + mI ≻ 0`` for every parameter value:
    the network is well-posed and x ↦ y is γ-Lipschitz (in the units of x). W is applied without
    forming a matrix; the solvers get a :class:`~lben_ode.models.conv_operator.ConvOperator`.

    The metric has no cheap inverse ``(I + α(I − W))⁻¹``, so Peaceman-Rachford is refused. The
    default is Anderson-accelerated fixed-point iteration (``"anderson"``), measured tens of times
    faster here than forward-backward (``"fb"``, whose step μ/L² comes from provable bounds computed
    per frequency and is small); the neural ODE (``"ode"``) works too.

    Args:
        in_channels: channels of the input images.
        channels: channels C of the state z.
        image_size: H (square images) or (H, W); inputs are ``(batch, in_channels, H, W)``.
        out_features: size of y (number of logits).
        kernel_size: odd size k of the kernels of A, B and U, at most min(H, W).
        pool: average-pooling window (kernel = stride) before the readout; must divide H and W.
        gamma: the Lipschitz bound γ > 0, or None for the unconstrained model (well-posed only).
        metric: Λ's structure: ``"full"`` (one weight per channel and pixel), ``"channels"`` (one
            per channel), ``"image"`` (one per pixel) or ``"identity"`` (Λ = I, the monDEQ case).
        activation: name of a monotone activation with slope in [0, 1] or an Activation.
        margin: m > 0, keeps the conditions strict; larger m means faster solves, less freedom.
        learn_gamma: learn γ through log γ (the bound then changes during training).
        kernel_scale: initial scale of A and B relative to ``nn.Conv2d``'s default; smaller kernels
            start with a better-conditioned W and so with faster solves.
        solver: registry name of the equilibrium solver (see ``lben_ode.solvers.available()``).
        **solver_options: options of that solver (``tol``, ``max_iter``, ``alpha``, …).
    """

    OPERATOR_PROVIDES: ClassVar[frozenset[str]] = ConvOperator.PROVIDES
    MISSING_CAPABILITY_NOTES: ClassVar[dict[str, str]] = {
        RESOLVENT: "a convolutional model has no cheap inverse: its metric Λ breaks the Fourier diagonalisation"
    }

    def __init__(
        self,
        in_channels: int,
        channels: int,
        image_size: int | tuple[int, int],
        out_features: int,
        kernel_size: int = 3,
        pool: int = 1,
        gamma: float | None = 1.0,
        metric: str = "full",
        activation: str | Activation = "relu",
        margin: float = 1.0,
        learn_gamma: bool = False,
        kernel_scale: float = 0.5,
        solver: str | Solver = "anderson",
        **solver_options: Any,
    ) -> None:
        super().__init__(activation, solver, solver_options)
        self.in_channels = check_count("in_channels", in_channels)
        self.channels = check_count("channels", channels)
        self.out_features = check_count("out_features", out_features)
        height, width = self.image_size = _check_image_size(image_size)
        self.kernel_size = check_count("kernel_size", kernel_size)
        if kernel_size % 2 == 0 or kernel_size > min(height, width):
            raise ConfigurationError(
                f"kernel_size must be odd (circular 'same' convolutions) and at most the image side "
                f"{min(height, width)}, got {kernel_size}"
            )
        self.pool = check_count("pool", pool)
        if height % pool or width % pool:
            raise ConfigurationError(f"pool={pool} must divide the image size {height}×{width}")
        if metric not in METRICS:
            raise unknown_name("metric", metric, METRICS)
        register_gamma(self, gamma, learn_gamma)
        check_non_negative("kernel_scale", kernel_scale)
        self.margin = check_margin(margin)
        self.metric = metric
        self.input_shape = (in_channels, height, width)
        self.state_shape = (channels, height, width)

        self.A = nn.Parameter(_kernel_init(channels, channels, kernel_size, kernel_scale))
        self.B = nn.Parameter(_kernel_init(channels, channels, kernel_size, kernel_scale))
        self.U = nn.Parameter(_kernel_init(channels, in_channels, kernel_size))
        self.b_z = nn.Parameter(torch.zeros(channels))
        features = channels * (height // pool) * (width // pool)
        self.W_o = nn.Parameter(linear_init(out_features, features))
        self.b_y = nn.Parameter(torch.zeros(out_features))
        metric_shape = {
            "full": (channels, height, width),
            "channels": (channels, 1, 1),
            "image": (1, height, width),
            "identity": (1, 1, 1),
        }[metric]
        if metric == "identity":
            self.register_buffer("log_lambda", torch.zeros(metric_shape))
        else:
            self.log_lambda = nn.Parameter(torch.zeros(metric_shape))

    @property
    def gamma(self) -> torch.Tensor | None:
        """γ as a tensor (None when unconstrained)."""
        return None if self.log_gamma is None else self.log_gamma.exp()

    def conv_weights(self) -> ConvWeights:
        """The tensors that define W and the output map, with autograd graph."""
        return ConvWeights(
            A=self.A,
            B=self.B,
            U=self.U,
            readout=self.W_o,
            lam=self.log_lambda.exp(),
            inv_gamma=None if self.log_gamma is None else torch.exp(-self.log_gamma),
            margin=self.margin,
            pool=self.pool,
        )

    def forward_parts(self) -> ForwardParts:
        weights = self.conv_weights()
        operator = self.cached_operator(
            lambda: ConvOperator(weights.detached(), self.state_shape),
            (weights.A, weights.B, weights.U, weights.readout, weights.lam, weights.inv_gamma),
        )
        U, b_z, b_y = self.U, self.b_z, self.b_y
        return ForwardParts(
            apply_W=weights.apply_w,
            injection=lambda x: circular_conv(x, U) + b_z[:, None, None],
            output=lambda z: weights.output_map(z) + b_y,
            operator=operator,
        )

    def explicit_weights(self) -> ExplicitWeights:
        """The explicit network with states and inputs flattened in (C, H, W) order.

        Shapes: W ``(n, n)`` with n = C·H·W, U ``(n, n_x)`` with n_x = C_in·H·W, b_z ``(n,)`` (the
        channel biases repeated over pixels), W_o ``(n_y, n)``, b_y ``(n_y,)``, lam ``(n,)``.

        Raises:
            ConfigurationError: if n or n_x exceeds 4096 (the dense matrices would be too large).
        """
        n = math.prod(self.state_shape)
        n_x = math.prod(self.input_shape)
        if n > MAX_EXPLICIT_SIZE or n_x > MAX_EXPLICIT_SIZE:
            raise ConfigurationError(
                f"explicit_weights materialises dense matrices only for states and inputs of at most "
                f"{MAX_EXPLICIT_SIZE} entries; this model has n = {n} and n_x = {n_x}"
            )
        with torch.no_grad():
            weights = self.conv_weights()
            eye_z = torch.eye(n, dtype=self.A.dtype, device=self.A.device).reshape(n, *self.state_shape)
            eye_x = torch.eye(n_x, dtype=self.A.dtype, device=self.A.device).reshape(n_x, *self.input_shape)
            # Applying a map to the basis vectors gives its columns as rows.
            W = weights.apply_w(eye_z).reshape(n, n).T
            U = circular_conv(eye_x, self.U).reshape(n_x, n).T
            W_o = weights.output_map(eye_z).T
            b_z = self.b_z[:, None].expand(self.channels, n // self.channels).reshape(n)
            lam = weights.lam.expand(self.state_shape).reshape(n)
            return ExplicitWeights(
                W.clone(), U.clone(), b_z.clone(), W_o.clone(), self.b_y.detach().clone(), lam.clone()
            )

    def lipschitz_bound(self) -> float | None:
        return None if self.log_gamma is None else float(self.gamma)

    def extra_repr(self) -> str:
        g = self.lipschitz_bound()
        return (
            f"in_channels={self.in_channels}, channels={self.channels}, image_size={self.image_size}, "
            f"out_features={self.out_features}, kernel_size={self.kernel_size}, pool={self.pool}, "
            f"gamma={'None' if g is None else f'{g:.4g}'}, metric={self.metric!r}, "
            f"activation={self.activation!r}, margin={self.margin}, solver={self.solver!r}"
        )
