"""Empirical lower bounds on a model's ℓ2 Lipschitz constant (DESIGN §1).

Any pair of inputs gives the lower bound ``‖y(x₁) − y(x₂)‖ / ‖x₁ − x₂‖`` and any input gives the
lower bound ``‖∂y/∂x‖₂`` (the local Jacobian's spectral norm). On an LBEN both must stay below the
certified γ up to the equilibrium solver's tolerance; their ratio to γ measures how tight γ is.
All quantities are in the model's input units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigurationError, ShapeError
from .evaluation import (
    check_count,
    check_inputs,
    check_positive,
    chunks,
    evaluation_mode,
    with_progress,
)


@dataclass(frozen=True)
class LipschitzEstimate:
    """The best lower bound found by :func:`empirical_lipschitz`, in model-input units.

    Attributes:
        value: the largest ratio ``‖y(x₁) − y(x₂)‖ / ‖x₁ − x₂‖`` found.
        x1: ``(*input_shape)`` the first point of that pair.
        x2: ``(*input_shape)`` the second point of that pair.
        pair_ratios: ``(pairs,)`` the best ratio reached from each starting pair.
    """

    value: float
    x1: torch.Tensor
    x2: torch.Tensor
    pair_ratios: torch.Tensor


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(batch,)`` tensor to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def _start_points(
    x: torch.Tensor, restarts: int, random_starts: bool, start_noise: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """First points of the start pairs, and the data scale s (RMS spread of x per coordinate).

    Per restart: every data point plus Gaussian noise of scale ``start_noise · s`` and, with
    ``random_starts``, as many points drawn from a Gaussian with the data's per-coordinate mean and
    spread.
    """
    mean = x.mean(dim=0, keepdim=True)
    spread = (x - mean).pow(2).mean(dim=0, keepdim=True).sqrt()
    s = spread.pow(2).mean().sqrt()
    # A single point (or identical points) has no spread: fall back to its magnitude, then to 1.
    fallback = x.pow(2).mean().sqrt()
    s = torch.where(s > 0, s, torch.where(fallback > 0, fallback, torch.ones_like(s)))
    spread = torch.where(spread > 0, spread, s)

    def noise(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, dtype=x.dtype, device=x.device, generator=generator)

    starts = []
    for _ in range(restarts):
        starts.append(x + start_noise * s * noise(x.shape))
        if random_starts:
            starts.append(mean + spread * noise(x.shape))
    return torch.cat(starts), s


def empirical_lipschitz(
    model: nn.Module,
    x: torch.Tensor,
    *,
    restarts: int = 2,
    steps: int = 100,
    lr: float = 0.02,
    init_distance: float = 0.05,
    min_distance: float = 1e-3,
    start_noise: float = 0.01,
    random_starts: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> LipschitzEstimate:
    """Lower-bound the ℓ2 Lipschitz constant of ``model`` by gradient ascent over input pairs.

    Maximises ``‖y(x₁) − y(x₂)‖ / ‖x₁ − x₂‖`` jointly over both points with Adam (cosine-decayed
    learning rate) from many start pairs at once: per restart, one pair near each data point and,
    with ``random_starts``, one pair from a Gaussian fitted to the data. Distances below
    ``min_distance`` are lifted to it, so that the equilibrium solver's error (≈ tol · ‖y‖) cannot
    be divided by a vanishing ‖x₁ − x₂‖. Every pair evaluated is a valid lower bound; the largest is
    returned. The loop has no host synchronisation of its own.

    Sizes are relative to the data scale: ``s`` is the RMS spread of ``x`` per coordinate and
    ``R = s·√dim`` the typical distance between data points.

    Args:
        model: any module mapping ``(batch, ...)`` inputs to outputs ``(batch, ...)``; put in eval
            mode during the search. Samples must not interact (no batch statistics).
        x: data points ``(batch, ...)`` in model-input units, used for the starts and the scale.
        restarts: rounds of start pairs (all optimised together in one batch).
        steps: ascent steps.
        lr: Adam learning rate, as a fraction of s.
        init_distance: initial ‖x₂ − x₁‖, as a fraction of R.
        min_distance: smallest ‖x₂ − x₁‖ used, as a fraction of R.
        start_noise: noise added to the data points at the start, as a fraction of s.
        random_starts: also start pairs away from the data.
        generator: random generator (on the inputs' device), for reproducibility.
        progress: show a progress bar over the steps.

    Returns:
        a :class:`LipschitzEstimate` (model-input units).
    """
    check_inputs(x)
    check_count("restarts", restarts)
    check_count("steps", steps)
    check_positive("lr", lr)
    check_positive("init_distance", init_distance)
    check_positive("min_distance", min_distance)
    if not (isinstance(start_noise, (int, float)) and math.isfinite(start_noise) and start_noise >= 0):
        raise ConfigurationError(f"start_noise must be a finite float ≥ 0, got {start_noise!r}")
    x = x.detach()
    dim = x[0].numel()
    first, s = _start_points(x, restarts, random_starts, float(start_noise), generator)
    scale = float(s)  # one host sync, before the loop: Adam needs a Python learning rate
    radius = scale * math.sqrt(dim)
    offset = torch.randn(first.shape, dtype=x.dtype, device=x.device, generator=generator)
    offset = offset * (init_distance * radius / _per_sample(_flat_norm(offset), offset).clamp_min(1e-30))
    first.requires_grad_(True)
    offset.requires_grad_(True)
    optimizer = torch.optim.Adam([first, offset], lr=lr * scale)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    floor = min_distance * radius

    best = torch.full((first.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
    best_first, best_second = first.detach().clone(), first.detach().clone()
    with evaluation_mode(model):
        for i in with_progress(range(steps + 1), progress, "Lipschitz search", steps + 1):
            last = i == steps
            with torch.set_grad_enabled(not last):
                distance = _flat_norm(offset)
                lifted = offset * _per_sample((floor / distance.clamp_min(1e-30)).clamp(min=1.0), offset)
                second = first + lifted
                y = model(torch.cat([first, second]))
                y1, y2 = y[: first.shape[0]], y[first.shape[0]:]
                ratio = _flat_norm(y1 - y2) / _flat_norm(lifted)
                # NaN compares False: a failed evaluation never becomes the best pair.
                better = ratio.detach() > best
                best = torch.where(better, ratio.detach(), best)
                best_first = torch.where(_per_sample(better, first), first.detach(), best_first)
                best_second = torch.where(_per_sample(better, first), second.detach(), best_second)
                if last:
                    break
                grads = torch.autograd.grad(-ratio.sum(), [first, offset])
            for p, g in zip((first, offset), grads, strict=True):
                p.grad = g
            optimizer.step()
            schedule.step()
    k = int(best.nan_to_num(float("-inf")).argmax())
    return LipschitzEstimate(float(best[k]), best_first[k], best_second[k], best)


def jacobian_norm(
    model: nn.Module, x: torch.Tensor, *, batch_size: int | None = None, progress: bool = False
) -> torch.Tensor:
    """Spectral norm of the local Jacobian ∂y/∂x at each input, ``(batch,)`` in model-input units.

    The Jacobian is built row by row, one backward pass per output, through the model's own
    gradients (the implicit gradient for equilibrium models, exact up to the adjoint solve's
    tolerance). Each value is a lower bound on the Lipschitz constant (at points where the model is
    differentiable), so the largest over a batch is too.

    Args:
        model: any module mapping ``(batch, ...)`` inputs to ``(batch, outputs)``; put in eval mode.
            Samples must not interact (no batch statistics).
        x: inputs ``(batch, ...)`` in model-input units.
        batch_size: process in chunks of this many samples (all at once when None).
        progress: show a progress bar over the chunks.
    """
    check_inputs(x)
    norms = []
    with evaluation_mode(model):
        pieces = chunks(x.shape[0], batch_size)
        for piece in with_progress(pieces, progress, "Jacobian", len(pieces)):
            xi = x[piece].detach().requires_grad_(True)
            with torch.enable_grad():
                y = model(xi)
                if y.dim() != 2:
                    raise ShapeError(f"jacobian_norm needs outputs shaped (batch, outputs), got {tuple(y.shape)}")
                n_out = y.shape[1]
                # Samples are independent, so the gradient of a column sum is each sample's row.
                rows = [
                    torch.autograd.grad(y[:, k].sum(), xi, retain_graph=k < n_out - 1)[0].flatten(1)
                    for k in range(n_out)
                ]
            norms.append(torch.linalg.matrix_norm(torch.stack(rows, dim=1), ord=2))
    return torch.cat(norms)
