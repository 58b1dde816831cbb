"""``lben-ode robustness``: clean, certified and attacked accuracy of trained checkpoints, as a table and a plot.

Each ``--ckpt`` written by ``lben-ode fit`` records its model and data module, so the command
rebuilds both, takes the first ``--samples`` test examples back to raw (pixel) units with the data
module's normalisation and runs :func:`lben_ode.robustness.robustness_report` on every model with
the same data. It writes ``robustness.txt`` (the table), ``robustness.csv`` (one row per model and
ε), ``robustness.json`` (the report's rows and the settings) and ``accuracy_vs_eps.png`` under
``--out``.

A certificate needs a converged equilibrium solve: when any evaluated sample's solve did not
converge (e.g. ``--solver-option max_iter=1``) the command stops with an error, unless
``--allow-unconverged`` is given; then such samples count as neither certified nor robust and the
table, CSV and JSON carry the converged fractions.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lben_ode.errors import ConfigurationError, ConvergenceError, LBENError, ShapeError, unknown_name
from lben_ode.normalization import Normalization
from lben_ode.robustness import format_table, plot_accuracy_vs_eps, robustness_report
from lben_ode.robustness.report import all_converged
from lben_ode.solvers import available

from . import checkpoint as checkpoint_files
from .command import run_reporting_errors, traceback_wanted
from .progress import progress_wanted

if TYPE_CHECKING:  # Lightning is imported when a checkpoint is loaded, so that --help answers at once
    from lightning.pytorch import LightningDataModule

    from .classifier import LBENClassifier

#: Where the table, CSV, JSON and plot go unless ``--out`` says otherwise.
DEFAULT_OUT = Path("runs") / "robustness"

#: Test examples evaluated unless ``--samples`` says otherwise.
DEFAULT_SAMPLES = 1000

# The command's defaults are the report's, so the two cannot drift apart.
_REPORT_DEFAULTS = {name: p.default for name, p in inspect.signature(robustness_report).parameters.items()}

#: Files written under ``--out``.
TABLE_FILE, CSV_FILE, JSON_FILE = "robustness.txt", "robustness.csv", "robustness.json"
PLOT_FILE = "accuracy_vs_eps.png"

#: Columns of ``robustness.csv``: one row per model and radius ε; accuracies are fractions in [0, 1].
CSV_FIELDS = (
    "model", "checkpoint", "solver", "units", "eps", "clean_accuracy", "certified_accuracy", "attack_accuracy",
    "samples", "attack_samples", "gamma", "gamma_input_units", "empirical_lipschitz", "jacobian_norm_max",
    "lower_bound", "tightness", "converged_fraction", "attack_converged_fraction", "lipschitz_converged_fraction",
    "jacobian_converged_fraction",
)


# -- arguments --------------------------------------------------------------------------------------
def parse_eps(text: str) -> tuple[float, ...]:
    """``"0.5,1,1.5"`` → ``(0.5, 1.0, 1.5)``: ℓ2 radii, finite and ≥ 0 (argparse ``type``)."""
    try:
        radii = tuple(float(part) for part in text.split(","))
    except ValueError:
        radii = ()
    if not radii or not all(math.isfinite(e) and e >= 0 for e in radii):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of radii ≥ 0 (e.g. 0.5,1,2), got {text!r}")
    return radii


def parse_solver_option(text: str) -> tuple[str, Any]:
    """``"tol=1e-6"`` → ``("tol", 1e-06)``: the value is read as JSON (numbers, true, null), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. tol=1e-6), got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _count(minimum: int):
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {minimum}, got {text!r}")
        return value

    return check


