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
    #: σ is piecewise linear: on each piece (an "active set") σ(v) is affine with slope σ'(v), so
    #: σ(v + h) = σ(v) + σ'(v) ⊙ h while v + h stays on v's pieces. The semismooth Newton solver
    #: needs this: its step is then the exact equilibrium of the current active set.
    piecewise_linear: bool = False

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

    def reflected_prox(
        self, a: torch.Tensor, alpha: float, shift: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``2 prox_{αf}(a) − a + shift``: the reflected proximal operator, shifted (one
        Peaceman-Rachford half-step). ``out``, a tensor of a's shape that is no longer needed, may
        receive the result (saving an allocation); subclasses with a closed form fuse the operations."""
        return torch.lerp(a, self.prox(a, alpha), 2.0).add_(shift)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(Activation):
    """max(v, 0); its prox is itself for every α (f is the indicator of z ≥ 0)."""

    name = "relu"
    piecewise_linear = True

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return (v > 0).to(v.dtype)

    def prox(self, a: torch.Tensor, alpha: float) -> torch.Tensor:
        return torch.relu(a)

    def reflected_prox(
        self, a: torch.Tensor, alpha: float, shift: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        # 2 max(a, 0) − a = |a|.
        return torch.abs(a, out=out).add_(shift)


class LeakyReLU(Activation):
    """v for v ≥ 0, ``slope · v`` otherwise, with slope in [0, 1]; closed-form prox."""

    name = "leaky_relu"
    piecewise_linear = True

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

    def reflected_prox(
        self, a: torch.Tensor, alpha: float, shift: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        # prox is a on a ≥ 0 and c·a below, so 2 prox(a) − a is a leaky relu of slope 2c − 1 ∈ [−1, 1].
        s = self.negative_slope
        c = 0.0 if s == 0.0 else 1 / (1 + alpha * (1 / s - 1))
        return F.leaky_relu(a, 2 * c - 1).add_(shift)

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
    #: One piece: σ'(v) = d everywhere, so a Newton step solves the (linear) equilibrium exactly.
    piecewise_linear = True

    def __init__(self, slopes: torch.Tensor) -> None:
        self.slopes = slopes
        # prox is called once per solver iteration with the same α: its factors are kept.
        self._factor_cache: tuple[float, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.slopes * v

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return self.slopes.expand_as(v)

    def prox(self, a: torch.Tensor, alpha: float) -> torch.Tensor:
        return a * self._factors(alpha)[0]

    def reflected_prox(
        self, a: torch.Tensor, alpha: float, shift: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.addcmul(shift, a, self._factors(alpha)[1], out=out)

    def _factors(self, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The prox factor ``d / (d + α(1 − d))`` and its reflection ``2·factor − 1`` for α."""
        if self._factor_cache is None or self._factor_cache[0] != alpha:
            d = self.slopes
            # z + α(z/d − z) = a  ⇒  z = a d / (d + α(1 − d)); d = 0 gives z = 0.
            factor = d / (d + alpha * (1 - d))
            self._factor_cache = (alpha, factor, 2 * factor - 1)
        return self._factor_cache[1], self._factor_cache[2]


_ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (ReLU, LeakyReLU, Tanh, Sigmoid, Softplus)
}


# Classes whose slope restriction is proven by their definition (LinearSlopes checks nothing, but
# it is built internally from σ' values for the adjoint solve, never by users).
_TRUSTED: frozenset[type[Activation]] = frozenset((*_ACTIVATIONS.values(), LinearSlopes))


def available() -> list[str]:
    """Names accepted by :func:`get_activation`."""
    return sorted(_ACTIVATIONS)


