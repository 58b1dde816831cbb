"""Lipschitz certificates: certified radii and certified accuracy (DESIGN §1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ConfigurationError, ShapeError


def logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit per sample, ``(batch,)``, ≥ 0."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ShapeError(f"logits must be shaped (batch, classes ≥ 2), got {tuple(logits.shape)}")
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def certified_radius(logits: torch.Tensor, gamma: float, input_scale: float = 1.0) -> torch.Tensor:
    """ℓ2 radius within which each prediction provably does not change, ``(batch,)``.

    Each logit difference ``y_i − y_j`` is √2 γ-Lipschitz, so the prediction is constant on the ball
    of radius ``margin / (√2 γ)`` (in model-input units). Multiply by ``input_scale`` (the smallest
    normalisation std, ``Normalization.raw_scale``) to get the radius in raw-input units.

    Args:
        logits: model outputs ``(batch, classes)``.
        gamma: the model's Lipschitz bound in its input units (> 0).
        input_scale: raw units per model unit; 1.0 reports model units.
    """
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ConfigurationError(f"certified radius needs a finite Lipschitz bound gamma > 0, got {gamma!r}")
    if not input_scale > 0:
        raise ConfigurationError(f"input_scale must be > 0, got {input_scale!r}")
    return logit_margin(logits) * (input_scale / (math.sqrt(2.0) * gamma))


def certified_correct(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float, eps: Sequence[float], input_scale: float = 1.0
) -> torch.Tensor:
    """Per sample and ε: correctly classified with certified radius > ε, ``(batch, len(eps))`` bool.

    ``eps`` and the radius are in the same units (raw units when ``input_scale`` is the data's
    ``Normalization.raw_scale``).
    """
    if labels.shape != logits.shape[:1]:
        raise ShapeError(f"labels must be shaped ({logits.shape[0]},), got {tuple(labels.shape)}")
    radius = certified_radius(logits, gamma, input_scale)
    correct = logits.argmax(dim=1) == labels
    eps_t = torch.as_tensor(list(eps), dtype=radius.dtype, device=radius.device)
    return correct[:, None] & (radius[:, None] > eps_t[None, :])


def certified_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float, eps: Sequence[float], input_scale: float = 1.0
) -> torch.Tensor:
    """Fraction of samples correctly classified with certified radius > ε, one value per ε."""
    return certified_correct(logits, labels, gamma, eps, input_scale).float().mean(dim=0)
