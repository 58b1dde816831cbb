"""Benchmark of the registered equilibrium solvers on LBENs of MNIST size.

For every solver in ``lben_ode.solvers.available()`` (and every option variant in
:data:`VARIANTS`), for dense LBENs of widths 80 and 500 and batches 128 and 1024 of 784-pixel
inputs, and for a convolutional LBEN on 28×28 images (``--conv-channels`` channels, batch 128), it
measures at ``tol=1e-4``:

- iterations per sample (mean and max; for the ODE solver, accepted steps), right-hand-side
  evaluations where the solver counts them, and the final relative residual of the forward solve;
- milliseconds per forward pass right after a parameter update (building W, factorising it or
  computing the forward-backward step, and solving), per forward pass with the parameters unchanged
  (the factorisation cached), and per backward pass (the adjoint solve);

each the median of several repeats after a warm-up. It prints a table and writes ``solvers.csv``
(and ``solvers.png`` unless ``--no-plot``) under ``--out``.

The networks are random (untrained) unless ``--trained-epochs N --data-dir DIR``: then each dense
width is first trained N epochs on MNIST as ``configs/mnist.yaml`` trains it (γ = 1, margin 1,
Peaceman-Rachford at tol 1e-5, Adam 1e-3, batches of 128), every solver variant solves that trained
network, and the inputs are the first training images of the (seeded) shuffle; the ConvLBEN line is
left out. Trained networks have other spectra than random ones (``I − W`` spreads along the real
axis), so solvers and step rules compare differently on them.

Run ``.venv/bin/python benchmarks/solvers.py`` (``--quick`` for a run of about a minute, ``--device cuda``
on a GPU).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lben_ode.datasets import MNISTDataModule
from lben_ode.lightning_modules.optimizers import adam
from torch.nn import functional as F

import lben_ode
from lben_ode import LBEN, ConvergenceWarning, ConvLBEN
from lben_ode.errors import LBENError

#: Option variants per solver name; a solver not listed runs once with its defaults.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "ode": [
        {},
        {"method": "dopri5"},
        {"method": "bosh3"},
        {"method": "adaptive_heun"},
        {"method": "rk4", "step_size": 0.5},
        {"method": "midpoint", "step_size": 0.5},
        {"method": "euler", "step_size": 0.5},
        # Steps beyond what the auto rule can justify, that converge on these random models.
        {"method": "midpoint", "step_size": 1.1},
        {"method": "heun3", "step_size": 1.8},
    ],
    # Newton forward and backward, and Peaceman-Rachford forward with Newton's direct adjoint solve.
    "newton": [{}, {"forward": "pr"}],
}

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IN_FEATURES, OUT_FEATURES = 784, 10


@dataclass
class Row:
    """One benchmark result: a solver variant on one (width, batch) problem."""

    model: str
    solver: str
    options: str
    width: int
    batch: int
    iterations_mean: float
    iterations_max: float
    function_evaluations: float
    residual_max: float
    converged_fraction: float
    forward_ms_after_update: float
    forward_ms_cached: float
    backward_ms: float
    backward_iterations_mean: float
    repeats: int
    note: str = ""
    trained_epochs: int = 0


def synchronize(device: torch.device) -> None:
    """Wait for the device, so wall times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(milliseconds, result) of one call of ``fn``."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return 1000 * (time.perf_counter() - start), result


def mark_parameters_updated(model: torch.nn.Module) -> None:
    """Bump a parameter's version without changing it, as an optimiser step would."""
    with torch.no_grad():
        model.b_y.add_(0.0)


def options_label(options: dict[str, Any]) -> str:
    """A short text for an option dict (``defaults`` when empty)."""
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def build_model(kind: str, width: int, solver: str, tol: float, options: dict[str, Any]) -> torch.nn.Module:
    """A random γ = 1 ReLU network: a dense LBEN of ``width`` units on flat MNIST inputs
    (``kind="dense"``), or a ConvLBEN with ``width`` channels on 28×28 images, pooled 4×4."""
    if kind == "dense":
        return LBEN(IN_FEATURES, OUT_FEATURES, width, gamma=1.0, solver=solver, tol=tol, **options)
    return ConvLBEN(1, width, 28, OUT_FEATURES, pool=4, gamma=1.0, solver=solver, tol=tol, **options)


