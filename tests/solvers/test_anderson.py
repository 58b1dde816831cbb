"""Anderson acceleration against an independent float64 Newton solve of the equilibrium."""

from __future__ import annotations

import warnings

import pytest
import torch

from lben_ode import LBEN, ConfigurationError, ConvergenceWarning
from lben_ode.solvers import get_solver

pytestmark = pytest.mark.usefixtures("single_thread")



@pytest.mark.parametrize(("name", "kwargs"), [("relu", {}), ("tanh", {})])
def test_safe_step_variant_also_converges(name, kwargs, reference, small_model_factory):
    tol = 1e-9
    model = small_model_factory("lben_gamma", name, kwargs, seed=4, solver="anderson", tol=tol, alpha=None)
    x = torch.randn(6, 5, dtype=torch.float64)
    reference.check_model(model, x, tol)


def test_needs_far_fewer_iterations_than_forward_backward(small_model_factory):
    model = small_model_factory("lben_gamma", "relu", {}, seed=5, solver="fb", tol=1e-8, max_iter=20000)
    x = torch.randn(16, 5, dtype=torch.float64)
    with torch.no_grad():
        model(x)
        fb = model.solver_stats["forward"].total_iterations
        model.set_solver("anderson", tol=1e-8)
        model(x)
        anderson = model.solver_stats["forward"]
    assert anderson.all_converged
    assert anderson.total_iterations * 3 < fb


def test_diverging_iterates_are_never_counted_as_converged():
    # A huge step makes the accelerated map wild; whatever happens, no NaN counts as converged.
    torch.manual_seed(1)
    model = LBEN(10, 3, 16, solver="anderson", alpha=1e6, max_iter=30, tol=1e-8)
    with torch.no_grad():
        model.b_z.normal_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with torch.no_grad():
            model(torch.randn(4, 10))
    stats = model.solver_stats["forward"]
    assert bool((stats.converged <= torch.isfinite(stats.residual) & (stats.residual <= 1e-8)).all())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory": 1}, "memory"),
        ({"mixing": 0.0}, "mixing"),
        ({"mixing": 1.5}, "mixing"),
        ({"regularization": -1.0}, "regularization"),
        ({"alpha": 0.0}, "alpha"),
        ({"window": 3}, "alpha, check_every, max_iter, memory, mixing, on_nonconvergence, regularization, tol"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigurationError, match=message):
        get_solver("anderson", **options)
