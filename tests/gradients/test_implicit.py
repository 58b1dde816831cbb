"""The implicit gradient's adjoint solve from a given start, and warm starts kept across passes.

Exact restarts are checked with forward-backward, whose state is z alone: a start at the solution
is then converged at the first check. (Peaceman-Rachford also carries u, which a start sets to z0.)
"""

from __future__ import annotations

import math

import pytest
import torch

from lben_ode import LBEN, ConfigurationError, NonFiniteInputError, ShapeError
from lben_ode.gradients import WarmStart, adjoint_solve
from lben_ode.solvers import get_solver

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-10


def model_and_input(solver: str = "fb") -> tuple[LBEN, torch.Tensor]:
    torch.manual_seed(0)
    model = LBEN(6, 3, 10, gamma=1.0, solver=solver, tol=TOL, max_iter=5000).double()
    with torch.no_grad():
        model.b_z.normal_()
    return model, torch.randn(7, 6, dtype=torch.float64)


def direct_adjoint(model: LBEN, slopes: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """w solving (I − D W)ᵀ w = g per sample, by a dense float64 solve."""
    W = model.explicit_weights().W
    eye = torch.eye(W.shape[0], dtype=W.dtype)
    return torch.stack([torch.linalg.solve((eye - torch.diag(d) @ W).T, g) for d, g in zip(slopes, grad, strict=True)])


def test_an_adjoint_start_at_the_solution_converges_at_the_first_check():
    model, x = model_and_input()
    parts = model.forward_parts()
    with torch.no_grad():
        z = model.equilibrium(x)
        slopes = model.activation.derivative(parts.apply_W(z) + parts.injection(x))
    grad = torch.randn_like(z)
    solver = model.solver
    w_cold, cold = adjoint_solve(grad, slopes, parts.operator, solver)
    reference = direct_adjoint(model, slopes, grad)
    # Started at the exact solution (a solve stopped just under tol may drift back over it).
    w_warm, warm = adjoint_solve(grad, slopes, parts.operator, solver, u0=slopes * reference)
    assert cold.all_converged and warm.all_converged and warm.residual.max() <= TOL
    first_check = math.ceil(solver.options["check_every"] / 2)  # the loop's first check
    assert int(cold.iterations.min()) > first_check
    assert torch.equal(warm.iterations, torch.full_like(warm.iterations, first_check))
    for w in (w_cold, w_warm):
        torch.testing.assert_close(w, reference, rtol=1e-7, atol=1e-9)
    # A zero start is the cold start.
    w_zero, zero = adjoint_solve(grad, slopes, parts.operator, solver, u0=torch.zeros_like(grad))
    assert torch.equal(w_zero, w_cold) and torch.equal(zero.iterations, cold.iterations)


def test_bad_adjoint_starts_are_refused():
    model, x = model_and_input()
    parts = model.forward_parts()
    grad = torch.randn(7, 10, dtype=torch.float64)
    slopes = torch.ones_like(grad)
    solve = get_solver("fb")
    with pytest.raises(ShapeError, match=r"adjoint start u0 must be shaped \(7, 10\)"):
        adjoint_solve(grad, slopes, parts.operator, solve, u0=torch.zeros(7, 9, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"dtype torch\.float64, got torch\.float32"):
        adjoint_solve(grad, slopes, parts.operator, solve, u0=torch.zeros(7, 10))
    bad = torch.zeros_like(grad)
    bad[1, 2] = float("nan")
    with pytest.raises(NonFiniteInputError, match="1 NaN or infinite entries"):
        adjoint_solve(grad, slopes, parts.operator, solve, u0=bad)
    with pytest.raises(NonFiniteInputError, match="adjoint start"):
        model(x, warm_start=WarmStart(adjoint_start=bad))


def gradients(model: LBEN, x: torch.Tensor, scale: float, warm_start: WarmStart | None) -> list[torch.Tensor]:
    model.zero_grad()
    logits = model(x, warm_start=warm_start)
    (scale * logits.square().sum()).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_kept_solutions_restart_both_solves_and_give_the_same_gradient():
    model, x = model_and_input()
    every = math.ceil(model.solver.options["check_every"] / 2)  # the loop's first check
    cold = WarmStart()
    # Kept solutions from solves tighter than tol: a solve stopped just under tol may drift back
    # over it in the next few steps, and this test is about the restart, not that drift.
    model.set_solver("fb", tol=TOL * 1e-3, max_iter=5000)
    reference = gradients(model, x, 1.0, cold)
    first = {k: s.iterations.clone() for k, s in model.solver_stats.items()}
    assert cold.z is not None and cold.adjoint is not None
    with torch.no_grad():
        torch.testing.assert_close(cold.z, model.equilibrium(x), rtol=0, atol=0)
    model.set_solver("fb", tol=TOL, max_iter=5000)
    assert int(first["forward"].min()) > every and int(first["backward"].min()) > every
    # Three times the loss: the adjoint solution is kept per unit of incoming gradient, so the
    # rescaled start is still the solution, and the gradient is three times the first.
    warm = WarmStart(z0=cold.z, adjoint_start=cold.adjoint)
    scaled = gradients(model, x, 3.0, warm)
    for direction in ("forward", "backward"):
        stats = model.solver_stats[direction]
        assert stats.all_converged and stats.residual.max() <= TOL
        assert torch.equal(stats.iterations, torch.full_like(stats.iterations, every)), direction
    for a, b in zip(scaled, reference, strict=True):
        torch.testing.assert_close(a, 3.0 * b, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(warm.adjoint, cold.adjoint, rtol=1e-7, atol=1e-10)


def test_the_ode_adjoint_method_refuses_kept_starts():
    model, x = model_and_input("ode")
    model.set_solver("ode", backward="adjoint", tol=1e-6)
    with pytest.raises(ConfigurationError, match="backward='implicit'"):
        model(x, warm_start=WarmStart())
    with torch.no_grad():  # without autograd it is a plain solve, which a start only shortens
        model(x, warm_start=WarmStart())