@dataclass
class TrainedNetwork:
    """A dense LBEN trained on MNIST (:func:`train_on_mnist`): its weights and images to solve on."""

    epochs: int
    state: dict[str, torch.Tensor]
    inputs: torch.Tensor  # (n, 784) normalised training images


def train_on_mnist(width: int, epochs: int, data_dir: str, batch: int, seed: int) -> TrainedNetwork:
    """Train a dense γ = 1 LBEN of ``width`` units ``epochs`` epochs on MNIST (the settings of
    ``configs/mnist.yaml``: margin 1, Peaceman-Rachford at tol 1e-5, Adam 1e-3, batches of 128, on
    one process) and keep the first ``batch`` images of a seeded shuffle of the training set."""
    torch.manual_seed(seed)
    data = MNISTDataModule(data_dir, batch_size=128, flatten=True, val_size=0)
    data.setup("fit")
    model = LBEN(IN_FEATURES, OUT_FEATURES, width, gamma=1.0, margin=1.0, solver="pr", tol=1e-5)
    optimizer = adam(model.parameters(), 1e-3, (0.9, 0.999))
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in data.train_dataloader():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    print(f"  trained width {width} for {epochs} epoch(s) in {time.perf_counter() - start:.0f} s", flush=True)
    images = []
    for x, _ in data.train_dataloader():
        images.append(x)
        if sum(len(t) for t in images) >= batch:
            break
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return TrainedNetwork(epochs, state, torch.cat(images)[:batch])


def network_and_inputs(
    kind: str,
    solver: str,
    options: dict[str, Any],
    width: int,
    batch: int,
    device: torch.device,
    tol: float,
    seed: int,
    trained: TrainedNetwork | None = None,
) -> tuple[torch.nn.Module, torch.Tensor]:
    """The network a variant solves and its batch: a random one (see :func:`build_model`) on
    MNIST-scaled random inputs, or the ``trained`` one (dense), loaded into a model built with the
    variant's solver and options, on its MNIST images."""
    torch.manual_seed(seed)
    model = build_model(kind, width, solver, tol, options)
    if trained is not None:
        model.load_state_dict(trained.state)
        return model.to(device), trained.inputs[:batch].to(device)
    shape = (IN_FEATURES,) if kind == "dense" else (1, 28, 28)
    return model.to(device), (torch.rand(batch, *shape, device=device) - MNIST_MEAN) / MNIST_STD


