"""ℓ2 projected gradient descent (PGD) attacks in raw-input units, batched over samples and restarts.

Attack accuracy is an upper bound on the true robust accuracy (a failed attack proves nothing);
certified accuracy (:mod:`.certificates`) is a lower bound. Every point an attack reports as
adversarial is feasible: inside the ε-ball around the clean input and inside the valid input box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigurationError, unknown_name
from ..normalization import Normalization
from ..validation import check_count, check_eps, check_inputs, check_logits, check_positive
from .evaluation import (
    chunks,
    converged_fraction,
    evaluation_mode,
    require_converged,
    run_model,
    to_model_units,
    with_progress,
)

LOSSES = ("margin", "ce")

# Relative slack when checking that clean inputs lie in the box (normalisation round trips are inexact).
_BOX_SLACK = 1e-6


@dataclass(frozen=True)
class AttackResult:
    """Outcome of an ℓ2 attack at one radius ε (raw-input units).

    Attributes:
        x_adv: ``(batch, ...)`` raw inputs: a misclassified point for every broken sample, else the
            final iterate of the run with the highest margin loss. Always within ε of the input and
            inside the valid input box.
        robust: ``(batch,)`` bool: correctly classified, every solve of the sample (clean and
            attacked points) converged, and no run found a misclassified point.
        clean_correct: ``(batch,)`` bool: correctly classified without perturbation.
        eps: the radius ε.
        converged: ``(batch,)`` bool: every equilibrium solve of the sample converged (clean input
            and every attack iterate). A sample that did not is never robust, and its
            misclassified iterates do not count as adversarial points (their prediction is not the
            model's).
    """

    x_adv: torch.Tensor
    robust: torch.Tensor
    clean_correct: torch.Tensor
    eps: float
    converged: torch.Tensor

    @property
    def robust_accuracy(self) -> float:
        """Fraction of samples the attack did not break (an upper bound on robust accuracy)."""
        return float(self.robust.double().mean())

    @property
    def converged_fraction(self) -> float:
        """Fraction of samples whose every equilibrium solve converged."""
        return converged_fraction(self.converged)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """ℓ2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(
    delta: torch.Tensor, x: torch.Tensor, eps: float, box: tuple[float, float] | None
) -> torch.Tensor:
    """Map δ into the ε-ball, then clip x + δ into the box.

    With x inside the box, clipping only moves each coordinate of δ towards 0, so the result stays
    in the ball: the point is feasible (not always the exact Euclidean projection onto the
    intersection, which PGD does not need).
    """
    delta = delta * (eps / _flat_norm(delta).clamp_min(eps)).clamp(max=1.0)
    if box is not None:
        delta = (x + delta).clamp(box[0], box[1]) - x
    return delta


def _random_in_ball(
    like: torch.Tensor, eps: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Points uniformly distributed in the ℓ2 ball of radius ε, one per sample of ``like``."""
    direction = torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    direction = direction / _flat_norm(direction).clamp_min(torch.finfo(like.dtype).tiny)
    dim = like[0].numel()
    u = torch.rand((like.shape[0],), dtype=like.dtype, device=like.device, generator=generator)
    radius = eps * u.pow(1.0 / dim)
    return direction * radius.view(-1, *([1] * (like.dim() - 1)))


def _largest_other(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max over j ≠ label of logits_j, per sample."""
    return logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values


def _attack_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, loss: str
) -> torch.Tensor:
    """Per-sample loss the attack ascends; it is positive-margin-to-misclassify for ``"margin"``."""
    true_logit = logits.gather(1, labels[:, None])[:, 0]
    if targets is None:
        if loss == "margin":
            return _largest_other(logits, labels) - true_logit
        return F.cross_entropy(logits, labels, reduction="none")
    if loss == "margin":
        return logits.gather(1, targets[:, None])[:, 0] - true_logit
    return -F.cross_entropy(logits, targets, reduction="none")


def pgd_attack(
    model: nn.Module,
    x_raw: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    normalization: Normalization | None = None,
    *,
    steps: int = 50,
    restarts: int = 5,
    step_size: float | None = None,
    loss: str = "margin",
    targets: int | None = None,
    generator: torch.Generator | None = None,
    allow_unconverged: bool = False,
) -> AttackResult:
    """ℓ2 PGD with random starts against ``model``, in raw-input units.

    Each run starts at a uniform random point of the ε-ball around the input and takes ``steps``
    normalised-gradient ascent steps on the loss, each followed by projection onto the ε-ball and
    the valid box ``[normalization.raw_min, normalization.raw_max]``. The step length decays from
    ``step_size`` towards 0 along a cosine schedule: long early steps cross the ball from any start
    (AutoAttack's APGD also starts at 2ε), short late steps settle on the best point. The model
    sees ``normalization.to_model(x_raw + δ)``. Every iterate (start and final point included) is
    checked: a sample is broken as soon as any run reaches a misclassified point, and robust only
    if it is correctly classified and no run breaks it. All runs (restarts × targets) of all
    samples go through the model as one batch; the loop has no host synchronisation of its own.

    Against a linear classifier the targeted margin attack with ``targets = classes − 1`` is exact:
    it breaks a point exactly when ε exceeds the point's distance to the decision boundary.

    Args:
        model: any module mapping model inputs ``(batch, ...)`` to logits ``(batch, classes)``;
            it is put in eval mode during the attack.
        x_raw: clean inputs ``(batch, ...)`` in raw units, inside the box.
        labels: true classes ``(batch,)``.
        eps: ℓ2 radius ≥ 0 in raw-input units (0 gives the clean accuracy).
        normalization: raw → model map and valid input box; None: the model takes ``x_raw`` as is
            and the input space is unbounded.
        steps: gradient steps per run (≥ 1).
        restarts: random starts per sample (and per target class).
        step_size: ℓ2 length of the first step in raw units; default ``2 ε``.
        loss: ``"margin"``: largest other logit − true logit (targeted: target logit − true
            logit); ``"ce"``: cross-entropy of the true class (targeted: log-probability of the
            target).
        targets: None for an untargeted attack, or k ≥ 1 to run targeted attacks against each of
            the k highest-scoring wrong classes at the clean input (``restarts`` runs each).
        generator: random generator for the starts (on the inputs' device), for reproducibility.
        allow_unconverged: when False (default), refuse if an equilibrium solve did not converge
            (checked after the clean pass, before the attack, and at the end); when True, such
            samples count as not robust.

    Returns:
        an :class:`AttackResult`.

    Raises:
        ConfigurationError: for a bad ε, count, step size or targets, or inputs outside the box.
        UnknownNameError: for an unknown loss.
        ShapeError: if labels do not match the batch or the classes, or the model does not output
            ``(batch, classes ≥ 2)`` logits.
        NonFiniteInputError: if ``x_raw`` has NaN or infinite entries.
        ConvergenceError: if a solve did not converge and ``allow_unconverged`` is False.
    """
    check_inputs(x_raw, labels, "x_raw")
    (eps,) = check_eps(eps)
    check_count("steps", steps)
    check_count("restarts", restarts)
    if loss not in LOSSES:
        raise unknown_name("attack loss", loss, LOSSES)
    first_step = 2.0 * eps if step_size is None else check_positive("step_size", step_size)
    box = None if normalization is None else (normalization.raw_min, normalization.raw_max)
    x, labels = x_raw.detach(), labels.long()
    if box is not None:
        slack = _BOX_SLACK * (box[1] - box[0])
        if bool(((x < box[0] - slack) | (x > box[1] + slack)).any()):
            raise ConfigurationError(
                f"x_raw has values outside the valid input box [{box[0]}, {box[1]}]: pass raw "
                "(unnormalised) inputs, or set Normalization(raw_min=..., raw_max=...)"
            )
        x = x.clamp(box[0], box[1])
    batch = x.shape[0]

    with evaluation_mode(model):
        with torch.no_grad():
            clean = run_model(model, to_model_units(x, normalization))
        clean_logits, clean_converged = clean.logits, clean.converged
        check_logits(clean_logits, labels)
        require_converged(clean_converged, "pgd_attack (clean inputs)", allow_unconverged)
        clean_correct = clean_logits.argmax(dim=1) == labels
        if eps == 0.0:
            return AttackResult(x.clone(), clean_correct & clean_converged, clean_correct, eps, clean_converged)

        n_classes = clean_logits.shape[1]
        if targets is None:
            runs, target_classes = restarts, None
        else:
            k = check_count("targets", targets)
            if k > n_classes - 1:
                raise ConfigurationError(f"targets must be ≤ {n_classes - 1} (the wrong classes), got {k}")
            wrong = clean_logits.detach().clone()
            wrong.scatter_(1, labels[:, None], float("-inf"))
            top_wrong = wrong.topk(k, dim=1).indices  # (batch, k)
            runs = restarts * k
            # Run r·k + t of sample b targets top_wrong[b, t]: runs are laid out run-major.
            target_classes = top_wrong.T.reshape(-1).repeat(restarts)

        xs = x.repeat(runs, *([1] * (x.dim() - 1)))
        ys = labels.repeat(runs)
        delta = _project(_random_in_ball(xs, eps, generator), xs, eps, box)
        broken = torch.zeros(xs.shape[0], dtype=torch.bool, device=x.device)
        runs_converged = torch.ones(xs.shape[0], dtype=torch.bool, device=x.device)
        found = xs.clone()
        for i in range(steps + 1):
            last = i == steps
            with torch.set_grad_enabled(not last):
                delta.requires_grad_(not last)
                x_adv = xs + delta
                out = run_model(model, to_model_units(x_adv, normalization))
                logits = out.logits
                runs_converged = runs_converged & out.converged
                # Only a converged solve shows the model's prediction: an unconverged iterate that
                # looks misclassified is not an adversarial point.
                misclassified = (logits.argmax(dim=1) != ys) & out.converged
                found = torch.where(
                    (misclassified & ~broken).view(-1, *([1] * (x.dim() - 1))), x_adv.detach(), found
                )
                broken = broken | misclassified
                if last:
                    final_loss = _attack_loss(logits, ys, None, "margin").detach()
                    break
                objective = _attack_loss(logits, ys, target_classes, loss)
                (grad,) = torch.autograd.grad(objective.sum(), delta)
            grad_norm = _flat_norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)
            step = first_step * 0.5 * (1.0 + math.cos(math.pi * i / steps))
            delta = _project(delta.detach() + step * grad / grad_norm, xs, eps, box)
        final = xs + delta.detach()

    broken_runs = broken.view(runs, batch)
    # Per sample, the run to report: a broken one if any, else the one with the highest margin.
    score = torch.where(broken_runs, torch.full_like(final_loss.view(runs, batch), float("inf")),
                        final_loss.view(runs, batch))
    best = score.argmax(dim=0)
    candidates = torch.where(broken.view(-1, *([1] * (x.dim() - 1))), found, final)
    x_adv = candidates.view(runs, batch, *x.shape[1:])[best, torch.arange(batch, device=x.device)]
    converged = clean_converged & runs_converged.view(runs, batch).all(dim=0)
    require_converged(converged, "pgd_attack (attacked points)", allow_unconverged)
    robust = clean_correct & converged & ~broken_runs.any(dim=0)
    return AttackResult(x_adv, robust, clean_correct, eps, converged)