def build_parser() -> argparse.ArgumentParser:
    """The ``lben-ode robustness`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lben-ode robustness",
        description="Clean, certified and PGD-attacked accuracy of trained checkpoints on the test set of "
        "the data they were trained on; writes a table, CSV, JSON and a plot of accuracy against ε.",
    )
    parser.add_argument("--ckpt", action="append", required=True, type=Path, metavar="PATH",
                        help="checkpoint written by `lben-ode fit` (repeat to compare several)")
    parser.add_argument("--name", action="append", metavar="NAME",
                        help="name of each checkpoint in the table, in --ckpt order (default: the file "
                        "name, or the run directory when file names repeat)")
    parser.add_argument("--eps", type=parse_eps, metavar="E1,E2,...",
                        help="ℓ2 radii in raw (pixel) units (default: the first checkpoint's certify_eps)")
    parser.add_argument("--samples", type=_count(1), default=DEFAULT_SAMPLES, metavar="N",
                        help=f"evaluate the first N test examples (default {DEFAULT_SAMPLES})")
    parser.add_argument("--attack-samples", type=_count(0), default=_REPORT_DEFAULTS["attack_samples"],
                        metavar="N", help="attack only the first N of them (default: all)")
    parser.add_argument("--attack-steps", type=_count(1), default=_REPORT_DEFAULTS["attack_steps"],
                        metavar="N", help="PGD steps per restart (default %(default)s)")
    parser.add_argument("--attack-restarts", type=_count(1), default=_REPORT_DEFAULTS["attack_restarts"],
                        metavar="N", help="PGD restarts (default %(default)s)")
    parser.add_argument("--lipschitz-samples", type=_count(2), default=_REPORT_DEFAULTS["lipschitz_samples"],
                        metavar="N", help="test inputs that start the Lipschitz lower-bound search "
                        "(default %(default)s)")
    parser.add_argument("--lipschitz-steps", type=_count(1), default=_REPORT_DEFAULTS["lipschitz_steps"],
                        metavar="N", help="steps of the Lipschitz lower-bound search (default %(default)s)")
    parser.add_argument("--solver", metavar="NAME",
                        help=f"evaluate with this equilibrium solver ({', '.join(available())}); "
                        "default: each checkpoint's own")
    parser.add_argument("--solver-option", action="append", type=parse_solver_option, default=[],
                        metavar="KEY=VALUE", help="solver option, e.g. tol=1e-6 (repeatable)")
    parser.add_argument("--allow-unconverged", action="store_true",
                        help="evaluate even when some equilibrium solves do not converge, counting those "
                        "samples as neither certified nor robust (default: stop with an error)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="output directory (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device to evaluate on (default cpu)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr for each model's stages (evaluate and certify, attack, "
                        "Lipschitz search, Jacobian); default: when stderr is a terminal, or LBEN_ODE_PROGRESS=1")
    parser.add_argument("--torch-num-threads", type=_count(1), default=1, metavar="N",
                        help="intra-op CPU threads (torch.set_num_threads; default 1, as for `lben-ode fit`)")
    return parser


def checkpoint_names(paths: Sequence[Path], names: Sequence[str] | None = None) -> list[str]:
    """The table name of each checkpoint: ``names`` when given, else file stems made unique.

    Stems that repeat (``last`` of several runs) are replaced by the run directory (the folder above
    ``checkpoints/``); names that still repeat get ``#2``, ``#3``, ….
    """
    if names:
        if len(names) != len(paths):
            raise ConfigurationError(
                f"--name is given {len(names)} times for {len(paths)} --ckpt; give one per checkpoint"
            )
        if len(set(names)) != len(names):
            raise ConfigurationError(f"--name values must differ, got {list(names)}")
        return list(names)
    stems = [p.stem for p in paths]
    chosen = [_run_name(p) if stems.count(p.stem) > 1 else p.stem for p in paths]
    unique, seen = [], {}
    for name in chosen:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _run_name(path: Path) -> str:
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run.name or path.stem


# -- loading ----------------------------------------------------------------------------------------
class InputReshape(nn.Module):
    """``model`` fed per-sample inputs reshaped to ``shape`` (flat vectors ↔ images).

    Reshaping keeps ℓ2 distances, so the Lipschitz bound γ is the model's own. It lets models
    trained on flat and on image-shaped inputs be evaluated on the same raw images.
    """

    def __init__(self, model: nn.Module, shape: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``model`` for ``x`` shaped ``(batch, ...)`` with ``prod(shape)`` values per sample."""
        return self.model(x.reshape(x.shape[0], *self.shape))

    def lipschitz_bound(self) -> float | None:
        """The model's ℓ2 Lipschitz bound γ (model input units), unchanged by the reshape."""
        return self.model.lipschitz_bound()

    @property
    def solver_stats(self) -> dict[str, Any]:
        """The wrapped model's statistics of its last solves (``{}`` for a model without solves)."""
        return getattr(self.model, "solver_stats", {})


