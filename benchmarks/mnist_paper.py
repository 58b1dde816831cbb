"""The fully connected MNIST experiment of the LBEN paper (Revay, Wang & Manchester 2020), in one command.

Trains, on the real MNIST IDX files, a width-80 equilibrium network per model (LBEN with γ = 0.5,
1 and 5, the unconstrained LBEN and monDEQ), each solved by Peaceman-Rachford and trained with
Adam (lr 1e-3, batches of 128) on all 60,000 training images, then evaluates on the 10,000 test
images and prints one table:

- test error (%);
- the bound γ, in model units (inputs normalised with mean 0.1307, std 0.3081, as the paper's
  code did) and in pixel units (pixels in [0, 1]): γ / 0.3081;
- the empirical Lipschitz lower bound of the map the library computes (the larger of a pairwise
  gradient-ascent search and the largest local Jacobian norm, model units) and its ratio to γ;
- certified accuracy at ℓ2 radius ε (pixel units) from the margin and γ;
- ℓ2 PGD attack accuracy at the same ε (pixel units) on the first ``--attack-samples`` test images;
- the equilibrium solver's convergence on the test set and the training time per epoch.

With several ``--seeds`` every model is trained and evaluated once per seed, and a second table gives
per model the mean, standard deviation and range of the test error over the seeds and the mean
certified and attack accuracies: over seeds, the 5-epoch test error of one model has a standard
deviation of 0.1–0.2 %, as large as some of the differences between models.

The table is also written as CSV, markdown and JSON, with a PNG of accuracy against ε (certified
solid, attacked dashed), under ``--out``.

Usage::

    python benchmarks/mnist_paper.py --data-dir data/mnist  # 5 epochs, all five models
    python benchmarks/mnist_paper.py --quick                # smoke run: 1 epoch on a subset
    python benchmarks/mnist_paper.py --models lben0.5,mondeq --epochs 10 --data-dir /data/mnist
    python benchmarks/mnist_paper.py --data-dir data/mnist --seeds 0,1,2,3,4  # spread over seeds

The paper's own code, re-run on real MNIST for 5 epochs, reached test errors of 4.86 % (γ = 0.5),
3.24 % (γ = 1) and 2.84 % (γ = 5), and for γ = 0.5 certified accuracies (pixel units) of
86 / 67 / 38 / 13 % at ε = 0.5 / 1 / 1.5 / 2, each from one training run (one seed). Its monDEQ
(``SingleFcNet``, m = 1) and unconstrained network (``NODENFcNet_uncon``, m = 1), run with
Peaceman-Rachford at tol 1e-4 and α tuning, gave 2.44–2.63 % (mean 2.57 %, six runs: seeds 1–3,
two data orders) and 2.60–3.02 % (mean 2.80 %, seeds 1–3). From the same initial weights and on
the same batches, the library's monDEQ gives the same logits and gradients (to the solver
tolerance, relative difference about 1e-5) and the same 5-epoch test error within seed noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lben_ode.datasets import MNISTDataModule, load_mnist_arrays
from lben_ode.lightning_modules import LBENClassifier
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from lben_ode import LBEN, LBENError, MonDEQ
from lben_ode.errors import ConfigurationError, unknown_name
from lben_ode.models.base import EquilibriumModel
from lben_ode.robustness import plot_accuracy_vs_eps, robustness_report

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where the MNIST IDX files are looked for unless ``--data-dir`` says otherwise (as in configs/mnist.yaml).
DEFAULT_DATA_DIR = Path("data") / "mnist"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "mnist_paper"
DEFAULT_MODELS = ("lben0.5", "lben1", "lben5", "unconstrained", "mondeq")
DEFAULT_EPS = (0.5, 1.0, 1.5, 2.0)
FIXED_MODEL_NAMES = ("unconstrained", "mondeq")
#: Test error (%) of the paper's own code after 5 epochs on the same data: one run for each γ, the
#: mean of six runs (monDEQ) and of three (unconstrained); see the module docstring.
PAPER_5_EPOCH_ERROR = {"lben0.5": 4.86, "lben1": 3.24, "lben5": 2.84, "unconstrained": 2.80, "mondeq": 2.57}
LBEN_NAME = re.compile(r"^lben(?P<gamma>\d+(\.\d*)?|\.\d+)$")

#: What ``--quick`` changes (a smoke run of every stage in about a minute per model on a laptop CPU).
QUICK = {"epochs": 1, "train_batches": 40, "test_samples": 1000, "attack_samples": 100, "lipschitz_steps": 30}


# -- models ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A model of the experiment: its name and how to build it (width, solver options given later)."""

    name: str
    gamma: float | None
    kind: str  # "lben" or "mondeq"

    def build(self, width: int, margin: float | None, solver_options: dict[str, Any]) -> EquilibriumModel:
        """The untrained network on flat MNIST inputs (784 → width → 10), solved by Peaceman-Rachford."""
        extra = {} if margin is None else {"margin": margin}
        if self.kind == "mondeq":
            return MonDEQ(784, 10, width, solver="pr", **extra, **solver_options)
        return LBEN(784, 10, width, gamma=self.gamma, solver="pr", **extra, **solver_options)


