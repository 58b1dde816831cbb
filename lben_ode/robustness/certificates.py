"""Lipschitz certificates: certified radii and certified accuracy (DESIGN §1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ShapeError
from ..normalization import Normalization
from ..validation import check_eps, check_inputs, check_logits, check_positive
from .evaluation import (
    chunks,
    converged_fraction,
    evaluation_mode,
    input_scale,
    lipschitz_bound_of,
    require_converged,
    run_model,
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
    check_positive("gamma", gamma, "certified radii need a finite Lipschitz bound")
    check_positive("input_scale", input_scale)
    return logit_margin(logits) * (input_scale / (math.sqrt(2.0) * gamma))


def certified_correct(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float,
    eps: Sequence[float] | float,
    input_scale: float = 1.0,
    converged: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per sample and ε: correctly classified with certified radius > ε, ``(batch, len(eps))`` bool.

    ``eps`` and the radius are in the same units (raw units when ``input_scale`` is the data's
    ``Normalization.raw_scale``). The logits must come from solves that converged: pass
    ``converged`` (``(batch,)`` bool, e.g. from :func:`~lben_ode.robustness.evaluation.run_model`
    or ``model.solver_stats["forward"].converged``) and a sample whose solve did not converge is
    never certified; None means the logits are exact (a model without an equilibrium solve).

    Raises:
        ConfigurationError: for an ε < 0 or not finite, or a bad γ.
        ShapeError: for labels that do not match the logits or lie outside the class range, or a
            ``converged`` mask of the wrong shape.
    """
    radii = check_eps(eps)
    check_logits(logits, labels)
    radius = certified_radius(logits, gamma, input_scale)
    correct = logits.argmax(dim=1) == labels
    if converged is not None:
        if not isinstance(converged, torch.Tensor) or tuple(converged.shape) != tuple(labels.shape):
            raise ShapeError(f"converged must be a bool tensor shaped ({labels.shape[0]},), got {converged!r}")
        correct = correct & converged.to(device=correct.device, dtype=torch.bool)
    eps_t = torch.as_tensor(radii, dtype=radius.dtype, device=radius.device)
    return correct[:, None] & (radius[:, None] > eps_t[None, :])


def certified_accuracy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float,
    eps: Sequence[float] | float,
    input_scale: float = 1.0,
    converged: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fraction of samples correctly classified with certified radius > ε, one value per ε.

    Arguments as :func:`certified_correct`: a sample whose solve did not converge (``converged``)
    counts as not certified.
    """
    return certified_correct(logits, labels, gamma, eps, input_scale, converged).float().mean(dim=0)


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
            is correct or the solve converged), on the CPU.
        correct: per-sample correctness ``(batch,)`` bool, on the CPU.
        converged: per-sample ``(batch,)`` bool, on the CPU: the forward solve converged. Samples
            that did not are never certified and count 0 in ``mean_radius``.
        converged_fraction: fraction of samples whose forward solve converged.
    """

    eps: tuple[float, ...]
    certified_accuracy: tuple[float, ...]
    clean_accuracy: float
    mean_radius: float
    gamma: float
    units: str
    radius: torch.Tensor
    correct: torch.Tensor
    converged: torch.Tensor
    converged_fraction: float

    def as_dict(self) -> dict[str, Any]:
        """The summary numbers (not the per-sample tensors) as plain Python values."""
        return {
            "eps": list(self.eps),
            "certified_accuracy": list(self.certified_accuracy),
            "clean_accuracy": self.clean_accuracy,
            "mean_radius": self.mean_radius,
            "gamma": self.gamma,
            "units": self.units,
            "converged_fraction": self.converged_fraction,
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
    allow_unconverged: bool = False,
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
        allow_unconverged: when False (default), refuse if any sample's forward solve did not
            converge; when True, count such samples as not certified.

    Raises:
        ConfigurationError: if the model has no Lipschitz bound and none is given, or an ε < 0.
        ShapeError: if labels do not match the batch or the classes.
        ConvergenceError: if a solve did not converge and ``allow_unconverged`` is False.
    """
    check_inputs(x, labels)
    radii = check_eps(eps)
    gamma = lipschitz_bound_of(model, lipschitz)
    scale = input_scale(normalization)
    radius_parts, correct_parts, converged_parts = [], [], []
    with evaluation_mode(model), torch.no_grad():
        pieces = chunks(x.shape[0], batch_size)
        for piece in with_progress(pieces, progress, "certify", len(pieces)):
            out = run_model(model, to_model_units(x[piece], normalization))
            check_logits(out.logits, labels[piece])
            radius_parts.append(certified_radius(out.logits, gamma, scale))
            correct_parts.append(out.logits.argmax(dim=1) == labels[piece])
            converged_parts.append(out.converged)
    radius = torch.cat(radius_parts).cpu()
    correct = torch.cat(correct_parts).cpu()
    converged = torch.cat(converged_parts).cpu()
    require_converged(converged, "certify", allow_unconverged)
    eps_t = torch.tensor(radii, dtype=radius.dtype)
    certified = (correct[:, None] & converged[:, None] & (radius[:, None] > eps_t[None, :])).double().mean(dim=0)
    return CertificationResult(
        eps=radii,
        certified_accuracy=tuple(certified.tolist()),
        clean_accuracy=float(correct.double().mean()),
        mean_radius=float(torch.where(correct & converged, radius, torch.zeros_like(radius)).double().mean()),
        gamma=gamma / scale,
        units=units_name(normalization),
        radius=radius,
        correct=correct,
        converged=converged,
        converged_fraction=converged_fraction(converged),
    )