@dataclass
class TestSet:
    """The first test examples of a data module, in raw units.

    Attributes:
        x_raw: ``(N, *image_shape)`` raw inputs (pixels); the data module's sample shape when it has
            no ``image_shape``.
        labels: ``(N,)`` class indices.
        normalization: maps ``x_raw`` to what the model was trained on (None: they are the same).
        model_shape: per-sample shape the data module feeds the model (flat for dense models).
    """

    x_raw: torch.Tensor
    labels: torch.Tensor
    normalization: Normalization | None
    model_shape: tuple[int, ...]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as plain data (``weights_only=True``, on the CPU), with its model's configuration.

    Raises:
        CheckpointError: the file is missing, unreadable, not a Lightning checkpoint, or does not record
            the configuration of its model (``class_path`` and ``init_args``).
    """
    checkpoint = checkpoint_files.read_checkpoint(path)
    checkpoint_files.require_recorded_model(checkpoint, path)
    return checkpoint


def load_classifier(path: Path, solver: str | None, solver_options: dict[str, Any]) -> LBENClassifier:
    """The :class:`LBENClassifier` saved at ``path``, with ``solver`` and ``solver_options`` applied.

    Without ``solver``, the options are merged into the checkpoint's own solver options.
    """
    from .classifier import LBENClassifier

    try:
        module = LBENClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except LBENError:
        raise
    except Exception as exc:  # jsonargparse, state_dict and import errors: the file does not fit this code
        raise ConfigurationError(f"cannot rebuild the model of {str(path)!r}: {exc}") from exc
    if solver is not None:
        module.set_solver(solver, **solver_options)
    elif solver_options:
        current = module.model.solver
        module.set_solver(current.name, **{**current.options, **solver_options})
    return module.eval()


def load_datamodule(checkpoint: dict[str, Any], path: Path) -> LightningDataModule:
    """The data module recorded in ``checkpoint`` (by ``lben-ode fit``); :class:`DigitsDataModule` otherwise."""
    from lben_ode.datasets import DigitsDataModule
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import instantiate_module

    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    try:
        # The instantiator Lightning's CLI records: checks the arguments against the class signature.
        if "_class_path" in hparams:
            return instantiate_module(LightningDataModule, hparams)
        return instantiate_module(DigitsDataModule, hparams)
    except LBENError:
        raise
    except Exception as exc:  # jsonargparse reports unknown classes and arguments in several types
        raise ConfigurationError(f"cannot rebuild the data module of {str(path)!r} from {hparams}: {exc}") from exc


def first_test_examples(data: LightningDataModule, samples: int) -> TestSet:
    """The first ``samples`` examples of ``data``'s test loader, taken back to raw units."""
    data.prepare_data()
    data.setup("test")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    kept = 0
    for batch in data.test_dataloader():
        xs.append(batch[0][: samples - kept])
        ys.append(batch[1][: samples - kept])
        kept += xs[-1].shape[0]
        if kept >= samples:
            break
    if not kept:
        raise ConfigurationError(f"the test set of {type(data).__name__} is empty")
    x, labels = torch.cat(xs), torch.cat(ys)
    model_shape = tuple(x.shape[1:])
    image_shape = getattr(data, "image_shape", None)
    if image_shape is not None:
        # Per-channel normalisation needs (batch, C, H, W); flat inputs are C·H·W in that order.
        x = x.reshape(x.shape[0], *image_shape)
    normalization = getattr(data, "normalization", None)
    x_raw = x if normalization is None else normalization.to_raw(x)
    return TestSet(x_raw.contiguous(), labels, normalization, model_shape)


