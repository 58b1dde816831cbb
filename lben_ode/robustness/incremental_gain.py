"""Empirical lower bound on the incremental ℓ2 gain of a sequence model (DESIGN §5).

For a model mapping input signals to output signals from a shared initial state, every pair of
inputs gives the lower bound ``(∫‖y(u₁) − y(u₂)‖² dt / ∫‖u₁ − u₂‖² dt)^{1/2}`` of its incremental
gain; on a ``ContractingLBEN`` it must stay below γ up to the integration tolerance. The search
maximises that ratio by gradient ascent over both signals of each pair.

Integrals over the sample grid: ``∫‖Δu‖²`` exactly for the interpolation the model uses (linear:
``h(a² + ab + b²)/3`` per interval; zero-order hold: ``h a²``), ``∫‖Δy‖²`` by the trapezoidal rule
(the outputs are smooth between samples). Everything is in the model's own units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigurationError, ShapeError


@dataclass(frozen=True)
class IncrementalGainEstimate:
    """The best ratio found by :func:`empirical_incremental_gain` (model units).

    Attributes:
        value: the largest ``(∫‖Δy‖² / ∫‖Δu‖²)^{1/2}`` found.
        u1, u2: ``(T, m)`` the pair of input signals that reached it.
        pair_ratios: ``(pairs,)`` the best ratio of each pair.
    """

    value: float
    u1: torch.Tensor
    u2: torch.Tensor
    pair_ratios: torch.Tensor


def signal_energy(d: torch.Tensor, t: torch.Tensor, interpolation: str = "linear") -> torch.Tensor:
    """``∫‖d(t)‖² dt`` per batch element for samples ``d`` ``(batch, T, k)`` on ``t`` ``(T,)``.

    ``"linear"``: exact for the piecewise-linear signal through the samples; ``"zoh"``: exact for
    the zero-order hold; ``"trapezoid"``: the trapezoidal rule (for smooth signals).
    """
    h = (t[1:] - t[:-1]).to(d.dtype)
    a, b = d[:, :-1], d[:, 1:]
    if interpolation == "linear":
        per_interval = (a * a + a * b + b * b).sum(-1) / 3
    elif interpolation == "zoh":
        per_interval = (a * a).sum(-1)
    elif interpolation == "trapezoid":
        per_interval = ((a * a).sum(-1) + (b * b).sum(-1)) / 2
    else:
        raise ConfigurationError(f"unknown interpolation {interpolation!r}; valid: linear, zoh, trapezoid")
    return (per_interval * h).sum(-1)


def empirical_incremental_gain(
    model: nn.Module,
    u: torch.Tensor,
    t: torch.Tensor,
    *,
    steps: int = 50,
    lr: float = 0.05,
    init_distance: float = 0.1,
    generator: torch.Generator | None = None,
) -> IncrementalGainEstimate:
    """Search pairs of input signals for the largest incremental gain ratio, starting near ``u``.

    Each start signal ``u[i]`` gives one pair ``(u[i], u[i] + δ)`` with Gaussian δ of RMS
    ``init_distance`` times the RMS of ``u``; Adam (step ``lr`` times that RMS) then moves both
    signals to increase ``log ∫‖Δy‖² − log ∫‖Δu‖²``. Both simulations start from the model's
    default initial state. The model is evaluated as it is configured (method, tolerances).

    Args:
        model: a sequence model ``model(u, t) -> y`` (``u`` ``(batch, T, m)``).
        u: ``(pairs, T, m)`` start signals in model units.
        t: ``(T,)`` sample times.
        steps: Adam steps.
        lr: Adam step size, relative to the RMS of ``u``.
        init_distance: initial RMS of ``u₂ − u₁`` relative to the RMS of ``u``.
        generator: random generator of the initial perturbations.

    Returns:
        The best ratio over all pairs and steps, with its pair.
    """
    if u.dim() != 3 or u.shape[1] < 2:
        raise ShapeError(f"u must be shaped (pairs, T ≥ 2, m), got {tuple(u.shape)}")
    if not isinstance(steps, int) or steps < 0:
        raise ConfigurationError(f"steps must be an int ≥ 0, got {steps!r}")
    interpolation = getattr(model, "interpolation", "linear")
    scale = u.detach().pow(2).mean().sqrt().clamp_min(1e-6)
    noise = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
    u1 = u.detach().clone().requires_grad_(True)
    u2 = (u.detach() + init_distance * scale * noise).requires_grad_(True)
    optimizer = torch.optim.Adam([u1, u2], lr=float(lr * scale))
    best = torch.full((u.shape[0],), -1.0, dtype=u.dtype, device=u.device)
    best_pair = (u1.detach().clone(), u2.detach().clone())
    was_training = model.training
    model.eval()
    try:
        for step in range(steps + 1):
            y1, y2 = model(u1, t), model(u2, t)
            num = signal_energy(y1 - y2, t, "trapezoid")
            den = signal_energy(u1 - u2, t, interpolation).clamp_min(1e-30)
            ratio = (num / den).sqrt().detach()
            improved = ratio > best
            best = torch.where(improved, ratio, best)
            mask = improved[:, None, None]
            best_pair = (torch.where(mask, u1.detach(), best_pair[0]), torch.where(mask, u2.detach(), best_pair[1]))
            if step == steps:
                break
            optimizer.zero_grad()
            (-(num.clamp_min(1e-30).log() - den.log()).sum()).backward()
            optimizer.step()
    finally:
        model.train(was_training)
    k = int(best.argmax())
    return IncrementalGainEstimate(float(best[k]), best_pair[0][k], best_pair[1][k], best)
