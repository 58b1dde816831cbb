"""One MNIST training epoch: the Lightning module (as ``lben-ode fit --config configs/mnist.yaml``
trains) against a plain PyTorch loop over the same model, data and optimiser.

For each variant it trains ``--epochs`` epochs from the same initial weights on the same batches
(MNIST in memory, batches of 128, Adam 1e-3, width-80 LBEN with γ = 1 and margin 1, Peaceman-Rachford
at ``--tol``) and reports, per epoch:

- seconds of training (no validation), and the ratio Lightning / plain loop;
- forward and backward (adjoint) solver iterations per batch (mean over batches of the per-sample
  mean), and the largest per-sample count;
- test error after the last epoch (10,000 test images).

Variants: ``plain`` (a hand-written loop), ``lightning`` (``Trainer.fit`` of ``LBENClassifier`` with
its metrics as in ``lben-ode fit``, without logger, progress bars, validation or checkpoints), and
``lightning-warm`` (the same with ``warm_start=True``, when the module has that flag). The variants
run one after another; use one thread (``--threads 1``, the default) on a quiet machine, run it
twice, and compare ratios.

    python benchmarks/epoch.py --data-dir data/mnist --epochs 2
    python benchmarks/epoch.py --data-dir data/mnist --solver newton     # another solver

Writes ``epoch.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lben_ode.datasets import MNISTDataModule
from lben_ode.lightning_modules import LBENClassifier
from lben_ode.lightning_modules.optimizers import adam
from lightning.pytorch import Callback, Trainer
from torch.nn import functional as F

from lben_ode import LBEN


class IterationLog(Callback):
    """Collects the solver statistics of every training batch and the time of each epoch."""

    def __init__(self) -> None:
        self.epochs: list[EpochLog] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.epochs.append(EpochLog())
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.epochs[-1].seconds = time.perf_counter() - self._start

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        record(pl_module.model, self.epochs[-1])


class EpochLog:
    """Per-batch mean iterations of one epoch, the largest per-sample count, and its seconds."""

    def __init__(self) -> None:
        self.forward: list[float] = []
        self.backward: list[float] = []
        self.worst = 0
        self.seconds = 0.0


def record(model: LBEN, log: Any) -> None:
    """Append the last solve's mean iterations (forward and backward) to ``log``."""
    forward, backward = model.solver_stats["forward"], model.solver_stats.get("backward")
    log.forward.append(float(forward.iterations.float().mean()))
    log.worst = max(log.worst, int(forward.iterations.max()))
    if backward is not None:
        log.backward.append(float(backward.iterations.float().mean()))


def plain_loop(model: LBEN, data: MNISTDataModule, lr: float, epochs: int, seed: int) -> list[EpochLog]:
    """A hand-written training loop: zero_grad, forward, cross-entropy, backward, Adam step."""
    optimizer = adam(model.parameters(), lr, (0.9, 0.999))  # the module's own optimiser
    torch.manual_seed(seed)  # the loader's shuffle draws from the global generator, as under Lightning
    loader = data.train_dataloader()
    logs = []
    model.train()
    for _ in range(epochs):
        log = EpochLog()
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            record(model, log)
        log.seconds = time.perf_counter() - start
        logs.append(log)
    return logs


def lightning_fit(
    model: LBEN, data: MNISTDataModule, lr: float, epochs: int, seed: int, warm_start: bool
) -> list[EpochLog]:
    """``Trainer.fit`` of :class:`LBENClassifier` (no validation, logger, checkpoints or progress bars)."""
    kwargs: dict[str, Any] = {"lr": lr, "certify_eps": []}
    if warm_start:
        kwargs["warm_start"] = True
    module = LBENClassifier(model, **kwargs)
    log = IterationLog()
    trainer = Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        callbacks=[log],
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*limit_val_batches.*")
        trainer.fit(module, datamodule=data)
    return log.epochs


def test_error(model: LBEN, data: MNISTDataModule) -> float:
    """Test error (%) on the 10,000 test images."""
    dataset = data.dataset("test")
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(dataset), 1000):
            x, y = dataset[list(range(i, min(i + 1000, len(dataset))))]
            wrong += int((model(x).argmax(dim=1) != y).sum())
    return 100.0 * wrong / len(dataset)


def summarise(log: EpochLog) -> dict[str, float]:
    """Seconds and iteration counts of one epoch."""
    return {
        "seconds": log.seconds,
        "forward_iterations_per_batch": statistics.fmean(log.forward),
        "backward_iterations_per_batch": statistics.fmean(log.backward) if log.backward else float("nan"),
        "forward_iterations_max": float(log.worst),
        "batches": float(len(log.forward)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/mnist", help="folder with the four MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--solver", default="pr", help="registry name of the equilibrium solver")
    parser.add_argument("--tol", type=float, default=1e-5, help="per-sample relative residual tolerance")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--variants", nargs="+", default=["plain", "lightning", "lightning-warm"],
        help="which of plain, lightning, lightning-warm to run",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the table and write ``epoch.json``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if "lightning-warm" in args.variants and "warm_start" not in inspect.signature(LBENClassifier).parameters:
        print("LBENClassifier has no warm_start flag: skipping lightning-warm")
        args.variants = [v for v in args.variants if v != "lightning-warm"]
    torch.manual_seed(args.seed)
    initial = LBEN(784, 10, args.width, gamma=1.0, margin=1.0, solver=args.solver, tol=args.tol)
    print(
        f"MNIST, LBEN width {args.width}, γ=1, solver {args.solver} (tol {args.tol:g}), batch 128, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    results: dict[str, list[dict[str, float]]] = {}
    models: dict[str, tuple[LBEN, MNISTDataModule]] = {}
    # Each variant trains from the same initial weights on the same batches (same shuffle seed).
    for variant in args.variants:
        model = copy.deepcopy(initial)
        data = MNISTDataModule(args.data_dir, batch_size=128, flatten=True, val_size=0)
        data.setup("fit")
        if variant == "plain":
            logs = plain_loop(model, data, args.lr, args.epochs, args.seed)
        else:
            logs = lightning_fit(model, data, args.lr, args.epochs, args.seed, variant == "lightning-warm")
        results[variant] = [summarise(log) for log in logs]
        models[variant] = (model, data)
        for epoch, r in enumerate(results[variant], start=1):
            print(
                f"  epoch {epoch} {variant:15s} {r['seconds']:7.1f} s  forward it/batch "
                f"{r['forward_iterations_per_batch']:5.1f}  backward it/batch "
                f"{r['backward_iterations_per_batch']:5.1f}",
                flush=True,
            )
    errors = {variant: test_error(*models[variant]) for variant in args.variants}
    print()
    columns = ("s/epoch", "× plain", "fwd it/batch", "bwd it/batch", "test err %")
    header = f"{'variant':15s} " + " ".join(f"{c:>13s}" for c in columns)
    print(header)
    print("-" * len(header))
    plain = results.get("plain")
    for variant in args.variants:
        rows = results[variant]
        seconds = statistics.fmean(r["seconds"] for r in rows)
        ratio = seconds / statistics.fmean(r["seconds"] for r in plain) if plain else float("nan")
        fwd = statistics.fmean(r["forward_iterations_per_batch"] for r in rows)
        bwd = statistics.fmean(r["backward_iterations_per_batch"] for r in rows)
        print(f"{variant:15s} {seconds:13.1f} {ratio:13.2f} {fwd:13.1f} {bwd:13.1f} {errors[variant]:13.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "epochs": results, "test_error_pct": errors}
    (args.out / "epoch.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out / 'epoch.json'}")
    return report


if __name__ == "__main__":
    main()