def _same_examples(a: TestSet, b: TestSet) -> bool:
    return (
        a.x_raw.shape == b.x_raw.shape
        and torch.equal(a.labels, b.labels)
        # Normalisation round trips differ in the last bits.
        and torch.allclose(a.x_raw, b.x_raw, rtol=1e-5, atol=1e-5)
    )


def _check_fits(name: str, model: nn.Module, test: TestSet, num_classes: int | None) -> None:
    model_shape = getattr(model, "input_shape", None)
    if model_shape is not None and tuple(model_shape) != test.model_shape:
        raise ShapeError(
            f"{name}: the model takes inputs shaped {tuple(model_shape)} but its data module gives {test.model_shape}"
        )
    out_features = getattr(model, "out_features", None)
    if num_classes is not None and out_features is not None and num_classes != out_features:
        raise ShapeError(f"{name}: the model has {out_features} outputs but the data has {num_classes} classes")


# -- running ----------------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace) -> tuple[list[dict[str, Any]], tuple[float, ...]]:
    """Load every checkpoint and run the robustness report on the shared test examples.

    Returns:
        the report's rows, each with ``checkpoint`` (path) and ``solver`` (name) added, and the radii ε.
    """
    if args.solver is not None and args.solver not in available():
        raise unknown_name("solver", args.solver, available())
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise ConfigurationError(f"bad --device {args.device!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"--device {args.device} asks for a GPU, but torch sees no CUDA device")
    names = checkpoint_names(args.ckpt, args.name)
    checkpoints = [read_checkpoint(path) for path in args.ckpt]  # every file, before any slow work
    solver_options = dict(args.solver_option)
    models: list[tuple[str, nn.Module, Normalization | None]] = []
    solvers: list[str] = []
    reference: TestSet | None = None
    eps = args.eps
    data_cache: dict[str, tuple[TestSet, int | None]] = {}
    for name, path, checkpoint in zip(names, args.ckpt, checkpoints, strict=True):
        module = load_classifier(path, args.solver, solver_options)
        if eps is None:
            eps = tuple(module.certify_eps)
        hparams = {k: v for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items() if k != "batch_size"}
        key = repr(sorted(hparams.items()))
        if key not in data_cache:
            data = load_datamodule(checkpoint, path)
            data_cache[key] = (first_test_examples(data, args.samples), getattr(data, "num_classes", None))
        test, num_classes = data_cache[key]
        model = module.model
        _check_fits(name, model, test, num_classes)
        if reference is None:
            reference = test
        elif not _same_examples(reference, test):
            raise ConfigurationError(
                f"{name} ({path}) was trained on other test data than {names[0]} ({args.ckpt[0]}); "
                "compare checkpoints of the same data set"
            )
        if tuple(reference.x_raw.shape[1:]) != test.model_shape:
            model = InputReshape(model, test.model_shape)
        models.append((name, model.to(device), test.normalization))
        solvers.append(module.model.solver.name)
    assert reference is not None and eps is not None  # --ckpt is required
    rows = robustness_report(
        models,
        (reference.x_raw, reference.labels),
        eps,
        attack_steps=args.attack_steps,
        attack_restarts=args.attack_restarts,
        attack_samples=args.attack_samples,
        lipschitz_samples=args.lipschitz_samples,
        lipschitz_steps=args.lipschitz_steps,
        seed=args.seed,
        progress=progress_wanted(args.progress),
        allow_unconverged=args.allow_unconverged,
    )
    # Which file and solver each row comes from, next to its name.
    rows = [
        {"model": row.pop("model"), "checkpoint": str(path), "solver": solver, **row}
        for row, path, solver in zip(rows, args.ckpt, solvers, strict=True)
    ]
    return rows, tuple(eps)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One line per model and radius ε with the columns of :data:`CSV_FIELDS` (empty for None)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            certified = row["certified_accuracy"] or [None] * len(row["eps"])
            attacked = row["attack_accuracy"] or [None] * len(row["eps"])
            attack_converged = row["attack_converged_fraction"] or [None] * len(row["eps"])
            for e, c, a, ac in zip(row["eps"], certified, attacked, attack_converged, strict=True):
                values = {
                    **row, "eps": e, "certified_accuracy": c, "attack_accuracy": a, "attack_converged_fraction": ac,
                }
                writer.writerow({k: "" if values[k] is None else values[k] for k in CSV_FIELDS})


def write_outputs(rows: Sequence[dict[str, Any]], out: Path, settings: dict[str, Any]) -> dict[str, Path]:
    """Write the table, CSV, JSON (rows and ``settings``) and plot under ``out``; returns their paths by kind."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the output directory {str(out)!r}: {exc}") from exc
    paths = {"table": out / TABLE_FILE, "csv": out / CSV_FILE, "json": out / JSON_FILE, "plot": out / PLOT_FILE}
    paths["table"].write_text(format_table(rows) + "\n")
    write_csv(rows, paths["csv"])
    paths["json"].write_text(json.dumps({"settings": settings, "rows": list(rows)}, indent=2) + "\n")
    title = f"{rows[0]['samples']} test examples, PGD {settings['attack_steps']} steps × {settings['attack_restarts']}"
    plot_accuracy_vs_eps(rows, paths["plot"], title=title)
    return paths


def run(argv: Sequence[str]) -> dict[str, Path]:
    """Run ``lben-ode robustness ARGV``: print the table and where the files went; returns their paths.

    Raises:
        LBENError: for missing or unsuitable checkpoints, unknown solvers and bad settings.
    """
    args = build_parser().parse_args(list(argv))
    torch.set_num_threads(args.torch_num_threads)
    torch.manual_seed(args.seed)
    rows, eps = evaluate(args)
    settings = {
        "checkpoints": [str(p) for p in args.ckpt],
        "eps": list(eps),
        "eps_units": rows[0]["units"],
        "samples": args.samples,
        "attack_samples": args.attack_samples,
        "attack_steps": args.attack_steps,
        "attack_restarts": args.attack_restarts,
        "lipschitz_samples": args.lipschitz_samples,
        "lipschitz_steps": args.lipschitz_steps,
        "solver": args.solver,
        "solver_options": dict(args.solver_option),
        "seed": args.seed,
        "device": args.device,
        "allow_unconverged": args.allow_unconverged,
    }
    paths = write_outputs(rows, args.out, settings)
    print(format_table(rows))
    unconverged = [row["model"] for row in rows if not all_converged(row)]
    if unconverged:
        print(
            f"note: some equilibrium solves of {', '.join(unconverged)} did not converge (--allow-unconverged); "
            "those samples count as neither certified nor robust, see the conv columns",
            file=sys.stderr,
        )
    print()
    width = max(len(kind) for kind in paths) + 2
    print("\n".join(f"{kind + ':':<{width}}{path}" for kind, path in paths.items()), flush=True)
    return paths


def run_naming_the_flag(argv: Sequence[str]) -> dict[str, Path]:
    """:func:`run`, with the library's advice on unconverged solves given as this command's flag."""
    try:
        return run(argv)
    except ConvergenceError as exc:
        raise ConvergenceError(str(exc).replace("pass allow_unconverged=True", "pass --allow-unconverged")) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lben-ode robustness``; ``argv`` (the arguments after ``robustness``) replaces ``sys.argv[1:]``.

    Library errors end the command with their message and exit status 2, as argparse's do
    (``--traceback`` or ``LBEN_ODE_TRACEBACK=1`` shows the traceback instead).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = traceback_wanted(argv)
    argv = [a for a in argv if a != "--traceback"]
    run_reporting_errors("lben-ode robustness", lambda: run_naming_the_flag(argv), show_traceback)


if __name__ == "__main__":  # pragma: no cover
    main()
