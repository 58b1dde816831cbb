"""The solver-convergence metric: epoch values equal a direct float64 computation over its solves."""

from __future__ import annotations

import math

import pytest
import torch
from lben_ode.lightning_modules import SolverMetrics

from lben_ode.solvers import Result, SolverStats

pytestmark = pytest.mark.usefixtures("single_thread")


def solve_stats(seed: int, batch: int, evaluations: int | None, nan: bool = False) -> SolverStats:
    g = torch.Generator().manual_seed(seed)
    iterations = torch.randint(1, 40, (batch,), generator=g)
    residual = torch.rand(batch, generator=g) * 1e-5
    if nan:
        residual[batch // 2] = float("nan")
    converged = torch.rand(batch, generator=g) < 0.8
    return SolverStats(
        solver="pr", iterations=iterations, residual=residual, converged=converged, tol=1e-5,
        time_s=0.001 * (seed + 1), total_iterations=int(iterations.max()), function_evaluations=evaluations,
        result=Result.CONVERGED,
    )


def test_epoch_values_are_per_sample_means_and_maxima_over_every_solve():
    metric = SolverMetrics()
    solves = [solve_stats(0, 7, None), solve_stats(1, 128, 30), solve_stats(2, 3, 12)]
    for stats in solves:
        metric.update(stats)
    values = metric.compute()
    iterations = torch.cat([s.iterations for s in solves]).double()
    converged = torch.cat([s.converged for s in solves]).double()
    residual = torch.cat([s.residual for s in solves]).double()
    expected = {
        "iterations_mean": iterations.mean(),  # per sample, not per batch
        "iterations_max": iterations.max(),
        "residual_max": residual.max(),
        "converged_fraction": converged.mean(),
        "time_s": torch.tensor((0.001 + 0.002 + 0.003) / 3, dtype=torch.float64),
        "function_evaluations": torch.tensor((30 + 12) / 2, dtype=torch.float64),  # solves that counted
    }
    assert set(values) == set(expected)
    for name, value in expected.items():
        assert float(values[name]) == pytest.approx(float(value), rel=1e-6), name
    metric.reset()
    # After a reset only the new solve counts.
    fresh = solve_stats(3, 5, None)
    metric.update(fresh)
    assert "function_evaluations" not in metric.compute()
    assert float(metric.compute()["iterations_mean"]) == pytest.approx(float(fresh.iterations.double().mean()))


def test_a_nan_residual_shows_in_the_maximum():
    metric = SolverMetrics()
    metric.update(solve_stats(0, 8, None, nan=True))
    metric.update(solve_stats(1, 8, None))
    assert math.isnan(float(metric.compute()["residual_max"]))
