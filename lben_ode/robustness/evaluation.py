"""Shared plumbing of the robustness evaluations: argument checks, evaluation mode, batching, progress."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import ConfigurationError, NonFiniteInputError, ShapeError
from ..normalization import Normalization

T = TypeVar("T")

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_inputs(x: torch.Tensor, labels: torch.Tensor | None = None, what: str = "x") -> None:
    """Refuse a non-float, empty or non-finite input batch, and labels that do not match it."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ShapeError(f"{what} must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ShapeError(f"{what} must be a non-empty batch shaped (batch, ...), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteInputError(f"{what} contains NaN or infinity")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dtype not in _INTEGER_DTYPES:
            raise ShapeError("labels must be an integer torch.Tensor of class indices")
        if labels.shape != x.shape[:1]:
            raise ShapeError(f"labels must be shaped ({x.shape[0]},), got {tuple(labels.shape)}")


def check_logits(logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Refuse model outputs that are not ``(batch, classes ≥ 2)`` logits, and labels out of range."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ShapeError(f"the model must output logits shaped (batch, classes ≥ 2), got {tuple(logits.shape)}")
    if labels is not None and bool(((labels < 0) | (labels >= logits.shape[1])).any()):
        raise ShapeError(f"labels must be class indices in [0, {logits.shape[1] - 1}]")


def check_eps(eps: Sequence[float] | float) -> tuple[float, ...]:
    """The radii ε as a tuple of finite floats ≥ 0 (a single number is one radius)."""
    values = (eps,) if isinstance(eps, (int, float)) else tuple(eps)
    if not values:
        raise ConfigurationError("eps must hold at least one radius")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not (math.isfinite(e) and e >= 0):
            raise ConfigurationError(f"every eps must be a finite float ≥ 0, got {e!r}")
    return tuple(float(e) for e in values)


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """An int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """A finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be a finite float > 0, got {value!r}")
    return float(value)


def lipschitz_bound_of(model: nn.Module, lipschitz: float | None = None) -> float:
    """γ in the model's input units: ``lipschitz`` if given, else ``model.lipschitz_bound()``.

    Raises:
        ConfigurationError: if neither gives a finite bound > 0.
    """
    if lipschitz is not None:
        return check_positive("lipschitz", lipschitz)
    bound_fn = getattr(model, "lipschitz_bound", None)
    bound = bound_fn() if callable(bound_fn) else None
    if bound is None:
        raise ConfigurationError(
            f"{type(model).__name__} has no Lipschitz bound (lipschitz_bound() missing or None); "
            "certificates need one: pass lipschitz=γ if it is known"
        )
    return check_positive("model.lipschitz_bound()", float(bound))


def to_model_units(x_raw: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """What the model is fed: ``normalization.to_model(x_raw)``, or ``x_raw`` when there is none."""
    return x_raw if normalization is None else normalization.to_model(x_raw)


def input_scale(normalization: Normalization | None) -> float:
    """Raw units per model unit for ℓ2 radii (1.0 without a normalisation)."""
    return 1.0 if normalization is None else normalization.raw_scale


def units_name(normalization: Normalization | None) -> str:
    """``"raw"`` when radii are in raw-input units, ``"model"`` when in the model's input units."""
    return "model" if normalization is None else "raw"


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the duration (so samples do not interact), then restore it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device of the model's first parameter or buffer (``default`` or CPU if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return default if default is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's first floating parameter or buffer (None if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def chunks(n: int, batch_size: int | None) -> list[slice]:
    """Slices covering ``range(n)`` in pieces of at most ``batch_size`` (one piece when None)."""
    if batch_size is None:
        return [slice(0, n)]
    check_count("batch_size", batch_size)
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def with_progress(items: Iterable[T], enabled: bool, desc: str, total: int | None = None) -> Iterable[T]:
    """``items``, wrapped in a tqdm progress bar when ``enabled`` (updating it never syncs a device)."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False)
