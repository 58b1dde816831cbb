"""Input normalisation, kept next to the model so bounds can be reported in raw units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigurationError, ShapeError


@dataclass(frozen=True)
class Normalization:
    """Affine input normalisation ``x_model = (x_raw - mean) / std``, per channel.

    A model that is γ-Lipschitz in its own input units is ``γ / min(std)``-Lipschitz in raw units,
    because the normalisation stretches distances by at most ``1 / min(std)``.

    Ill-formed values raise :class:`~lben_ode.errors.ConfigurationError` (a ``ValueError``); inputs
    whose channels do not match raise :class:`~lben_ode.errors.ShapeError`.

    Attributes:
        mean: per-channel mean, in raw units (one value for grey-scale or flat inputs).
        std: per-channel standard deviation, in raw units; every entry must be positive.
        raw_min: smallest valid raw input value (the valid input box), e.g. 0.0 for pixels.
        raw_max: largest valid raw input value, e.g. 1.0 for pixels.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    raw_min: float = 0.0
    raw_max: float = 1.0

    def __post_init__(self) -> None:
        """Refuse ill-formed values with a :class:`~lben_ode.errors.ConfigurationError` echoing them."""
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)):
                raise ConfigurationError(f"Normalization {name} must be a tuple of numbers, got {values!r}")
            if not all(_is_finite_number(v) for v in values):
                raise ConfigurationError(f"Normalization {name} must hold finite numbers, got {values!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigurationError(
                f"Normalization needs one mean per std, got {len(self.mean)} means {self.mean!r} and "
                f"{len(self.std)} stds {self.std!r}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigurationError(f"Normalization std must be positive, got {self.std}")
        if not (_is_finite_number(self.raw_min) and _is_finite_number(self.raw_max)):
            raise ConfigurationError(
                f"Normalization raw_min and raw_max must be finite numbers, got {self.raw_min!r}, {self.raw_max!r}"
            )
        if not self.raw_min < self.raw_max:
            raise ConfigurationError(f"Normalization needs raw_min < raw_max, got {self.raw_min}, {self.raw_max}")

    @property
    def raw_scale(self) -> float:
        """Smallest std: a distance ε in raw units is at most ε / raw_scale in model units."""
        return min(self.std)

    def _broadcast(self, values: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(values, dtype=x.dtype, device=x.device)
        if len(values) == 1:
            return t[0]
        if x.dim() < 2 or x.shape[1] != len(values):
            raise ShapeError(
                f"per-channel normalisation with {len(values)} channels needs inputs shaped "
                f"(batch, {len(values)}, ...), got {tuple(x.shape)}"
            )
        # Channels sit on axis 1: broadcast over the trailing spatial axes.
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def to_model(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Map raw inputs (any shape with channels on axis 1, or flat) to model units."""
        return (x_raw - self._broadcast(self.mean, x_raw)) / self._broadcast(self.std, x_raw)

    def to_raw(self, x_model: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_model`."""
        return x_model * self._broadcast(self.std, x_model) + self._broadcast(self.mean, x_model)

    def bound_in_raw_units(self, gamma: float) -> float:
        """Lipschitz bound in raw-input units for a model that is ``gamma``-Lipschitz in model units."""
        return gamma / self.raw_scale


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


IDENTITY = Normalization()