def parse_models(text: str) -> list[ModelSpec]:
    """Model names, comma separated: ``lben<γ>`` (e.g. ``lben0.5``), ``unconstrained``, ``mondeq``.

    Raises:
        UnknownNameError: for a name that is none of these.
        ConfigurationError: for an empty list, a repeated name or γ ≤ 0.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigurationError("--models needs at least one model name")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"--models lists a model twice: {text!r}")
    specs = []
    for name in names:
        match = LBEN_NAME.match(name)
        if match:
            gamma = float(match["gamma"])
            if not gamma > 0:
                raise ConfigurationError(f"model {name!r}: γ must be > 0")
            specs.append(ModelSpec(name, gamma, "lben"))
        elif name == "unconstrained":
            specs.append(ModelSpec(name, None, "lben"))
        elif name == "mondeq":
            specs.append(ModelSpec(name, None, "mondeq"))
        else:
            raise unknown_name("model", name, ["lben<γ> (e.g. lben0.5)", *FIXED_MODEL_NAMES])
    return specs


# -- training -------------------------------------------------------------------------------------
class EpochTimer(Callback):
    """Wall time of each training epoch: its batches (forward, backward, optimiser), not validation."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start: float | None = None
        self._end: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync(pl_module)
        self._start, self._end = time.perf_counter(), None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Validation runs inside the training epoch, before on_train_epoch_end.
        if self._start is not None and self._end is None and not trainer.sanity_checking:
            self._sync(pl_module)
            self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._start is None:
            return
        if self._end is None:
            self._sync(pl_module)
            self._end = time.perf_counter()
        self.seconds.append(self._end - self._start)
        self._start = None

    @staticmethod
    def _sync(pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


@dataclass
class TrainingResult:
    """What training one model produced: the trained network, its device and timings."""

    model: EquilibriumModel
    device: torch.device
    epoch_seconds: list[float]
    solver: dict[str, float] = field(default_factory=dict)


def train(
    spec: ModelSpec, model: EquilibriumModel, datamodule: MNISTDataModule, args: argparse.Namespace, seed: int
) -> TrainingResult:
    """Train ``model`` with :class:`LBENClassifier` and a Lightning Trainer; validate on the test set."""
    classifier = LBENClassifier(model, lr=args.lr, betas=(args.beta1, 0.999), certify_eps=args.eps)
    timer = EpochTimer()
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        logger=CSVLogger(save_dir=str(args.out / "logs"), name=spec.name, version=f"seed{seed}"),
        callbacks=[timer],
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=args.train_batches or 1.0,
        limit_val_batches=(math.ceil(args.test_samples / args.batch_size) if args.test_samples else 1.0),
        log_every_n_steps=50,
        enable_progress_bar=not args.no_progress,
    )
    trainer.fit(classifier, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/forward/")}
    solver = {k.removeprefix("val/forward/"): v for k, v in metrics.items()}
    return TrainingResult(model, trainer.strategy.root_device, timer.seconds, solver)


# -- evaluation -----------------------------------------------------------------------------------
def raw_test_set(data_dir: Path, samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images as raw pixels in [0, 1], flattened to ``(N, 784)``, and labels ``(N,)``."""
    arrays = load_mnist_arrays(data_dir)
    x = torch.from_numpy(arrays["test_images"]).float().div(255.0).flatten(1)
    y = torch.from_numpy(arrays["test_labels"]).long()
    if samples is not None:
        x, y = x[:samples], y[:samples]
    return x, y


def evaluate(
    spec: ModelSpec,
    result: TrainingResult,
    test: tuple[torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    """:func:`robustness_report` of one trained model (ε and γ_pixel in pixel units, the rest model units)."""
    model = result.model.to(result.device)
    (row,) = robustness_report(
        [(spec.name, model, MNISTDataModule.normalization)],
        test,
        args.eps,
        batch_size=args.eval_batch_size,
        attack_steps=args.attack_steps,
        attack_restarts=args.attack_restarts,
        attack_samples=args.attack_samples,
        lipschitz_samples=args.lipschitz_samples,
        lipschitz_restarts=args.lipschitz_restarts,
        lipschitz_steps=args.lipschitz_steps,
        seed=seed,
        progress=not args.no_progress,
    )
    return row


def table_row(row: dict[str, Any], result: TrainingResult, seed: int) -> dict[str, Any]:
    """One flat row of the output table; every column name carries its units."""
    out: dict[str, Any] = {
        "model": row["model"],
        "seed": seed,
        "test_error_pct": 100.0 * (1.0 - row["clean_accuracy"]),
        "gamma_model": row["gamma"],
        "gamma_pixel": row["gamma_input_units"],
        "lipschitz_lower_model": row["lower_bound"],
        "lipschitz_lower_over_gamma": row["tightness"],
        "empirical_lipschitz_model": row["empirical_lipschitz"],
        "jacobian_norm_max_model": row["jacobian_norm_max"],
    }
    certified = row["certified_accuracy"] or [None] * len(row["eps"])
    attacked = row["attack_accuracy"] or [None] * len(row["eps"])
    for e, c in zip(row["eps"], certified, strict=True):
        out[f"certified_pct_eps{e:g}_pixel"] = None if c is None else 100.0 * c
    for e, a in zip(row["eps"], attacked, strict=True):
        out[f"pgd_pct_eps{e:g}_pixel"] = None if a is None else 100.0 * a
    out["test_samples"] = row["samples"]
    out["attack_samples"] = row["attack_samples"]
    out["solver_iterations_mean"] = result.solver.get("iterations_mean")
    out["solver_residual_max"] = result.solver.get("residual_max")
    out["solver_converged_fraction"] = result.solver.get("converged_fraction")
    out["train_s_per_epoch"] = sum(result.epoch_seconds) / len(result.epoch_seconds) if result.epoch_seconds else None
    out["epochs"] = len(result.epoch_seconds)
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _by_model(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by their "model", in the order each model first appears."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["model"], []).append(r)
    return groups


def seed_summary(rows: Sequence[dict[str, Any]], eps: Sequence[float]) -> list[dict[str, Any]]:
    """Per model, over its seeds: test error mean, sample standard deviation, min and max (%), mean
    certified and PGD accuracy at each ε (pixel units, %), the largest L_low/γ and mean s/epoch.

    Models keep the order of their first row; the standard deviation is None for a single seed.
    """
    summary = []
    for model, runs in _by_model(rows).items():
        errors = [r["test_error_pct"] for r in runs]
        tightness = [r["lipschitz_lower_over_gamma"] for r in runs if r["lipschitz_lower_over_gamma"] is not None]
        out: dict[str, Any] = {
            "model": model,
            "seeds": len(runs),
            "test_error_pct_mean": statistics.fmean(errors),
            "test_error_pct_sd": statistics.stdev(errors) if len(errors) > 1 else None,
            "test_error_pct_min": min(errors),
            "test_error_pct_max": max(errors),
            "paper_code_5_epoch_error_pct": PAPER_5_EPOCH_ERROR.get(model),
            "lipschitz_lower_over_gamma_max": max(tightness) if tightness else None,
        }
        for kind in ("certified", "pgd"):
            for e in eps:
                key = f"{kind}_pct_eps{e:g}_pixel"
                out[f"{key}_mean"] = _mean([r[key] for r in runs])
        out["train_s_per_epoch_mean"] = _mean([r["train_s_per_epoch"] for r in runs])
        summary.append(out)
    return summary


def mean_report_rows(report_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One :func:`robustness_report`-style row per model, with accuracies averaged over its seeds (for the plot)."""

    def average(runs: list[dict[str, Any]], key: str) -> list[float] | None:
        if runs[0][key] is None:
            return None
        return [statistics.fmean(values) for values in zip(*(r[key] for r in runs), strict=True)]

    return [
        {
            **runs[0],
            "certified_accuracy": average(runs, "certified_accuracy"),
            "attack_accuracy": average(runs, "attack_accuracy"),
        }
        for runs in _by_model(report_rows).values()
    ]


# -- output ---------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def display_table(
    rows: Sequence[dict[str, Any]], eps: Sequence[float], with_seed: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the printed table (percentages, γ and Lipschitz bounds rounded)."""
    header = ["model", *(["seed"] if with_seed else []), "test err %", "γ model", "γ pixel", "L_low model", "L_low/γ"]
    header += [f"cert@{e:g} %" for e in eps] + [f"PGD@{e:g} %" for e in eps]
    header += ["PR iters", "max resid", "s/epoch"]
    body = []
    for r in rows:
        body.append(
            [
                r["model"],
                *([str(r["seed"])] if with_seed else []),
                _fmt(r["test_error_pct"], ".2f"),
                _fmt(r["gamma_model"], ".3g"),
                _fmt(r["gamma_pixel"], ".3g"),
                _fmt(r["lipschitz_lower_model"], ".3f"),
                _fmt(r["lipschitz_lower_over_gamma"], ".3f"),
                *(_fmt(r[f"certified_pct_eps{e:g}_pixel"], ".1f") for e in eps),
                *(_fmt(r[f"pgd_pct_eps{e:g}_pixel"], ".1f") for e in eps),
                _fmt(r["solver_iterations_mean"], ".1f"),
                _fmt(r["solver_residual_max"], ".1e"),
                _fmt(r["train_s_per_epoch"], ".1f"),
            ]
        )
    return header, body


def display_summary(summary: Sequence[dict[str, Any]], eps: Sequence[float]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the over-seeds table."""
    header = ["model", "seeds", "test err % mean", "sd", "min", "max", "paper's code (5 ep)", "max L_low/γ"]
    header += [f"cert@{e:g} %" for e in eps] + [f"PGD@{e:g} %" for e in eps] + ["s/epoch"]
    body = []
    for r in summary:
        body.append(
            [
                r["model"],
                str(r["seeds"]),
                _fmt(r["test_error_pct_mean"], ".2f"),
                _fmt(r["test_error_pct_sd"], ".2f"),
                _fmt(r["test_error_pct_min"], ".2f"),
                _fmt(r["test_error_pct_max"], ".2f"),
                _fmt(r["paper_code_5_epoch_error_pct"], ".2f"),
                _fmt(r["lipschitz_lower_over_gamma_max"], ".3f"),
                *(_fmt(r[f"certified_pct_eps{e:g}_pixel_mean"], ".1f") for e in eps),
                *(_fmt(r[f"pgd_pct_eps{e:g}_pixel_mean"], ".1f") for e in eps),
                _fmt(r["train_s_per_epoch_mean"], ".1f"),
            ]
        )
    return header, body


def table_caption(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    """What the table's numbers mean and which units they use."""
    n_test = rows[0]["test_samples"]
    n_attack = rows[0]["attack_samples"]
    return (
        f"MNIST, fully connected, width {args.width}, margin m={args.margin:g}, Peaceman-Rachford (α={args.alpha:g}, "
        f"tol={args.tol:g} "
        f"relative fixed-point residual), Adam lr {args.lr:g} (β1 {args.beta1:g}), batch {args.batch_size}, "
        f"{args.epochs} epoch(s), seed(s) {', '.join(map(str, args.seeds))}.\n"
        f"Test error, certified accuracy (cert) and solver statistics on {n_test} test images; "
        f"PGD ℓ2 attack accuracy on the first {n_attack} ({args.attack_steps} steps, "
        f"{args.attack_restarts} restarts).\n"
        "ε in pixel units (pixels in [0, 1]); γ and L_low in model units (inputs normalised with mean "
        "0.1307, std 0.3081), γ pixel = γ / 0.3081.\n"
        "L_low: empirical Lipschitz lower bound of the computed map (max of a pairwise search and the "
        "largest local Jacobian norm); PR iters: mean per test sample; max resid: largest relative "
        "fixed-point residual on the test set; s/epoch: training only (no validation)."
    )


def aligned(header: list[str], body: list[list[str]]) -> str:
    """A plain-text table with right-aligned numbers."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(header: list[str], body: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def write_outputs(
    rows: list[dict[str, Any]],
    report_rows: list[dict[str, Any]],
    results: dict[str, TrainingResult],
    args: argparse.Namespace,
    total_s: float,
) -> str:
    """Write table.csv, table.md, results.json and accuracy_vs_eps.png under ``args.out`` (and
    summary.csv with several seeds); return the text of the printed tables."""
    several = len(args.seeds) > 1
    header, body = display_table(rows, args.eps, with_seed=several)
    caption = table_caption(rows, args)
    text = f"{caption}\n\n{aligned(header, body)}"
    md = f"# MNIST reproduction of the LBEN paper\n\n{caption}\n\n{markdown(header, body)}\n\n"
    summary = seed_summary(rows, args.eps)
    with open(args.out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if several:
        s_header, s_body = display_summary(summary, args.eps)
        s_caption = (
            f"Over seeds {', '.join(map(str, args.seeds))}: test error mean, sample standard deviation and range; "
            "the paper's code's 5-epoch error for comparison (one run per γ, a mean over seeds for the "
            "unconstrained network and monDEQ); the largest L_low/γ; mean accuracies (%)."
        )
        text += f"\n\n{s_caption}\n\n{aligned(s_header, s_body)}"
        md += f"## Over seeds\n\n{s_caption}\n\n{markdown(s_header, s_body)}\n\n"
        with open(args.out / "summary.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)
    (args.out / "table.md").write_text(md + f"Total wall time: {total_s:.0f} s.\n")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "rows": rows,
                "summary": summary,
                "epoch_seconds": {name: r.epoch_seconds for name, r in results.items()},
                "solver_test_stats": {name: r.solver for name, r in results.items()},
                "total_seconds": total_s,
                "device": str(next(iter(results.values())).device),
                "torch": torch.__version__,
            },
            indent=2,
        )
    )
    plot_rows = mean_report_rows(report_rows) if several else report_rows
    plot_accuracy_vs_eps(
        plot_rows,
        args.out / "accuracy_vs_eps.png",
        title=f"MNIST, width {args.width}, {args.epochs} epoch(s)"
        + (f", mean of {len(args.seeds)} seeds" if several else "")
        + "; ε in pixel units (pixels in [0, 1])",
    )
    return text


# -- command line ---------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """argparse type: an int ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int ≥ 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite float > 0, got {text}")
    return value


def eps_list(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated radii ≥ 0."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
        raise argparse.ArgumentTypeError(f"expected radii ≥ 0, got {text!r}")
    return values


def seed_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated distinct integer seeds."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected at least one seed and no repeats, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the four MNIST IDX files")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the table, plot and logs go")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="lben<γ>, unconstrained, mondeq (comma list)")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--width", type=positive_int, default=80)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--beta1",
        type=float,
        default=0.9,
        help="Adam's β1 (the paper's LBEN experiment used Adam's default 0.9)",
    )
    p.add_argument(
        "--margin",
        type=positive_float,
        default=1.0,
        help="monotonicity margin m of every model (measured here: 1.0 trains to lower test error in 5 "
        "epochs than the library default 0.1, for every model)",
    )
    p.add_argument("--alpha", type=positive_float, default=1.0, help="Peaceman-Rachford step α")
    p.add_argument("--tol", type=positive_float, default=1e-5, help="solver tolerance (relative residual)")
    p.add_argument("--max-iter", type=positive_int, default=300, help="solver iteration budget")
    p.add_argument("--eps", type=eps_list, default=DEFAULT_EPS, help="ℓ2 radii in pixel units")
    p.add_argument("--attack-samples", type=positive_int, default=1000, help="test images attacked by PGD")
    p.add_argument("--attack-steps", type=positive_int, default=50)
    p.add_argument("--attack-restarts", type=positive_int, default=3)
    p.add_argument("--lipschitz-samples", type=positive_int, default=128, help="test images seeding the search")
    p.add_argument("--lipschitz-restarts", type=positive_int, default=2)
    p.add_argument("--lipschitz-steps", type=positive_int, default=100)
    p.add_argument("--test-samples", type=positive_int, default=None, help="evaluate on the first N test images")
    p.add_argument("--train-batches", type=positive_int, default=None, help="training batches per epoch")
    p.add_argument("--eval-batch-size", type=positive_int, default=250)
    p.add_argument(
        "--seeds",
        type=seed_list,
        default=(0,),
        help="comma-separated seeds; each model is trained and evaluated once per seed, and a second "
        "table summarises the spread (e.g. 0,1,2,3,4)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads for torch; the matrices are small (batch × 80), so one thread is as fast "
        "and does not stall on a busy machine",
    )
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator (auto uses a GPU when present)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[ModelSpec]]:
    """Parsed options (``--quick`` applied) and the models to run."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        defaults = vars(parser.parse_args([]))
        for key, value in QUICK.items():
            if getattr(args, key) == defaults[key]:  # explicit options win over --quick
                setattr(args, key, value)
    try:
        specs = parse_models(args.models)
    except LBENError as exc:
        parser.error(str(exc))
    if args.attack_samples > (args.test_samples or 10_000):
        args.attack_samples = args.test_samples or 10_000
    return args, specs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the experiment; returns the exit status."""
    args, specs = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    # Batches come from in-memory tensors: worker processes would only add overhead.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    started = time.perf_counter()
    log = _printer()

    datamodule = MNISTDataModule(str(args.data_dir), batch_size=args.batch_size, flatten=True, val_size=0)
    datamodule.setup()
    test = raw_test_set(args.data_dir, args.test_samples)
    solver_options = {"alpha": args.alpha, "tol": args.tol, "max_iter": args.max_iter}

    results: dict[str, TrainingResult] = {}
    report_rows, rows = [], []
    for seed in args.seeds:
        for spec in specs:
            run = f"{spec.name}, seed {seed}"
            seed_everything(seed, verbose=False)
            model = spec.build(args.width, args.margin, solver_options)
            log(f"[{run}] training {args.epochs} epoch(s): {model!r}")
            result = train(spec, model, datamodule, args, seed)
            results[f"{spec.name}/seed{seed}"] = result
            log(f"[{run}] seconds per epoch: {', '.join(f'{s:.1f}' for s in result.epoch_seconds)}")
            log(f"[{run}] evaluating (certificates, PGD on {args.attack_samples}, Lipschitz search)")
            t0 = time.perf_counter()
            report = evaluate(spec, result, test, args, seed)
            report_rows.append(report)
            rows.append(table_row(report, result, seed))
            log(
                f"[{run}] test error {rows[-1]['test_error_pct']:.2f} %, L_low {report['lower_bound']:.3f} "
                f"(γ = {report['gamma']}), evaluation {time.perf_counter() - t0:.0f} s"
            )
    total = time.perf_counter() - started
    text = write_outputs(rows, report_rows, results, args, total)
    print(f"\n{text}\n\nTotal wall time: {total:.0f} s. Results in {args.out}", flush=True)
    return 0


def _printer() -> Callable[[str], None]:
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {message}", flush=True)

    return log


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LBENError as exc:  # missing data, bad options: the message, not a traceback
        sys.exit(f"mnist_paper.py: error: {type(exc).__name__}: {exc}")
