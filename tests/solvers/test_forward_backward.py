"""Forward-backward splitting against an independent float64 Newton solve of the equilibrium."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN, ConvergenceError, ConvergenceWarning
from lben_ode.activations import get_activation
from lben_ode.solvers import FixedPointProblem, get_solver

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


def test_fb_default_step_is_mu_over_L_squared_in_the_metric(small_model_factory):
    model = small_model_factory("lben_gamma", "relu", {}, seed=5, solver="fb")
    weights = model.explicit_weights()
    s = weights.lam.sqrt()
    M = (torch.eye(12, dtype=torch.float64) - weights.W) * s[:, None] / s[None, :]
    mu = torch.linalg.eigvalsh((M + M.T) / 2)[0]
    L = torch.linalg.svdvals(M)[0]
    operator = model.forward_parts().operator
    problem = FixedPointProblem(operator, torch.zeros(1, 12, dtype=torch.float64), model.activation)
    assert model.solver.step_size(problem) == pytest.approx(float(mu / L**2), rel=1e-10)
    # A user step is used as given.
    assert get_solver("fb", alpha=0.3).step_size(problem) == 0.3


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
