"""Forward-backward splitting against an independent float64 Newton solve of the equilibrium."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN, ConvergenceError, ConvergenceWarning
from lben_ode.activations import get_activation
from lben_ode.solvers import FixedPointProblem, get_solver
from lben_ode.solvers.forward_backward import forward_backward_map, safe_step

pytestmark = pytest.mark.usefixtures("single_thread")

MODEL_KINDS = ["lben_gamma", "lben_unconstrained", "mondeq"]


@pytest.mark.parametrize(("name", "kwargs"), [("relu", {}), ("leaky_relu", {"negative_slope": 0.1}), ("sigmoid", {})])
def test_fb_default_settings_float32(name, kwargs, reference):
    torch.manual_seed(11)
    model = LBEN(20, 4, 24, gamma=1.0, activation=get_activation(name, **kwargs), solver="fb")
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(16, 20)
    reference.check_float32_model(model, x, model.solver.tol)


def test_fb_default_step_has_the_smallest_proven_contraction_factor(small_model_factory):
    # One step contracts the Λ-norm error by ρ(α) = ‖I − αM‖₂ (M = Λ^½(I − W)Λ^-½, prox is
    # elementwise 1-Lipschitz). The default α minimises ρ; μ/L² is only the step of the weaker
    # bound √(1 − μ²/L²).
    model = small_model_factory("lben_gamma", "relu", {}, seed=5, solver="fb")
    weights = model.explicit_weights()
    s = weights.lam.sqrt()
    eye = torch.eye(12, dtype=torch.float64)
    M = (eye - weights.W) * s[:, None] / s[None, :]
    mu = float(torch.linalg.eigvalsh((M + M.T) / 2)[0])
    L = float(torch.linalg.svdvals(M)[0])

    def rho(alpha: float) -> float:
        return float(torch.linalg.svdvals(eye - alpha * M)[0])

    operator = model.forward_parts().operator
    problem = FixedPointProblem(operator, torch.zeros(1, 12, dtype=torch.float64), model.activation)
    alpha = model.solver.step_size(problem)
    step = safe_step(problem)
    assert step.alpha == alpha and step.rate == pytest.approx(rho(alpha), rel=1e-9)
    assert rho(alpha) <= rho(mu / L**2) <= (1 - mu**2 / L**2) ** 0.5 + 1e-12
    grid = torch.logspace(-3, 1, 400, dtype=torch.float64) * (mu / L**2)
    assert rho(alpha) <= min(rho(float(a)) for a in grid) * (1 + 1e-6)
    # The transpose (adjoint solves, metric Λ⁻¹) has the same step and rate.
    assert operator.transpose().forward_backward_contraction() == operator.forward_backward_contraction()
    # A user step is used as given.
    assert get_solver("fb", alpha=0.3).step_size(problem) == 0.3


def test_fb_step_contracts_the_error_by_the_proven_rate(small_model_factory):
    model = small_model_factory("lben_gamma", "tanh", {}, seed=6, solver="fb")
    operator = model.forward_parts().operator
    lam = model.explicit_weights().lam
    torch.manual_seed(0)
    problem = FixedPointProblem(operator, torch.randn(64, 12, dtype=torch.float64), model.activation)
    step = safe_step(problem)
    a, b = torch.randn(64, 12, dtype=torch.float64), torch.randn(64, 12, dtype=torch.float64)
    with torch.no_grad():
        fa, fb = (forward_backward_map(problem, step.alpha, v) for v in (a, b))
    before = ((a - b) * lam.sqrt()).norm(dim=1)
    after = ((fa - fb) * lam.sqrt()).norm(dim=1)
    assert bool((after <= step.rate * before * (1 + 1e-12)).all())


def test_fb_default_budget_suffices_on_an_ill_conditioned_model(reference):
    # γ = 0.1 makes H's γ⁻¹ terms dominate: μ/L² = 1.3e-4 with rate 1 − 3e-6 per step. The old
    # defaults (that step, 2000 iterations) ended at a relative residual of 2.8.
    torch.manual_seed(2)
    model = LBEN(10, 5, 64, gamma=0.1, solver="fb", on_nonconvergence="raise")
    x = torch.randn(32, 10)
    reference.check_float32_model(model, x, model.solver.tol)
    parts = model.forward_parts()
    problem = FixedPointProblem(parts.operator, parts.injection(x).detach(), model.activation)
    budget = model.solver.step_budget(problem)
    assert model.solver_stats["forward"].total_iterations <= budget
    assert budget == safe_step(problem).budget(model.solver.tol)


def test_fb_with_a_diverging_step_is_never_converged(small_model_factory):
    # DESIGN §7: a too-large α makes forward-backward blow up to inf/NaN; that must never count as
    # converged (NaN ≤ tol is False, but so is NaN > tol).
    model = small_model_factory("lben_gamma", "relu", {}, seed=2, solver="fb", alpha=50.0, max_iter=400)
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="did not reach"), torch.no_grad():
        z = model.equilibrium(x)
    stats = model.solver_stats["forward"]
    blown_up = ~torch.isfinite(stats.residual) | (stats.residual > 1) | ~torch.isfinite(z).all(dim=1)
    assert bool(blown_up.all())
    assert not bool(stats.converged.any())
    assert stats.summary()["converged_fraction"] == 0.0
    model.set_solver("fb", alpha=50.0, max_iter=400, on_nonconvergence="raise")
    with pytest.raises(ConvergenceError, match="did not reach"), torch.no_grad():
        model.equilibrium(x)


def test_fb_with_a_larger_convergent_step_still_matches(reference, small_model_factory):
    # 1.8·μ/L² is past the default step but inside the convergence range α < 2μ/L².
    model = small_model_factory("mondeq", "relu", {}, seed=4, solver="fb")
    alpha = 1.8 * model.forward_parts().operator.forward_backward_step()
    model.set_solver("fb", alpha=alpha, tol=1e-9, max_iter=5000)
    reference.check_model(model, torch.randn(5, 5, dtype=torch.float64), 1e-9)
