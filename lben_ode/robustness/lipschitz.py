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

from ..errors import ShapeError
from ..validation import check_count, check_inputs, check_non_negative, check_positive
from .evaluation import (
    chunks,
    evaluation_mode,
    require_converged,
    run_model,
    solve_converged,
    with_progress,
)


@dataclass(frozen=True)
class LipschitzEstimate:
    """The best lower bound found by :func:`empirical_lipschitz`, in model-input units.

    Attributes:
        value: the largest ratio ``‖y(x₁) − y(x₂)‖ / ‖x₁ − x₂‖`` found.
        x1: ``(*input_shape)`` the first point of that pair.
        x2: ``(*input_shape)`` the second point of that pair.
        pair_ratios: ``(pairs,)`` the best ratio reached from each starting pair (NaN for a
            pair none of whose evaluations converged).
        converged_fraction: fraction of the evaluated pairs (over all steps) whose two solves
            both converged; only those count towards ``value``.
    """

    value: float
    x1: torch.Tensor
    x2: torch.Tensor
    pair_ratios: torch.Tensor
    converged_fraction: float = 1.0


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
    allow_unconverged: bool = False,
) -> LipschitzEstimate:
    """Lower-bound the ℓ2 Lipschitz constant of ``model`` by gradient ascent over input pairs.

    Maximises ``‖y(x₁) − y(x₂)‖ / ‖x₁ − x₂‖`` jointly over both points with Adam (cosine-decayed
    learning rate) from many start pairs at once: per restart, one pair near each data point and,
    with ``random_starts``, one pair from a Gaussian fitted to the data. Distances below
    ``min_distance`` are lifted to it, so that the equilibrium solver's error (≈ tol · ‖y‖) cannot
    be divided by a vanishing ‖x₁ − x₂‖. Every pair evaluated whose two equilibrium solves converged is
    a valid lower bound; the largest is returned. The loop has no host synchronisation of its own.

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
        allow_unconverged: when False (default), refuse (after the search) if any solve did not
            converge; when True, pairs with an unconverged solve are left out of the bound.

    Returns:
        a :class:`LipschitzEstimate` (model-input units); ``value`` is NaN when no pair converged.

    Raises:
        ConvergenceError: if a solve did not converge and ``allow_unconverged`` is False.
    """
    check_inputs(x)
    check_count("restarts", restarts)
    check_count("steps", steps)
    check_positive("lr", lr)
    check_positive("init_distance", init_distance)
    check_positive("min_distance", min_distance)
    check_non_negative("start_noise", start_noise)
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
    pairs_converged = torch.zeros((), dtype=torch.float64, device=x.device)
    pair_always_converged = torch.ones(first.shape[0], dtype=torch.bool, device=x.device)
    with evaluation_mode(model):
        for i in with_progress(range(steps + 1), progress, "Lipschitz search", steps + 1):
            last = i == steps
            with torch.set_grad_enabled(not last):
                distance = _flat_norm(offset)
                lifted = offset * _per_sample((floor / distance.clamp_min(1e-30)).clamp(min=1.0), offset)
                second = first + lifted
                out = run_model(model, torch.cat([first, second]))
                n = first.shape[0]
                y1, y2 = out.logits[:n], out.logits[n:]
                both = out.converged[:n] & out.converged[n:]
                pairs_converged = pairs_converged + both.double().sum()
                pair_always_converged = pair_always_converged & both
                ratio = _flat_norm(y1 - y2) / _flat_norm(lifted)
                # NaN compares False: a failed or unconverged evaluation never becomes the best pair.
                valid_ratio = torch.where(both, ratio.detach(), torch.full_like(ratio.detach(), float("nan")))
                better = valid_ratio > best
                best = torch.where(better, valid_ratio, best)
                best_first = torch.where(_per_sample(better, first), first.detach(), best_first)
                best_second = torch.where(_per_sample(better, first), second.detach(), best_second)
                if last:
                    break
                grads = torch.autograd.grad(-ratio.sum(), [first, offset])
            for p, g in zip((first, offset), grads, strict=True):
                p.grad = g
            optimizer.step()
            schedule.step()
    fraction = float(pairs_converged) / (first.shape[0] * (steps + 1))
    require_converged(pair_always_converged, "empirical_lipschitz", allow_unconverged, "start pairs (at some step)")
    best = torch.where(best == float("-inf"), torch.full_like(best, float("nan")), best)
    k = int(best.nan_to_num(float("-inf")).argmax())
    return LipschitzEstimate(float(best[k]), best_first[k], best_second[k], best, fraction)


def jacobian_norm(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    allow_unconverged: bool = False,
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
        allow_unconverged: when False (default), refuse if the forward solve or an adjoint solve
            of a sample did not converge; when True, such samples get NaN.

    Raises:
        ConvergenceError: if a solve did not converge and ``allow_unconverged`` is False.
    """
    check_inputs(x)
    norms = []
    with evaluation_mode(model):
        pieces = chunks(x.shape[0], batch_size)
        for piece in with_progress(pieces, progress, "Jacobian", len(pieces)):
            xi = x[piece].detach().requires_grad_(True)
            with torch.enable_grad():
                out = run_model(model, xi)
                y, converged = out.logits, out.converged
                if y.dim() != 2:
                    raise ShapeError(f"jacobian_norm needs outputs shaped (batch, outputs), got {tuple(y.shape)}")
                n_out = y.shape[1]
                # Samples are independent, so the gradient of a column sum is each sample's row.
                rows = []
                for k in range(n_out):
                    rows.append(torch.autograd.grad(y[:, k].sum(), xi, retain_graph=k < n_out - 1)[0].flatten(1))
                    # Each row's adjoint solve must converge too: it is the implicit gradient.
                    converged = converged & solve_converged(model, xi.shape[0], "backward", converged.device)
            require_converged(converged, "jacobian_norm", allow_unconverged)
            norm = torch.linalg.matrix_norm(torch.stack(rows, dim=1), ord=2)
            norms.append(torch.where(converged, norm, torch.full_like(norm, float("nan"))))
    return torch.cat(norms)
