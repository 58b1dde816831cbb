"""Per-iteration cost of Peaceman-Rachford against its physical floor, one batched matrix product.

For dense LBENs (random, γ = 1, ReLU) of each width and batch, it times a long PR solve that never
reaches its tolerance (so every iteration, and every convergence check the loop makes, is counted)
and divides by the number of iterations; and it times one bare ``(batch, n) @ (n, n)`` product of
the same shape, the two taking turns. The ratio is what the solver's loop, elementwise operations and
checks add to the product each iteration needs. Medians of ``--repeats`` rounds; on a shared or
virtual machine run it a few times and compare the ratios.

    python benchmarks/overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from lben_ode import LBEN
from lben_ode.solvers import FixedPointProblem, get_solver


def interleaved_medians(
    fns: list[Callable[[], object]], inners: list[int], repeats: int, device: torch.device
) -> list[float]:
    """Median over ``repeats`` rounds of the mean time of ``inners[i]`` calls of ``fns[i]``, the
    functions taking turns within each round (after one warm-up call each), so that a slow spell
    of the machine falls on all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, inner, out in zip(fns, inners, times, strict=True):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out.append((time.perf_counter() - start) / inner)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Print the table of PR per-iteration time over one bare product."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[80, 500])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--iterations", type=int, default=200, help="PR iterations per timed solve")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
    print(f"{'width':>6s} {'batch':>6s} {'PR µs/iter':>11s} {'matmul µs':>10s} {'ratio':>6s}")
    rows = []
    for width in args.widths:
        for batch in args.batches:
            torch.manual_seed(0)
            model = LBEN(784, 10, width, gamma=1.0).to(device)
            x = (torch.rand(batch, 784, device=device) - 0.1307) / 0.3081
            with torch.no_grad():
                parts = model.forward_parts()
                problem = FixedPointProblem(parts.operator, parts.injection(x), model.activation)
            solver = get_solver("pr", tol=1e-30, max_iter=args.iterations)
            solver.solve(problem)  # the factorisation and step size, cached with the operator
            z = torch.rand(batch, width, device=device)
            factor = parts.operator.W.detach().T
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                solve_s, product = interleaved_medians(
                    [lambda s=solver, p=problem: s.solve(p), lambda z=z, f=factor: z @ f],
                    [1, 100],
                    args.repeats,
                    device,
                )
            per_iteration = solve_s / args.iterations
            row = {"width": width, "batch": batch, "pr_us": per_iteration * 1e6, "matmul_us": product * 1e6}
            row["ratio"] = row["pr_us"] / row["matmul_us"]
            rows.append(row)
            cells = f"{row['pr_us']:11.1f} {row['matmul_us']:10.1f} {row['ratio']:6.2f}"
            print(f"{width:6d} {batch:6d} {cells}", flush=True)
    return rows


if __name__ == "__main__":
    main()
