"""System identification on the embedded systems: the contracting LBEN-ODE against unconstrained models.

For every system, every model is trained on the same data with the same budget (epochs, optimiser,
learning rate, integrator) for each seed, then evaluated on the test records:

- test NRMSE (%, mean over outputs, raw units, after the washout), mean ± sd over seeds;
- the empirical incremental gain: the largest ``(∫‖Δy‖²/∫‖Δu‖²)^{1/2}`` found by gradient ascent over
  pairs of input signals (:func:`lben_ode.robustness.incremental_gain.empirical_incremental_gain`),
  normalised units, next to the certified γ where the model has one;
- NRMSE when Gaussian noise of RMS ``--input-noise`` (normalised units) is added to the test inputs
  and the outputs are compared with the clean ones (robustness to input perturbations);
- training time per epoch (s) and the number of parameters.

Models: ``ContractingLBEN`` at each ``--gammas`` value and unbounded (γ = None), an unconstrained
neural ODE (MLP vector field, torchdiffeq, the same integrator) and a discrete-time GRU.

    nice -n 10 python benchmarks/sysid.py --seeds 2 --epochs 4        # a small setting
    python benchmarks/sysid.py --seeds 5 --epochs 30                  # a fuller one

Writes ``sysid.md`` (the table) and ``sysid.json`` (every run) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lben_ode.datasets import SimulatedSystemDataModule
from lben_ode.lightning_modules.sequence import SequenceRegressor
from lightning.pytorch import Callback, Trainer, seed_everything

from lben_ode import ContractingLBEN
from lben_ode.baselines import NeuralODE, RecurrentNetwork
from lben_ode.robustness.incremental_gain import empirical_incremental_gain

#: Data settings per system (as in configs/<system>.yaml).
DATA = {
    "duffing": {"window": 120, "stride": 40, "washout": 50, "batch_size": 8},
    "rlc": {"window": 150, "stride": 50, "washout": 60, "batch_size": 8},
}


class EpochTimer(Callback):
    """Wall time of every training epoch (without validation)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, module: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def build(name: str, width: int) -> torch.nn.Module:
    """A model by benchmark name: ``lben-g<γ>``, ``lben-unbounded``, ``neural-ode``, ``gru``."""
    if name.startswith("lben-g"):
        return ContractingLBEN(1, 1, width, gamma=float(name[6:]), method="rk4")
    if name == "lben-unbounded":
        return ContractingLBEN(1, 1, width, gamma=None, method="rk4")
    if name == "neural-ode":
        return NeuralODE(1, 1, width=8, hidden=width, method="rk4")
    if name == "gru":
        return RecurrentNetwork(1, 1, width=width, cell="gru")
    raise ValueError(f"unknown model {name!r}")


def nrmse(module: SequenceRegressor, data: SimulatedSystemDataModule, noise: float, seed: int) -> float:
    """Test NRMSE (%, raw units, mean over outputs) with Gaussian input noise of RMS ``noise`` (model units)."""
    n = data.normalization
    generator = torch.Generator().manual_seed(seed)
    errors, targets = [], []
    with torch.no_grad():
        for u, y, t, scored in data.test_dataloader():
            u_in = u + noise * torch.randn(u.shape, generator=generator) if noise > 0 else u
            errors.append(
                n.outputs_to_raw(module(u_in, t)[0, scored].double()) - n.outputs_to_raw(y[0, scored].double())
            )
            targets.append(n.outputs_to_raw(y[0, scored].double()))
    e, y = torch.cat(errors), torch.cat(targets)
    return float((100 * e.pow(2).mean(0).sqrt() / y.std(0, unbiased=False)).mean())


def run_one(system: str, name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model with one seed on one system; returns its metrics."""
    seed_everything(seed, verbose=False)
    data = SimulatedSystemDataModule(system=system, **DATA[system])
    model = build(name, args.width)
    module = SequenceRegressor(model, lr=args.lr, plot=False)
    timer = EpochTimer()
    trainer = Trainer(
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        limit_val_batches=0,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, data)
    module.eval()
    clean = nrmse(module, data, 0.0, seed)
    noisy = nrmse(module, data, args.input_noise, seed)
    starts = torch.cat([u[:, : args.gain_length] for u, _, _, _ in data.test_dataloader()])
    t = next(iter(data.test_dataloader()))[2][: args.gain_length]
    gain = empirical_incremental_gain(
        model, starts, t, steps=args.gain_steps, generator=torch.Generator().manual_seed(seed)
    )
    return {
        "system": system,
        "model": name,
        "seed": seed,
        "nrmse": clean,
        "nrmse_noisy": noisy,
        "empirical_gain": gain.value,
        "gamma": model.gain_bound(),
        "epoch_s": statistics.mean(timer.times),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown table: one line per system and model, mean ± sd over seeds."""

    def pm(values: list[float], digits: int = 1) -> str:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return "nan"
        sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
        return f"{statistics.mean(finite):.{digits}f} ± {sd:.{digits}f}"

    lines = [
        f"| system | model | γ | test NRMSE % | NRMSE %, input noise {args.input_noise:g} | empirical gain | "
        "s / epoch | parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system in args.systems:
        for name in args.models:
            group = [r for r in rows if r["system"] == system and r["model"] == name]
            if not group:
                continue
            gamma = group[0]["gamma"]
            lines.append(
                f"| {system} | {name} | {'–' if gamma is None else f'{gamma:g}'} | {pm([r['nrmse'] for r in group])} "
                f"| {pm([r['nrmse_noisy'] for r in group])} | {pm([r['empirical_gain'] for r in group], 2)} "
                f"| {statistics.mean(r['epoch_s'] for r in group):.1f} | {group[0]['parameters']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--gammas", nargs="+", type=float, default=[1.0, 3.0])
    parser.add_argument("--baselines", nargs="+", default=["lben-unbounded", "neural-ode", "gru"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of every model (the budget)")
    parser.add_argument("--width", type=int, default=32, help="state size (LBEN, GRU) and MLP width (neural ODE)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--input-noise", type=float, default=0.1, help="RMS of the test-input noise, model units")
    parser.add_argument("--gain-steps", type=int, default=20, help="gradient steps of the incremental-gain search")
    parser.add_argument("--gain-length", type=int, default=100, help="samples per signal of the gain search")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sysid"))
    args = parser.parse_args(argv)
    args.models = [f"lben-g{g:g}" for g in args.gammas] + args.baselines
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module="lightning")
    rows = []
    for system in args.systems:
        for name in args.models:
            for seed in range(args.seeds):
                row = run_one(system, name, seed, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = summary(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "sysid.json").write_text(json.dumps({"settings": settings, "runs": rows}, indent=1))
    (args.out / "sysid.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
