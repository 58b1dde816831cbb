"""Forward-backward and Peaceman-Rachford find the same equilibrium, to within what tol allows."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_thread")



@pytest.mark.parametrize("kind", ["lben_gamma", "lben_unconstrained", "mondeq"])
def test_fb_and_pr_agree_within_the_tolerance_bound(kind, activation_case, reference, small_model_factory):
    name, kwargs = activation_case
    tol = 1e-6
    model = small_model_factory(kind, name, kwargs, seed=21, solver="fb", tol=tol)
    x = torch.randn(8, 5, dtype=torch.float64)
    with torch.no_grad():
        z_fb = model.equilibrium(x)
        fb = model.solver_stats["forward"]
        model.set_solver("pr", tol=tol)
        z_pr = model.equilibrium(x)
        pr = model.solver_stats["forward"]
    assert fb.all_converged and pr.all_converged
    weights = model.explicit_weights()
    C = reference.error_constant(weights.W, weights.lam)
    # Each is within C·‖residual‖ of the unique z*; the residuals are at most tol·‖z‖.
    allowed = C * tol * (z_fb.norm(dim=1) + z_pr.norm(dim=1))
    difference = (z_fb - z_pr).norm(dim=1)
    assert bool((difference <= allowed).all()), (difference, allowed)
    # The two solvers really are different iterations (not the same numbers twice).
    assert not torch.equal(fb.iterations, pr.iterations)
