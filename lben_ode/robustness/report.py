"""A robustness table for several models: clean, certified and attack accuracy, Lipschitz tightness.

:func:`robustness_report` evaluates each model on the same data and returns one plain-``dict`` row
per model; :func:`format_table` prints the rows and :func:`plot_accuracy_vs_eps` draws certified
(solid) and attacked (dashed) accuracy against ε.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError, ShapeError
from ..normalization import Normalization
from ..validation import check_count, check_eps, check_inputs, check_logits
from .attacks import pgd_attack
from .certificates import certified_correct
from .evaluation import (
    converged_fraction,
    evaluation_mode,
    input_scale,
    model_device,
    model_dtype,
    require_converged,
    run_model,
    to_model_units,
    units_name,
    with_progress,
)
from .lipschitz import empirical_lipschitz, jacobian_norm

ModelSpec = tuple[str, nn.Module, Normalization | None]
"""(name, model, normalisation): the normalisation maps the data's raw inputs to the model's inputs."""

def _batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) batches from a tensor pair or from an iterable of ``(x, y, ...)`` batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ShapeError("data batches must be (inputs, labels, ...) sequences")
        yield batch[0], batch[1]


def _batch_count(data: Any, batch_size: int) -> int | None:
    """How many batches :func:`_batches` yields, when known up front (for the progress bar)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return math.ceil(data[0].shape[0] / batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def _bound_or_none(model: nn.Module) -> float | None:
    bound_fn = getattr(model, "lipschitz_bound", None)
    bound = bound_fn() if callable(bound_fn) else None
    return None if bound is None else float(bound)


def robustness_report(
    models: Sequence[ModelSpec],
    data: Any,
    eps: Sequence[float],
    *,
    batch_size: int = 256,
    attack_steps: int = 50,
    attack_restarts: int = 3,
    attack_step_size: float | None = None,
    attack_loss: str = "margin",
    attack_targets: int | None = None,
    attack_samples: int | None = None,
    lipschitz_samples: int = 128,
    lipschitz_restarts: int = 2,
    lipschitz_steps: int = 100,
    seed: int = 0,
    progress: bool = False,
    allow_unconverged: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate each model's clean, certified and attack accuracy and the tightness of its bound.

    Each model is evaluated in eval mode on its own device. Data are raw inputs: each model sees
    them through its normalisation (None: as they are), so ε is in raw-input units for models with
    a normalisation and in model-input units otherwise (the row's ``units``). The Lipschitz figures
    are in model-input units, where γ is defined.

    Args:
        models: ``(name, model, normalization)`` triples.
        data: a pair of tensors ``(x, y)`` or an iterable of ``(x, y, ...)`` batches (a DataLoader).
        eps: ℓ2 radii ≥ 0.
        batch_size: chunk size when ``data`` is a tensor pair.
        attack_steps, attack_restarts, attack_step_size, attack_loss, attack_targets: the
            :func:`~lben_ode.robustness.pgd_attack` settings.
        attack_samples: attack only the first this many samples (all when None).
        lipschitz_samples: data points used by the Lipschitz search and the Jacobian norms.
        lipschitz_restarts, lipschitz_steps: the
            :func:`~lben_ode.robustness.empirical_lipschitz` settings.
        seed: seed of the random starts (attacks and Lipschitz search), per model.
        progress: show progress bars.
        allow_unconverged: when False (default), refuse as soon as an equilibrium solve does not
            converge (the clean pass of each batch is checked before its attacks); when True, a
            sample whose solve did not converge is neither certified nor robust and no pair or
            Jacobian from such a solve enters the Lipschitz lower bound.

    Returns:
        one dict per model with keys ``model``, ``units``, ``samples``, ``attack_samples``,
        ``gamma`` (model units, None without a bound), ``gamma_input_units`` (γ in the units of ε),
        ``clean_accuracy``, ``eps``, ``certified_accuracy`` (list per ε, None without a bound),
        ``attack_accuracy`` (list per ε), ``empirical_lipschitz``, ``jacobian_norm_max``,
        ``lower_bound`` (the larger of the two) and ``tightness`` (lower_bound / γ, None without a
        bound), and the fractions of converged solves behind them: ``converged_fraction`` (clean
        pass, all samples), ``attack_converged_fraction`` (per ε, attacked samples whose every
        solve converged; None without attacks), ``lipschitz_converged_fraction`` (pair
        evaluations of the search) and ``jacobian_converged_fraction``. Accuracies are fractions
        in [0, 1].

    Raises:
        ConvergenceError: if a solve did not converge and ``allow_unconverged`` is False.
    """
    radii = check_eps(eps)
    check_count("batch_size", batch_size)
    check_count("lipschitz_samples", lipschitz_samples)
    if attack_samples is not None:
        check_count("attack_samples", attack_samples, minimum=0)
    if not models:
        raise ConfigurationError("robustness_report needs at least one (name, model, normalization)")
    rows = []
    for name, model, normalization in models:
        device, dtype = model_device(model), model_dtype(model)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        gamma = _bound_or_none(model)
        scale = input_scale(normalization)
        n_total = n_correct = n_attacked = n_converged = 0
        certified = torch.zeros(len(radii), dtype=torch.float64)
        robust = torch.zeros(len(radii), dtype=torch.float64)
        attack_converged = torch.zeros(len(radii), dtype=torch.float64)
        pool: list[torch.Tensor] = []
        n_pool = 0
        batches = _batches(data, batch_size)
        n_batches = _batch_count(data, batch_size)
        bar = with_progress(batches, progress, f"{name}: evaluate and certify", n_batches)
        for x_raw, labels in bar:
            x_raw, labels = x_raw.to(device=device, dtype=dtype or x_raw.dtype), labels.to(device)
            check_inputs(x_raw, labels, "x")
            x_model = to_model_units(x_raw, normalization)
            with evaluation_mode(model), torch.no_grad():
                out = run_model(model, x_model)
            logits = out.logits
            check_logits(logits, labels)
            require_converged(out.converged, f"robustness_report ({name})", allow_unconverged)
            n_total += x_raw.shape[0]
            n_correct += int((logits.argmax(dim=1) == labels).sum())
            n_converged += int(out.converged.sum())
            if gamma is not None:
                certified += (
                    certified_correct(logits, labels, gamma, radii, scale, out.converged).sum(dim=0).cpu().double()
                )
            take = x_raw.shape[0] if attack_samples is None else min(x_raw.shape[0], attack_samples - n_attacked)
            if take > 0:
                for j, e in enumerate(radii):
                    if progress:  # each radius's attack takes long: say which one runs
                        bar.set_description(f"{name}: attack ε={e:g}", refresh=True)
                    result = pgd_attack(
                        model, x_raw[:take], labels[:take], e, normalization, steps=attack_steps,
                        restarts=attack_restarts, step_size=attack_step_size, loss=attack_loss,
                        targets=attack_targets, generator=generator, allow_unconverged=allow_unconverged,
                    )
                    robust[j] += float(result.robust.sum())
                    attack_converged[j] += float(result.converged.sum())
                n_attacked += take
                if progress:
                    bar.set_description(f"{name}: evaluate and certify", refresh=False)
            if n_pool < lipschitz_samples:
                pool.append(x_model[: lipschitz_samples - n_pool].detach())
                n_pool += pool[-1].shape[0]
        if n_total == 0:
            raise ShapeError("data yielded no samples")
        points = torch.cat(pool)
        estimate = empirical_lipschitz(
            model, points, restarts=lipschitz_restarts, steps=lipschitz_steps, generator=generator,
            progress=progress, allow_unconverged=allow_unconverged,
        )
        jac = jacobian_norm(
            model, points, batch_size=batch_size, progress=progress, allow_unconverged=allow_unconverged
        )
        jac_converged = ~jac.isnan()
        # Unconverged samples are NaN: the bound is the largest over the converged ones (NaN if none).
        jac_max = float(jac[jac_converged].max()) if bool(jac_converged.any()) else math.nan
        lower = max((v for v in (estimate.value, jac_max) if not math.isnan(v)), default=math.nan)
        rows.append(
            {
                "model": name,
                "units": units_name(normalization),
                "samples": n_total,
                "attack_samples": n_attacked,
                "gamma": gamma,
                "gamma_input_units": None if gamma is None else gamma / scale,
                "clean_accuracy": n_correct / n_total,
                "eps": list(radii),
                "certified_accuracy": None if gamma is None else (certified / n_total).tolist(),
                "attack_accuracy": (robust / max(n_attacked, 1)).tolist() if n_attacked else None,
                "empirical_lipschitz": estimate.value,
                "jacobian_norm_max": jac_max,
                "lower_bound": lower,
                "tightness": None if gamma is None else lower / gamma,
                "converged_fraction": n_converged / n_total,
                "attack_converged_fraction": (attack_converged / n_attacked).tolist() if n_attacked else None,
                "lipschitz_converged_fraction": estimate.converged_fraction,
                "jacobian_converged_fraction": converged_fraction(jac_converged),
            }
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def all_converged(row: dict[str, Any]) -> bool:
    """Whether every solve behind a :func:`robustness_report` row converged (clean, attacks, Lipschitz)."""
    fractions = [row["converged_fraction"], row["lipschitz_converged_fraction"], row["jacobian_converged_fraction"]]
    fractions += row["attack_converged_fraction"] or []
    return all(f == 1.0 for f in fractions)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`robustness_report` as an aligned plain-text table.

    Accuracies are shown in percent; γ and the Lipschitz lower bound ``L_low`` in model-input
    units, and γ also in the units of ε (each row's ``units``, e.g. raw pixels). ``conv %`` is the
    percentage of the clean pass's solves that converged (samples that did not are never
    certified); ``all conv`` is ``no`` when any solve behind the row (attacks and Lipschitz
    search included) did not converge. All rows must share the same ε.
    """
    if not rows:
        return ""
    radii = rows[0]["eps"]
    if any(r["eps"] != radii for r in rows):
        raise ConfigurationError("format_table needs rows evaluated at the same eps")
    header = ["model", "ε units", "γ model", "L_low model", "L_low/γ", "γ in ε units", "conv %", "all conv",
              "clean %"]
    header += [f"cert@{e:g} %" for e in radii] + [f"pgd@{e:g} %" for e in radii]
    body = []
    for r in rows:
        cert = r["certified_accuracy"] or [None] * len(radii)
        attack = r["attack_accuracy"] or [None] * len(radii)
        body.append(
            [
                str(r["model"]),
                str(r["units"]),
                _fmt(r["gamma"], ".4g"),
                _fmt(r["lower_bound"], ".4g"),
                _fmt(r["tightness"], ".3f"),
                _fmt(r.get("gamma_input_units"), ".4g"),
                _fmt(100 * r["converged_fraction"], ".1f"),
                "yes" if all_converged(r) else "no",
                _fmt(100 * r["clean_accuracy"], ".1f"),
                *(_fmt(None if c is None else 100 * c, ".1f") for c in cert),
                *(_fmt(None if a is None else 100 * a, ".1f") for a in attack),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_accuracy_vs_eps(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of accuracy against ε: certified (solid) and attacked (dashed), one colour per model.

    Uses matplotlib's Agg canvas directly, so the global pyplot backend is left alone.

    Args:
        rows: rows of :func:`robustness_report`.
        path: where to write the PNG.
        title: optional figure title.

    Returns:
        the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not rows:
        raise ConfigurationError("plot_accuracy_vs_eps needs at least one row")
    units = {r["units"] for r in rows}
    figure = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    handles = []
    for i, r in enumerate(rows):
        colour = f"C{i % 10}"
        label = r["model"] if len(units) == 1 else f"{r['model']} (ε in {r['units']} units)"
        if r["certified_accuracy"] is not None:
            axes.plot(r["eps"], [100 * a for a in r["certified_accuracy"]], "-o", color=colour, markersize=3)
        if r["attack_accuracy"] is not None:
            axes.plot(r["eps"], [100 * a for a in r["attack_accuracy"]], "--s", color=colour, markersize=3)
        if r["certified_accuracy"] is None:
            label += " (no bound)"
        handles.append(Line2D([], [], color=colour, linewidth=2.5, label=label))
    # One legend entry per model (its colour) plus one per line style, instead of one per curve.
    handles.append(Line2D([], [], color="black", linestyle="-", marker="o", markersize=3, label="certified"))
    handles.append(Line2D([], [], color="black", linestyle="--", marker="s", markersize=3, label="PGD attack"))
    unit_text = f"{next(iter(units))} input units" if len(units) == 1 else "units per model"
    axes.set_xlabel(f"ℓ2 radius ε ({unit_text})")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(-2, 102)
    axes.grid(True, alpha=0.3)
    axes.legend(handles=handles, fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path