def benchmark_one(
    kind: str,
    solver: str,
    options: dict[str, Any],
    width: int,
    batch: int,
    device: torch.device,
    repeats: int,
    budget_s: float,
    tol: float,
    seed: int,
    trained: TrainedNetwork | None = None,
) -> Row:
    """Time one solver variant on one network and batch (see :func:`network_and_inputs`)."""
    model, x = network_and_inputs(kind, solver, options, width, batch, device, tol, seed, trained)
    label = options_label(options)

    def forward_backward() -> tuple[float, float]:
        mark_parameters_updated(model)
        fwd_ms, y = timed(device, lambda: model(x))
        bwd_ms, _ = timed(device, lambda: y.sum().backward())
        return fwd_ms, bwd_ms

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        forward_backward()  # warm-up: allocations, first factorisation, library initialisation
        after_update, cached, backward = [], [], []
        forward_stats, backward_stats = [], []
        spent = 0.0
        # Slow configurations stop after the time budget (at least one timed repeat).
        while len(after_update) < repeats and (not after_update or spent < budget_s):
            start = time.perf_counter()
            fwd_ms, bwd_ms = forward_backward()
            after_update.append(fwd_ms)
            backward.append(bwd_ms)
            forward_stats.append(model.solver_stats["forward"])
            backward_stats.append(model.solver_stats.get("backward"))
            with torch.no_grad():
                cached.append(timed(device, lambda: model(x))[0])
            spent += time.perf_counter() - start
    nonconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)

    fwd = forward_stats[-1].summary()
    bwd = backward_stats[-1].summary() if backward_stats[-1] is not None else {}
    return Row(
        model=kind,
        solver=solver,
        options=label,
        width=width,
        batch=batch,
        iterations_mean=fwd["iterations_mean"],
        iterations_max=fwd["iterations_max"],
        function_evaluations=fwd.get("function_evaluations", float("nan")),
        residual_max=fwd["residual_max"],
        converged_fraction=fwd["converged_fraction"],
        forward_ms_after_update=statistics.median(after_update),
        forward_ms_cached=statistics.median(cached),
        backward_ms=statistics.median(backward),
        backward_iterations_mean=bwd.get("iterations_mean", float("nan")),
        repeats=len(after_update),
        note=f"{nonconverged} non-convergence warnings" if nonconverged else "",
        trained_epochs=0 if trained is None else trained.epochs,
    )


def print_table(rows: list[Row]) -> None:
    """Fixed-width table of the results."""
    header = (
        f"{'model':<5} {'solver':<8} {'options':<22} {'width':>5} {'batch':>5} {'it mean':>8} {'it max':>7} "
        f"{'f evals':>7} {'residual':>9} {'conv':>5} {'fwd ms':>9} {'fwd cached':>10} {'bwd ms':>9} "
        f"{'bwd it':>7} {'n':>3}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.model:<5} {r.solver:<8} {r.options[:22]:<22} {r.width:>5} {r.batch:>5} {r.iterations_mean:>8.1f} "
            f"{r.iterations_max:>7.0f} {r.function_evaluations:>7.0f} {r.residual_max:>9.2e} "
            f"{r.converged_fraction:>5.2f} "
            f"{r.forward_ms_after_update:>9.1f} {r.forward_ms_cached:>10.1f} {r.backward_ms:>9.1f} "
            f"{r.backward_iterations_mean:>7.1f} {r.repeats:>3}" + (f"  ({r.note})" if r.note else "")
        )


def write_csv(rows: list[Row], path: Path) -> None:
    """All fields of every row."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))


def figure(rows: list[Row]) -> Any:
    """The matplotlib figure of :func:`plot`: one legend below both panels, clear of the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({(r.model, r.width, r.batch) for r in rows})
    variants = list(dict.fromkeys(f"{r.solver} ({r.options})" for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    width = 0.8 / max(len(variants), 1)
    for ax, field, title in (
        (axes[0], "forward_ms_after_update", "forward pass after a parameter update"),
        (axes[1], "backward_ms", "backward pass (adjoint solve)"),
    ):
        for k, variant in enumerate(variants):
            values = []
            for problem in problems:
                match = [
                    r for r in rows if (r.model, r.width, r.batch) == problem and f"{r.solver} ({r.options})" == variant
                ]
                values.append(getattr(match[0], field) if match else float("nan"))
            ax.bar([i + k * width for i in range(len(problems))], values, width, label=variant)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(problems))])
        ax.set_xticklabels([f"{m} n={w}\nbatch={b}" for m, w, b in problems])
        ax.set_yscale("log")
        ax.set_ylabel("milliseconds (median)")
        ax.set_title(title)
    # Inside an axes the legend of a dozen variants covers bars; below the panels it covers nothing.
    columns = min(len(variants), 5)
    rows_of_legend = -(-len(variants) // columns)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=columns, fontsize="small",
               frameon=False)
    fig.tight_layout(rect=(0, 0.06 * rows_of_legend + 0.02, 1, 1))
    return fig


