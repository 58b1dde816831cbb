"""Peaceman-Rachford splitting against an independent float64 Newton solve, and its cached inverse."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN, UnsupportedSolverError
from lben_ode.activations import get_activation
from lben_ode.solvers import FixedPointProblem, get_solver

pytestmark = pytest.mark.usefixtures("single_thread")

MODEL_KINDS = ["lben_gamma", "lben_unconstrained", "mondeq"]


@pytest.mark.parametrize("alpha", [0.05, 0.5, 3.0, 20.0])
@pytest.mark.parametrize(("name", "kwargs"), [("relu", {}), ("leaky_relu", {"negative_slope": 0.1})])
def test_pr_converges_for_every_alpha(alpha, name, kwargs, reference, small_model_factory):
    # Any α > 0 converges for a well-posed model (the prox of leaky ReLU depends on α).
    model = small_model_factory("lben_gamma", name, kwargs, seed=8, solver="pr", alpha=alpha, tol=1e-10, max_iter=20000)
    reference.check_model(model, torch.randn(4, 5, dtype=torch.float64), 1e-10)


def test_pr_default_settings_float32(activation_case, reference):
    name, kwargs = activation_case
    torch.manual_seed(12)
    model = LBEN(20, 4, 24, gamma=1.0, activation=get_activation(name, **kwargs))
    assert model.solver.name == "pr"
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(16, 20)
    reference.check_float32_model(model, x, model.solver.tol)


class _NoInverseOperator:
    """An operator without an efficient resolvent (like a convolutional W)."""

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * z

    def transpose(self) -> _NoInverseOperator:
        return self

    def forward_backward_step(self) -> float:
        return 0.5

    def resolvent(self, alpha: float) -> None:
        return None


def test_pr_refuses_an_operator_without_resolvent():
    problem = FixedPointProblem(_NoInverseOperator(), torch.ones(2, 3, dtype=torch.float64), get_activation("relu"))
    with pytest.raises(UnsupportedSolverError, match="fb"):
        get_solver("pr").solve(problem)
    # Forward-backward handles the same problem: z = relu(z/2 + 1) gives z = 2.
    z, stats = get_solver("fb", tol=1e-8).solve(problem)
    assert stats.all_converged
    torch.testing.assert_close(z, torch.full((2, 3), 2.0, dtype=torch.float64), rtol=1e-7, atol=0)


def test_pr_inverse_is_cached_until_the_parameters_change():
    torch.manual_seed(0)
    model = LBEN(6, 2, 8, gamma=1.0).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    model(x)
    operator = model.forward_parts().operator
    inverse = operator._shared[("inverse", 1.0)]
    model(x).sum().backward()  # the backward (adjoint) solve reuses the same inverse via Wᵀ
    assert model.forward_parts().operator is operator
    assert operator._shared[("inverse", 1.0)] is inverse
    assert model._operator_cache[1] is operator

    W = model.explicit_weights().W
    eye = torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(inverse, torch.linalg.inv(2 * eye - W), rtol=1e-12, atol=1e-12)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    model(x)
    new_operator = model.forward_parts().operator
    assert new_operator is not operator
    W_new = model.explicit_weights().W
    assert not torch.allclose(W_new, W)
    torch.testing.assert_close(
        new_operator._shared[("inverse", 1.0)], torch.linalg.inv(2 * eye - W_new), rtol=1e-12, atol=1e-12
    )

    # load_state_dict writes in place: the cache must notice that too.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["S"] += 0.1
    model.load_state_dict(state)
    assert model.forward_parts().operator is not new_operator


@pytest.mark.parametrize("solver", ["pr", "fb"])
def test_writes_through_data_are_noticed(solver, reference):
    # `.data` writes (gradcheck's perturbations, weight clipping in older code) leave the version
    # counters alone; the solve must still use the current W, not a cached stale one.
    torch.manual_seed(1)
    model = LBEN(6, 2, 8, gamma=1.0, solver=solver, tol=1e-10, max_iter=20000).double()
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(3, 6, dtype=torch.float64)
    model(x)
    model.S.data.add_(0.5 * torch.randn_like(model.S))
    model.U.data.mul_(2.0)
    reference.check_model(model, x, 1e-10)