@dataclass(frozen=True)
class AttackEvaluation:
    """Accuracy under attack at several radii, with the convergence of the solves behind it.

    Attributes:
        accuracy: ``(len(eps),)`` float64 on the CPU: fraction of samples robust at each ε.
        converged_fraction: ``(len(eps),)`` float64 on the CPU: fraction of samples whose every
            solve (clean and attacked points) converged, at each ε.
    """

    accuracy: torch.Tensor
    converged_fraction: torch.Tensor


def evaluate_attack(
    model: nn.Module,
    x_raw: torch.Tensor,
    labels: torch.Tensor,
    eps: Sequence[float] | float,
    normalization: Normalization | None = None,
    *,
    steps: int = 50,
    restarts: int = 5,
    step_size: float | None = None,
    loss: str = "margin",
    targets: int | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    allow_unconverged: bool = False,
) -> AttackEvaluation:
    """Accuracy under :func:`pgd_attack` at each ε (raw-input units) and the converged fraction behind it.

    Arguments are those of :func:`attack_accuracy`.
    """
    check_inputs(x_raw, labels, "x_raw")
    radii = check_eps(eps)
    robust_count = torch.zeros(len(radii), dtype=torch.float64)
    converged_count = torch.zeros(len(radii), dtype=torch.float64)
    pieces = chunks(x_raw.shape[0], batch_size)
    for piece in with_progress(pieces, progress, "attack", len(pieces)):
        for j, e in enumerate(radii):
            result = pgd_attack(
                model, x_raw[piece], labels[piece], e, normalization, steps=steps, restarts=restarts,
                step_size=step_size, loss=loss, targets=targets, generator=generator,
                allow_unconverged=allow_unconverged,
            )
            robust_count[j] += result.robust.sum().cpu().double()
            converged_count[j] += result.converged.sum().cpu().double()
    return AttackEvaluation(robust_count / x_raw.shape[0], converged_count / x_raw.shape[0])


def attack_accuracy(
    model: nn.Module,
    x_raw: torch.Tensor,
    labels: torch.Tensor,
    eps: Sequence[float] | float,
    normalization: Normalization | None = None,
    *,
    steps: int = 50,
    restarts: int = 5,
    step_size: float | None = None,
    loss: str = "margin",
    targets: int | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    allow_unconverged: bool = False,
) -> torch.Tensor:
    """Accuracy under :func:`pgd_attack` at each ε (raw-input units), ``(len(eps),)`` float64 on the CPU.

    An upper bound on the true robust accuracy. Arguments are those of :func:`pgd_attack`, with
    ``eps`` a sequence, ``step_size`` (if given) used at every ε, and ``batch_size`` splitting the
    samples into chunks (each chunk runs all its restarts at once). A sample whose solves did not
    all converge is refused (``allow_unconverged=False``) or counted as not robust;
    :func:`evaluate_attack` also returns the converged fraction.
    """
    return evaluate_attack(
        model, x_raw, labels, eps, normalization, steps=steps, restarts=restarts, step_size=step_size,
        loss=loss, targets=targets, batch_size=batch_size, generator=generator, progress=progress,
        allow_unconverged=allow_unconverged,
    ).accuracy