def plot(rows: list[Row], path: Path) -> bool:
    """Grouped bars of forward (after update) and backward milliseconds; False without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = figure(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


#: What ``--quick`` changes: one small dense problem, a small ConvLBEN, two ODE methods, few repeats.
QUICK = {
    "widths": [80],
    "batches": [128],
    "repeats": 3,
    "budget": 1.0,
    "conv_channels": 8,
    "conv_batch": 16,
}
QUICK_ODE_METHODS = ("auto", "dopri5", "rk4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[80, 500], help="hidden widths n")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024], help="batch sizes")
    parser.add_argument("--solvers", nargs="+", default=None, help="subset of the registered solvers")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative residual tolerance")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after the warm-up")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds per configuration after which repeats stop (at least 1)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output folder")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--conv-channels", type=int, default=16, help="channels of the ConvLBEN line (0 skips it)"
    )
    parser.add_argument("--conv-batch", type=int, default=128, help="batch of the ConvLBEN line")
    parser.add_argument(
        "--trained-epochs", type=int, default=0,
        help="train each dense network this many epochs on MNIST first (needs --data-dir; 0: random networks)",
    )
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files (--trained-epochs)")
    parser.add_argument(
        "--quick", action="store_true",
        help="a short run (about a minute on a 2-core CPU): width 80, batch 128, a ConvLBEN of 8 channels on "
        "batches of 16, ODE methods dopri5 and rk4 only, 3 repeats, a 1 s budget per configuration",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the benchmark and write its outputs."""
    args = parse_args(argv)
    variants = VARIANTS
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
        variants = {**VARIANTS, "ode": [v for v in VARIANTS["ode"] if v.get("method", "auto") in QUICK_ODE_METHODS]}
    if args.trained_epochs < 0 or (args.trained_epochs > 0) != (args.data_dir is not None):
        raise SystemExit("--trained-epochs N (N ≥ 1) and --data-dir go together")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    solvers = args.solvers or lben_ode.solvers.available()
    unknown = sorted(set(solvers) - set(lben_ode.solvers.available()))
    if unknown:
        raise SystemExit(f"unknown solvers {unknown}; registered: {', '.join(lben_ode.solvers.available())}")
    print(
        f"lben-ode {lben_ode.__version__}, torch {torch.__version__}, device {device}, "
        f"{torch.get_num_threads()} CPU threads, tol={args.tol:g}, solvers: {', '.join(solvers)}"
    )
    problems = [("dense", width, batch) for width in args.widths for batch in args.batches]
    trained: dict[int, TrainedNetwork] = {}
    if args.trained_epochs > 0:
        print(f"networks trained {args.trained_epochs} epoch(s) on MNIST ({args.data_dir}); no ConvLBEN line")
        for width in args.widths:
            trained[width] = train_on_mnist(width, args.trained_epochs, args.data_dir, max(args.batches), args.seed)
    elif args.conv_channels > 0:
        problems.append(("conv", args.conv_channels, args.conv_batch))
    rows: list[Row] = []
    for kind, width, batch in problems:
        for solver in solvers:
            for options in variants.get(solver, [{}]):
                label = f"{solver} ({options_label(options)}), {kind} n={width}, batch={batch}"
                try:
                    rows.append(
                        benchmark_one(
                            kind, solver, options, width, batch, device, args.repeats, args.budget, args.tol,
                            args.seed, trained.get(width) if kind == "dense" else None,
                        )
                    )
                except LBENError as exc:  # e.g. Peaceman-Rachford on a convolutional model
                    print(f"  skipped {label}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}", flush=True)
                    continue
                print(f"  done: {label}", flush=True)
    if not rows:
        raise SystemExit("no results")
    print()
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "solvers.csv")
    print(f"\nwrote {args.out / 'solvers.csv'}")
    if not args.no_plot and plot(rows, args.out / "solvers.png"):
        print(f"wrote {args.out / 'solvers.png'}")
    return rows


if __name__ == "__main__":
    main()