def get_activation(activation: str | Activation, **kwargs: float) -> Activation:
    """Return the activation for a name (``"relu"``, ``"leaky_relu"``, …) or pass one through.

    An :class:`Activation` instance of a class other than the built-in ones is probed on a grid
    (:func:`check_slope_restricted`): the Lipschitz bound γ and well-posedness rely on σ being
    monotone with slope at most 1, which its class cannot prove by declaration alone.

    Raises:
        ActivationError: for an unknown name, a torch module that is not one of the supported
            monotone slope-restricted activations, a leaky slope outside [0, 1], or a custom
            activation that the probe finds decreasing, steeper than 1 or not finite.
    """
    if isinstance(activation, Activation):
        if kwargs:
            raise ActivationError(f"options {sorted(kwargs)} cannot be applied to an Activation instance")
        if type(activation) not in _TRUSTED:
            check_slope_restricted(activation)
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


#: The probe grid: dense near 0, where activations bend, and reaching far into both tails.
_PROBE_GRID = torch.cat([torch.arange(-2400, 2401, dtype=torch.float64) / 200,
                         torch.tensor([-1e4, -1e3, -100.0, -50.0, -25.0, 25.0, 50.0, 100.0, 1e3, 1e4],
                                      dtype=torch.float64)]).unique()

# Slack for rounding in the probed differences (activations computed in float32 round at ~1e-7).
_PROBE_SLACK = 1e-4


def check_slope_restricted(activation: Activation) -> None:
    """Probe σ and σ' on a grid and refuse an activation that is not monotone with slope in [0, 1].

    Checks, on points from −10⁴ to 10⁴ (dense on [−12, 12]) in float64: σ and σ' are finite;
    every difference quotient ``(σ(b) − σ(a)) / (b − a)`` of neighbouring points lies in
    ``[0, 1]``; and σ' lies in ``[0, 1]``, each up to a slack of 1e-4 for rounding. A grid cannot
    prove the property between its points, but it catches the usual mistakes (sin, 5·tanh,
    identity-plus-something).

    Raises:
        ActivationError: naming the activation, what failed, and where.
    """
    name = type(activation).__name__
    v = _PROBE_GRID
    try:
        with torch.no_grad():
            y = torch.as_tensor(activation(v.clone()), dtype=torch.float64)
            d = torch.as_tensor(activation.derivative(v.clone()), dtype=torch.float64)
    except Exception as exc:  # a custom σ may fail on float64 CPU tensors in any way
        raise ActivationError(f"cannot probe activation {name} on float64 CPU tensors: {exc}") from exc
    if y.shape != v.shape or d.shape != v.shape:
        raise ActivationError(f"activation {name} must act elementwise: {tuple(v.shape)} inputs gave "
                              f"σ {tuple(y.shape)} and σ' {tuple(d.shape)}")
    if not bool(torch.isfinite(y).all() and torch.isfinite(d).all()):
        bad = v[~(torch.isfinite(y) & torch.isfinite(d))][0]
        raise ActivationError(f"activation {name} is not finite at v = {float(bad):g}")
    slope = (y[1:] - y[:-1]) / (v[1:] - v[:-1])
    rule = "an LBEN needs a monotone activation with slope in [0, 1], which its Lipschitz bound relies on"
    worst = int(slope.argmin())
    if slope[worst] < -_PROBE_SLACK:
        raise ActivationError(
            f"activation {name} is not monotone: it decreases between v = {float(v[worst]):.4g} and "
            f"{float(v[worst + 1]):.4g} (slope {float(slope[worst]):.3g}); {rule}"
        )
    worst = int(slope.argmax())
    if slope[worst] > 1 + _PROBE_SLACK:
        raise ActivationError(
            f"activation {name} is steeper than 1: slope {float(slope[worst]):.4g} between v = "
            f"{float(v[worst]):.4g} and {float(v[worst + 1]):.4g}; {rule}"
        )
    excess = torch.maximum(-d, d - 1)  # > 0 where σ' leaves [0, 1]
    at = int(excess.argmax())
    if excess[at] > _PROBE_SLACK:
        raise ActivationError(
            f"activation {name}'s derivative is {float(d[at]):.4g} at v = {float(v[at]):.4g}, outside [0, 1]; {rule}"
        )


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
