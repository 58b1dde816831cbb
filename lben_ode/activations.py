"""Activations that are monotone and slope-restricted in [0, 1], with their proximal operators.

Each such σ is the proximal operator of a convex function f (σ = prox_f), which is what the
operator-splitting solvers need: they call ``prox(a, alpha)`` = prox_{αf}(a), the solution z of
``z + α(σ⁻¹(z) − z) = a``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch.nn import functional as F

from .errors import ActivationError, unknown_name


class Activation(ABC):
    """An elementwise activation σ, monotone with slope in [0, 1], and prox_{αf} for σ = prox_f."""

    name: str = ""

    @abstractmethod
    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """σ(v), elementwise."""

    @abstractmethod
    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        """σ'(v), elementwise, in [0, 1] (a valid choice of the subgradient at kinks)."""

    def prox(self, a: torch.Tensor, alpha: float) -> torch.Tensor:
        """prox_{αf}(a): the z with ``(1 − α) z + α σ⁻¹(z) = a``.

        Solved in the pre-activation variable v = σ⁻¹(z): ``g(v) = (1 − α) σ(v) + α v − a`` is
        increasing with slope in [min(α, 1), max(α, 1)], so a safeguarded Newton iteration on a
        bracket converges; subclasses with closed forms override this.
        """
        if alpha == 1.0:
            return self(a)
        lo_slope, hi_slope = min(alpha, 1.0), max(alpha, 1.0)
        v = a.clone()
        g = (1 - alpha) * self(v) + alpha * v - a
        # |v − v*| ≤ |g(v)| / min slope gives a bracket containing the root.
        width = g.abs() / lo_slope
        lo, hi = v - width, v + width
        for _ in range(20):
            g = (1 - alpha) * self(v) + alpha * v - a
            lo = torch.where(g < 0, v, lo)
            hi = torch.where(g > 0, v, hi)
            slope = ((1 - alpha) * self.derivative(v) + alpha).clamp(lo_slope, hi_slope)
            newton = v - g / slope
            # A Newton step that rounds to v itself means v is the root to working precision; the
            # bracket test alone would reject it (v is an end of the bracket) and bisect away.
            inside = ((newton > lo) & (newton < hi)) | (newton == v)
            v = torch.where(inside, newton, 0.5 * (lo + hi))
        return self(v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(Activation):
    """max(v, 0); its prox is itself for every α (f is the indicator of z ≥ 0)."""

    name = "relu"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return (v > 0).to(v.dtype)

    def prox(self, a: torch.Tensor, alpha: float) -> torch.Tensor:
        return torch.relu(a)


class LeakyReLU(Activation):
    """v for v ≥ 0, ``slope · v`` otherwise, with slope in [0, 1]; closed-form prox."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        slope = float(negative_slope)
        if not (0.0 <= slope <= 1.0) or math.isnan(slope):
            raise ActivationError(
                f"leaky_relu negative_slope must be in [0, 1] for a monotone activation with slope "
                f"at most 1, got {negative_slope}"
            )
        self.negative_slope = slope

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(v, self.negative_slope)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return torch.where(v > 0, torch.ones_like(v), torch.full_like(v, self.negative_slope))

    def prox(self, a: torch.Tensor, alpha: float) -> torch.Tensor:
        s = self.negative_slope
        if s == 0.0:
            return torch.relu(a)
        # On z < 0: z + α(z/s − z) = a.
        return torch.where(a >= 0, a, a / (1 + alpha * (1 / s - 1)))

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class Tanh(Activation):
    """tanh(v), slope in (0, 1]."""

    name = "tanh"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return torch.tanh(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return 1 - torch.tanh(v) ** 2


class Sigmoid(Activation):
    """1 / (1 + e^{−v}), slope in (0, 1/4]."""

    name = "sigmoid"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(v)
        return s * (1 - s)


class Softplus(Activation):
    """log(1 + e^v), slope in (0, 1)."""

    name = "softplus"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return F.softplus(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v)


class LinearSlopes(Activation):
    """v ↦ d ⊙ v with fixed per-element slopes d ∈ [0, 1].

    The adjoint (backward) equilibrium ``u = D(Wᵀu + g)`` is an equilibrium with this activation,
    so the same solvers compute implicit gradients.
    """

    name = "linear_slopes"

    def __init__(self, slopes: torch.Tensor) -> None:
        self.slopes = slopes

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.slopes * v

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return self.slopes.expand_as(v)

    def prox(self, a: torch.Tensor, alpha: float) -> torch.Tensor:
        d = self.slopes
        # z + α(z/d − z) = a  ⇒  z = a d / (d + α(1 − d)); d = 0 gives z = 0.
        return a * d / (d + alpha * (1 - d))


_ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (ReLU, LeakyReLU, Tanh, Sigmoid, Softplus)
}


def available() -> list[str]:
    """Names accepted by :func:`get_activation`."""
    return sorted(_ACTIVATIONS)


def get_activation(activation: str | Activation, **kwargs: float) -> Activation:
    """Return the activation for a name (``"relu"``, ``"leaky_relu"``, …) or pass one through.

    Raises:
        ActivationError: for an unknown name, a torch module that is not one of the supported
            monotone slope-restricted activations, or a leaky slope outside [0, 1].
    """
    if isinstance(activation, Activation):
        if kwargs:
            raise ActivationError(f"options {sorted(kwargs)} cannot be applied to an Activation instance")
        return activation
    if isinstance(activation, torch.nn.Module):
        return _from_module(activation)
    if not isinstance(activation, str):
        raise ActivationError(
            f"activation must be a name or an Activation, got {type(activation).__name__}; valid "
            f"names are: {', '.join(available())}"
        )
    if activation not in _ACTIVATIONS:
        err = unknown_name("activation", activation, available())
        raise ActivationError(
            f"{err} (an LBEN needs an activation that is monotone and slope-restricted in [0, 1])"
        )
    cls = _ACTIVATIONS[activation]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ActivationError(f"bad options {sorted(kwargs)} for activation {activation!r}: {exc}") from exc


def _from_module(module: torch.nn.Module) -> Activation:
    """Map a torch activation module to ours, refusing anything not slope-restricted in [0, 1]."""
    if isinstance(module, torch.nn.ReLU):
        return ReLU()
    if isinstance(module, torch.nn.LeakyReLU):
        return LeakyReLU(module.negative_slope)
    if isinstance(module, torch.nn.Tanh):
        return Tanh()
    if isinstance(module, torch.nn.Sigmoid):
        return Sigmoid()
    if isinstance(module, torch.nn.Softplus):
        if module.beta != 1 or module.threshold != 20:
            raise ActivationError("only nn.Softplus() with beta=1 and threshold=20 is supported")
        return Softplus()
    raise ActivationError(
        f"{type(module).__name__} is not a supported activation; an LBEN needs a monotone activation "
        f"with slope in [0, 1]: {', '.join(available())}"
    )
