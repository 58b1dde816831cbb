"""Warm starts in training: equilibrium-solver iterations per epoch with and without, and test accuracy.

Trains the width-80 MNIST LBEN of ``configs/mnist.yaml`` (Peaceman-Rachford, tol 1e-5, Adam 1e-3,
batches of 128, all 60,000 training images) once per seed with ``warm_start=False`` and once with
``warm_start=True``, interleaved, and prints per epoch the forward and backward (adjoint) solver
iterations: the per-sample mean per batch (``iterations_mean``, what ``train/forward/…`` logs), the
loop steps per batch (the batch's slowest sample, which is what the batch costs) and the epoch's total
of loop steps; then the test accuracy after the last epoch. The table is also written as JSON.

Iteration counts are what to compare; times depend on the machine's load and are given only as the
ratio warm / cold of the epoch times of the same seed.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/warm_start.py --data-dir data/mnist --epochs 3 --seeds 0,1
    python benchmarks/warm_start.py --data-dir data/mnist --limit-train-batches 100   # a shorter run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from lben_ode.datasets import MNISTDataModule
from lben_ode.lightning_modules import LBENClassifier
from lightning.pytorch import Callback, LightningModule, Trainer

import lben_ode


class SolveCounts(Callback):
    """Per epoch: sums over training batches of the forward and backward iteration counts, and the epoch time."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sums = {"batches": 0}
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._sums["batches"] += 1
        for direction, stats in pl_module.model.solver_stats.items():
            for name, value in (
                ("mean", float(stats.iterations.float().mean())),
                ("steps", float(stats.total_iterations)),
                ("converged", float(stats.converged.float().mean())),
                ("residual_max", float(stats.residual.max())),
            ):
                key = f"{direction}_{name}"
                if name == "residual_max":
                    self._sums[key] = max(self._sums.get(key, 0.0), value)
                elif name == "converged":
                    self._sums[key] = min(self._sums.get(key, 1.0), value)
                else:
                    self._sums[key] = self._sums.get(key, 0.0) + value

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = self._sums["batches"]
        row = {"batches": n, "time_s": time.perf_counter() - self._start}
        for direction in ("forward", "backward"):
            row[f"{direction}_mean_per_batch"] = self._sums[f"{direction}_mean"] / n
            row[f"{direction}_steps_per_batch"] = self._sums[f"{direction}_steps"] / n
            row[f"{direction}_steps_total"] = self._sums[f"{direction}_steps"]
            row[f"{direction}_converged_min"] = self._sums[f"{direction}_converged"]
            row[f"{direction}_residual_max"] = self._sums[f"{direction}_residual_max"]
        self.epochs.append(row)


def train_once(data_dir: str, seed: int, warm_start: bool, epochs: int, limit: int | float) -> dict[str, Any]:
    """One training run in the configs/mnist.yaml setting; its per-epoch counts and final test accuracy."""
    torch.manual_seed(seed)
    model = lben_ode.LBEN(784, 10, 80, gamma=1.0, margin=1.0)
    module = LBENClassifier(model, solver="pr", solver_options={"tol": 1e-5}, lr=1e-3, warm_start=warm_start)
    data = MNISTDataModule(data_dir, batch_size=128, flatten=True, val_size=0)
    counts = SolveCounts()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_train_batches=limit,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[counts],
    )
    torch.manual_seed(seed)  # the same data order with and without warm starts
    trainer.fit(module, data)
    result = trainer.test(module, data, verbose=False)[0]
    return {
        "seed": seed,
        "warm_start": warm_start,
        "alpha": model.solver.options["alpha"],
        "epochs": counts.epochs,
        "test_acc": result["test/acc"],
        "cache_bytes": module.warm_starts.nbytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/mnist", help="folder with the four MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--limit-train-batches", type=float, default=1.0, help="as Trainer's (a fraction or a count)")
    parser.add_argument("--out", default="runs/warm_start.json", help="where the JSON table goes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    limit: int | float = int(args.limit_train_batches) if args.limit_train_batches > 1 else args.limit_train_batches
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for warm_start in (False, True):
            runs.append(train_once(args.data_dir, seed, warm_start, args.epochs, limit))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(runs, indent=1))
    alpha = runs[0]["alpha"]
    print(f"PR alpha = {'from the model (default)' if alpha is None else alpha}, tol 1e-5, width 80, batch 128")
    print(
        "seed warm epoch | fwd mean/batch  fwd steps/batch  fwd total | "
        "bwd mean/batch  bwd steps/batch  bwd total | conv"
    )
    for run in runs:
        for epoch, row in enumerate(run["epochs"]):
            print(
                f"{run['seed']:>4} {'on ' if run['warm_start'] else 'off'}  {epoch:>5} | "
                f"{row['forward_mean_per_batch']:14.2f}  {row['forward_steps_per_batch']:15.2f}  "
                f"{row['forward_steps_total']:9.0f} | {row['backward_mean_per_batch']:14.2f}  "
                f"{row['backward_steps_per_batch']:15.2f}  {row['backward_steps_total']:9.0f} | "
                f"{min(row['forward_converged_min'], row['backward_converged_min']):.3f}"
            )
    print("seed warm test_acc  epoch-time ratio warm/cold (same seed, per epoch)")
    for cold, warm in zip(runs[::2], runs[1::2], strict=True):
        ratios = [w["time_s"] / c["time_s"] for c, w in zip(cold["epochs"], warm["epochs"], strict=True)]
        print(f"{cold['seed']:>4} off  {cold['test_acc']:.4f}")
        print(f"{warm['seed']:>4} on   {warm['test_acc']:.4f}  " + " ".join(f"{r:.2f}" for r in ratios))
    print(f"warm-start cache: {runs[1]['cache_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
