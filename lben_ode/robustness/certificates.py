"""Lipschitz certificates: certified radii and certified accuracy (DESIGN §1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError, ShapeError
from ..normalization import Normalization
from .evaluation import (
    check_eps,
    check_inputs,
    check_logits,
    chunks,
    evaluation_mode,
    input_scale,
    lipschitz_bound_of,
    to_model_units,
    units_name,
    with_progress,
)


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


@dataclass(frozen=True)
class CertificationResult:
    """Certified robustness of a model on a batch, every radius in the units named by ``units``.

    Attributes:
        eps: the radii ε.
        certified_accuracy: fraction of samples correctly classified with certified radius > ε, per ε.
        clean_accuracy: fraction of samples correctly classified (ε = 0, no certificate).
        mean_radius: average certified radius: the mean over all samples of the certified radius,
            counting misclassified samples as 0.
        gamma: the Lipschitz bound the certificates use, in ``units`` (γ / min std in raw units).
        units: ``"raw"`` (raw-input units, through a :class:`~lben_ode.Normalization`) or
            ``"model"`` (the model's input units).
        radius: per-sample certified radius ``(batch,)`` in ``units`` (whether or not the prediction
            is correct), on the CPU.
        correct: per-sample correctness ``(batch,)`` bool, on the CPU.
    """

    eps: tuple[float, ...]
    certified_accuracy: tuple[float, ...]
    clean_accuracy: float
    mean_radius: float
    gamma: float
    units: str
    radius: torch.Tensor
    correct: torch.Tensor

    def as_dict(self) -> dict[str, Any]:
        """The summary numbers (not the per-sample tensors) as plain Python values."""
        return {
            "eps": list(self.eps),
            "certified_accuracy": list(self.certified_accuracy),
            "clean_accuracy": self.clean_accuracy,
            "mean_radius": self.mean_radius,
            "gamma": self.gamma,
            "units": self.units,
        }


def certify(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: Sequence[float] | float,
    normalization: Normalization | None = None,
    *,
    lipschitz: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> CertificationResult:
    """Certified accuracy at each ε, clean accuracy and mean certified radius of ``model`` on a batch.

    The model is evaluated (in eval mode, without gradients) on ``normalization.to_model(x)``. Its
    bound γ (``model.lipschitz_bound()``, or ``lipschitz``) is in model-input units; with a
    normalisation, ``x`` and ``eps`` are in raw-input units and so are the reported radii and γ
    (γ / min std), otherwise everything is in model units.

    Args:
        model: any module mapping inputs ``(batch, ...)`` to logits ``(batch, classes)``.
        x: inputs ``(batch, ...)``: raw when ``normalization`` is given, else model units.
        labels: class indices ``(batch,)``.
        eps: one radius or several, ≥ 0, in the units of ``x``.
        normalization: the map from raw inputs to model inputs, or None.
        lipschitz: γ in model-input units, overriding ``model.lipschitz_bound()``.
        batch_size: evaluate in chunks of this many samples (all at once when None).
        progress: show a progress bar over the chunks.

    Raises:
        ConfigurationError: if the model has no Lipschitz bound and none is given, or an ε < 0.
        ShapeError: if labels do not match the batch.
    """
    check_inputs(x, labels)
    radii = check_eps(eps)
    gamma = lipschitz_bound_of(model, lipschitz)
    scale = input_scale(normalization)
    radius_parts, correct_parts = [], []
    with evaluation_mode(model), torch.no_grad():
        pieces = chunks(x.shape[0], batch_size)
        for piece in with_progress(pieces, progress, "certify", len(pieces)):
            logits = model(to_model_units(x[piece], normalization))
            check_logits(logits, labels[piece])
            radius_parts.append(certified_radius(logits, gamma, scale))
            correct_parts.append(logits.argmax(dim=1) == labels[piece])
    radius = torch.cat(radius_parts).cpu()
    correct = torch.cat(correct_parts).cpu()
    eps_t = torch.tensor(radii, dtype=radius.dtype)
    certified = (correct[:, None] & (radius[:, None] > eps_t[None, :])).double().mean(dim=0)
    return CertificationResult(
        eps=radii,
        certified_accuracy=tuple(certified.tolist()),
        clean_accuracy=float(correct.double().mean()),
        mean_radius=float(torch.where(correct, radius, torch.zeros_like(radius)).double().mean()),
        gamma=gamma / scale,
        units=units_name(normalization),
        radius=radius,
        correct=correct,
    )
