"""Shared plumbing of the robustness evaluations: running a model with its convergence, units, batching, progress.

A certificate, a failed attack or a Lipschitz lower bound says something about the model only where
its equilibrium was actually found. :func:`run_model` is the one place that runs a model for these
evaluations and returns, with the logits, which samples' forward solves converged (from
``solver_stats["forward"].converged`` of every :class:`~lben_ode.models.base.EquilibriumModel`
inside the model, so wrappers need not forward anything); modules without an equilibrium solve are
exact maps and always count as converged. :func:`require_converged` turns a sample that did not
converge into a :class:`~lben_ode.errors.ConvergenceError` unless the caller allowed it, in which
case such samples count as not certified, not robust and outside every lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from ..errors import ConfigurationError, ConvergenceError, ShapeError
from ..models.base import EquilibriumModel
from ..normalization import Normalization
from ..validation import check_count, check_positive

T = TypeVar("T")


@dataclass(frozen=True)
class ModelOutput:
    """What :func:`run_model` returns.

    Attributes:
        logits: the model's outputs ``(batch, ...)``, with autograd graph when gradients are on.
        converged: ``(batch,)`` bool on the outputs' device: every equilibrium solve of that sample
            converged (True for modules with no equilibrium solve).
    """

    logits: torch.Tensor
    converged: torch.Tensor


def _equilibrium_modules(model: nn.Module) -> list[EquilibriumModel]:
    return [m for m in model.modules() if isinstance(m, EquilibriumModel)]


def run_model(model: nn.Module, x: torch.Tensor) -> ModelOutput:
    """Run ``model`` on ``x`` and say which samples' forward equilibrium solves converged.

    Earlier statistics are cleared first, so an equilibrium module that this call does not use is
    not read. Gradients, eval mode and no-grad are the caller's.

    Raises:
        ShapeError: if an equilibrium module solved for a different batch than ``x`` (a model that
            splits or repeats its batch: its per-sample convergence cannot be attributed).
    """
    for module in _equilibrium_modules(model):
        module.solver_stats = {}
    logits = model(x)
    return ModelOutput(logits, solve_converged(model, x.shape[0], "forward", logits.device))


def solve_converged(
    model: nn.Module, batch: int, direction: str = "forward", device: torch.device | None = None
) -> torch.Tensor:
    """``(batch,)`` bool: whether each sample's last ``direction`` solve converged in every equilibrium module.

    ``direction`` is ``"forward"`` (the equilibrium) or ``"backward"`` (the adjoint solve of the
    implicit gradient). Modules without those statistics (plain ``nn.Module`` s, or an equilibrium
    module not run) do not restrict the mask.
    """
    converged = torch.ones(batch, dtype=torch.bool, device=device)
    for module in _equilibrium_modules(model):
        stats = module.solver_stats.get(direction)
        if stats is None:
            continue
        if tuple(stats.converged.shape) != (batch,):
            raise ShapeError(
                f"{type(module).__name__} solved for {tuple(stats.converged.shape)} samples in a batch of "
                f"{batch}: per-sample convergence cannot be attributed to the inputs"
            )
        converged = converged & stats.converged.to(converged.device)
    return converged


def require_converged(converged: torch.Tensor, what: str, allow_unconverged: bool, unit: str = "samples") -> None:
    """Raise unless every sample converged or the caller allowed unconverged samples.

    Args:
        converged: ``(n,)`` bool, per evaluated sample (or pair, or attack run).
        what: what was evaluated, for the message (e.g. ``"certify"``).
        unit: what one entry of ``converged`` is, for the message.
        allow_unconverged: when True, return without checking (the caller counts those samples as
            not certified / not robust / outside the bound).

    Raises:
        ConvergenceError: naming how many samples did not converge and the two ways out.
    """
    if allow_unconverged:
        return
    n_bad = int((~converged).sum())  # one host sync per evaluation, not per step
    if n_bad:
        raise ConvergenceError(
            f"{what}: the equilibrium solve did not converge for {n_bad} of {converged.numel()} {unit}, and "
            "a certificate or bound from an unconverged solve is not valid; give the solver a larger "
            "max_iter or another solver (model.set_solver(...)), or pass allow_unconverged=True to count "
            "those samples as not certified and not robust"
        )


def converged_fraction(converged: torch.Tensor) -> float:
    """Fraction of True entries of a bool mask, as a Python float (1.0 for an empty mask)."""
    return float(converged.double().mean()) if converged.numel() else 1.0

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
