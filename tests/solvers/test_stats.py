"""Solver statistics: per-sample values, summaries, and backward statistics after .backward()."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN
from lben_ode.solvers import FixedPointProblem

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("solver", ["fb", "pr"])
def test_forward_and_backward_stats(solver, reference, activation_reference):
    torch.manual_seed(0)
    model = LBEN(5, 3, 10, gamma=1.0, margin=0.5, solver=solver, tol=1e-8).double()
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(7, 5, dtype=torch.float64)
    z = model.equilibrium(x)
    assert set(model.solver_stats) == {"forward"}  # no backward yet
    forward = model.solver_stats["forward"]
    assert forward.solver == solver
    assert forward.iterations.shape == forward.residual.shape == forward.converged.shape == (7,)
    assert forward.converged.dtype == torch.bool
    assert forward.iterations.dtype == torch.long
    assert forward.tol == 1e-8
    assert forward.time_s > 0
    assert forward.total_iterations == int(forward.iterations.max())
    assert forward.function_evaluations is None

    # The reported residual is the relative fixed-point residual of the solver's final iterate z*
    # (recomputed independently in float64), and z* is exactly what the model returns.
    w = model.explicit_weights()
    injection = x @ w.U.T + w.b_z
    problem = FixedPointProblem(model.forward_parts().operator, injection, model.activation)
    z_star, direct = model.solver.solve(problem)
    torch.testing.assert_close(direct.residual, forward.residual, rtol=0, atol=0)
    expected = reference.residual(w.W, injection, z_star, activation_reference("relu")[0])
    torch.testing.assert_close(forward.residual, expected, rtol=1e-6, atol=1e-15)
    torch.testing.assert_close(z.detach(), z_star, rtol=0, atol=0)

    summary = forward.summary()
    assert summary["iterations_mean"] == pytest.approx(float(forward.iterations.double().mean()))
    assert summary["iterations_max"] == float(forward.iterations.max())
    assert summary["residual_max"] == pytest.approx(float(forward.residual.max()))
    assert summary["converged_fraction"] == 1.0
    assert summary["time_s"] == forward.time_s
    assert all(isinstance(v, float) for v in summary.values())
    assert solver in repr(forward) and "100.0% converged" in repr(forward)

    (z * torch.randn_like(z)).sum().backward()
    backward = model.solver_stats["backward"]
    assert model.solver_stats["forward"] is forward
    assert backward.solver == solver
    assert backward.iterations.shape == backward.residual.shape == backward.converged.shape == (7,)
    assert backward.all_converged and bool((backward.residual <= 1e-8).all())

    # A new forward pass replaces both: stale backward statistics are not kept.
    model.equilibrium(x)
    assert set(model.solver_stats) == {"forward"}


def test_no_backward_stats_without_grad():
    torch.manual_seed(0)
    model = LBEN(5, 3, 10)
    with torch.no_grad():
        y = model(torch.randn(4, 5))
    assert not y.requires_grad
    assert set(model.solver_stats) == {"forward"}
