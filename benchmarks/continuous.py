"""Benchmark of simulating the contracting LBEN-ODE: time and vector-field evaluations per batch.

For each width (default 16, 64, 256), torchdiffeq method (default dopri5, bosh3, rk4) and gradient
method (default backprop and adjoint), a :class:`~lben_ode.ContractingLBEN` is driven by a batch of
smooth random input signals with ``--length`` samples (default 200, every 0.1 time units) and it
measures, as the median over ``--repeats`` runs after a warm-up:

- the forward simulation: milliseconds, vector-field evaluations, accepted and rejected steps;
- the backward pass of a mean-square loss on the outputs: milliseconds and, for the adjoint method,
  the evaluations of its backward integration (backprop reuses the forward graph: 0).

Adaptive methods run at rtol 1e-5, atol 1e-6 (the model's defaults); fixed-step methods take one
step per sample interval. Timings depend on the machine and its load: compare ratios from one run.

Run ``python benchmarks/continuous.py`` (``--widths 16 64``, ``--methods dopri5 rk4``,
``--gradients backprop``, ``--threads 1``, ``--device cuda``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass

import torch

from lben_ode import ContractingLBEN


@dataclass
class Row:
    """One measurement: a method and gradient method on one width."""

    width: int
    method: str
    gradient: str
    forward_ms: float
    forward_evaluations: int
    accepted_steps: int
    rejected_steps: int
    backward_ms: float
    backward_evaluations: int


def input_signals(batch: int, length: int, size: int, dt: float, generator: torch.Generator) -> torch.Tensor:
    """Sums of three sinusoids of random frequency (0.1 to 1 cycles per time unit) and phase."""
    t = torch.arange(length) * dt
    freq = 0.1 + 0.9 * torch.rand(batch, 1, size, 3, generator=generator)
    phase = 2 * math.pi * torch.rand(batch, 1, size, 3, generator=generator)
    return torch.sin(2 * math.pi * freq * t[None, :, None, None] + phase).sum(-1) / math.sqrt(3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    width: int, method: str, gradient: str, args: argparse.Namespace, u: torch.Tensor, t: torch.Tensor
) -> Row:
    """Median forward and backward cost of one configuration."""
    torch.manual_seed(0)
    model = ContractingLBEN(
        args.input_size, args.output_size, width, activation=args.activation, method=method, gradient=gradient
    ).to(u.device)
    if method in ("rk4", "euler", "midpoint", "heun2", "heun3"):
        model.set_integrator(step_check="off")  # one step per sample, as a sequence model would
    forward, backward = [], []
    for _ in range(args.repeats + 1):  # the first run is a warm-up
        model.zero_grad()
        _sync(u.device)
        start = time.perf_counter()
        y = model(u, t)
        _sync(u.device)
        forward.append(time.perf_counter() - start)
        stats = model.simulation_stats
        loss = y.square().mean()
        start = time.perf_counter()
        loss.backward()
        _sync(u.device)
        backward.append(time.perf_counter() - start)
    return Row(
        width=width,
        method=method,
        gradient=gradient,
        forward_ms=1000 * statistics.median(forward[1:]),
        forward_evaluations=stats.function_evaluations,
        accepted_steps=stats.accepted_steps,
        rejected_steps=stats.rejected_steps,
        backward_ms=1000 * statistics.median(backward[1:]),
        backward_evaluations=stats.backward_function_evaluations,
    )


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    """The results as a fixed-width table."""
    print(
        f"batch {args.batch}, sequence length {args.length} (dt {args.dt}), input {args.input_size}, "
        f"output {args.output_size}, activation {args.activation}, {torch.get_num_threads()} thread(s), "
        f"device {args.device}"
    )
    header = (
        f"{'width':>5} {'method':>8} {'gradient':>8} {'fwd ms':>9} {'fwd evals':>9} {'accepted':>8} "
        f"{'rejected':>8} {'bwd ms':>9} {'bwd evals':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.width:>5} {r.method:>8} {r.gradient:>8} {r.forward_ms:>9.1f} {r.forward_evaluations:>9} "
            f"{r.accepted_steps:>8} {r.rejected_steps:>8} {r.backward_ms:>9.1f} {r.backward_evaluations:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--methods", nargs="+", default=["dopri5", "bosh3", "rk4"])
    parser.add_argument("--gradients", nargs="+", default=["backprop", "adjoint"], choices=["backprop", "adjoint"])
    parser.add_argument("--length", type=int, default=200, help="samples per sequence")
    parser.add_argument("--dt", type=float, default=0.1, help="time between samples")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=4)
    parser.add_argument("--output-size", type=int, default=2)
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (after a warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    u = input_signals(args.batch, args.length, args.input_size, args.dt, generator).to(device)
    t = (torch.arange(args.length) * args.dt).to(device)
    rows = [
        measure(width, method, gradient, args, u, t)
        for width in args.widths
        for method in args.methods
        for gradient in args.gradients
    ]
    print_table(rows, args)


if __name__ == "__main__":
    main()
