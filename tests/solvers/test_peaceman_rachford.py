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


def _metric_matrix(model: LBEN) -> torch.Tensor:
    """M = Λ^{1/2}(I − W)Λ^{-1/2} in float64 from the explicit weights."""
    weights = model.explicit_weights()
    W, lam = weights.W.double(), weights.lam.double()
    s = lam.sqrt()
    return (torch.eye(W.shape[0], dtype=torch.float64) - W) * s[:, None] / s[None, :]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_step_is_min_one_and_inverse_sqrt_mu_l(seed):
    # Independent float64 constants: μ = λ_min((M + Mᵀ)/2), L = ‖M‖₂.
    torch.manual_seed(seed)
    model = LBEN(6, 2, 12, gamma=1.0, margin=float(seed + 1)).double()
    M = _metric_matrix(model)
    mu = torch.linalg.eigvalsh((M + M.T) / 2)[0].item()
    L = torch.linalg.matrix_norm(M, ord=2).item()
    expected = min(1.0, 1.0 / (mu * L) ** 0.5)
    x = torch.randn(3, 6, dtype=torch.float64)
    model(x)
    stats = model.solver_stats["forward"]
    assert stats.extra["alpha"] == pytest.approx(expected, rel=1e-9)
    assert get_solver("pr", alpha=0.3).step_size(
        FixedPointProblem(model.forward_parts().operator, torch.zeros(1, 12, dtype=torch.float64), model.activation)
    ) == 0.3


def test_default_step_below_one_on_a_spread_spectrum_and_fewer_iterations(reference):
    # A large margin spreads the symmetric part of I − W: 1/√(μL) < 1, and the default step beats α = 1.
    torch.manual_seed(3)
    model = LBEN(6, 2, 16, gamma=1.0, margin=4.0).double()
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(32, 6, dtype=torch.float64)
    model.set_solver("pr", tol=1e-10, max_iter=2000)
    model(x)
    default = model.solver_stats["forward"]
    assert default.extra["alpha"] < 0.9
    reference.check_model(model, x, 1e-10)
    model.set_solver("pr", alpha=1.0, tol=1e-10, max_iter=2000)
    model(x)
    assert default.total_iterations < model.solver_stats["forward"].total_iterations


def test_operator_without_constants_takes_unit_step():
    problem = FixedPointProblem(_NoInverseOperator(), torch.ones(2, 3, dtype=torch.float64), get_activation("relu"))
    assert get_solver("pr").step_size(problem) == 1.0


def test_estimated_constants_of_wide_models_are_close_to_exact():
    # Above EXACT_CONSTANTS_MAX_WIDTH the rule uses power-iteration estimates; they must land near
    # the exact float64 constants (L from below, μ from above), so α stays near the rule's value.
    from lben_ode.models.dense_operator import EXACT_CONSTANTS_MAX_WIDTH

    torch.manual_seed(5)
    width = EXACT_CONSTANTS_MAX_WIDTH + 44
    model = LBEN(6, 2, width, gamma=1.0, margin=2.0).double()
    operator = model.forward_parts().operator
    mu_est, L_est = operator.peaceman_rachford_constants()
    assert "mu_L" not in operator._shared  # the exact decomposition was not computed
    M = _metric_matrix(model)
    mu = torch.linalg.eigvalsh((M + M.T) / 2)[0].item()
    L = torch.linalg.matrix_norm(M, ord=2).item()
    assert L * 0.97 <= L_est <= L * (1 + 1e-9)
    assert mu * (1 - 1e-9) <= mu_est <= mu * 1.5


class _ResolventOnly:
    """A dense operator seen through W and its resolvent only (no fused reflected resolvent)."""

    def __init__(self, operator) -> None:
        self._operator = operator

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return self._operator.apply(z)

    def transpose(self) -> _ResolventOnly:
        return _ResolventOnly(self._operator.transpose())

    def forward_backward_step(self) -> float:
        return self._operator.forward_backward_step()

    def resolvent(self, alpha: float):
        return self._operator.resolvent(alpha)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "resolvent_only"])
@pytest.mark.parametrize(("name", "kwargs"), [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("tanh", {})])
@pytest.mark.parametrize("transposed", [False, True])
def test_fused_iteration_matches_the_textbook_one(transposed, name, kwargs, fused):
    # u½ = 2z − u; z½ = R(u½ + αb); u = 2z½ − u½; z = prox(u), written out in float64, from a start
    # z₀ (u₀ = z₀) that the solver must leave as it was (its buffers are reused between steps).
    torch.manual_seed(7)
    model = LBEN(6, 2, 10, gamma=1.0).double()
    operator = model.forward_parts().operator
    operator = operator.transpose() if transposed else operator
    operator = operator if fused else _ResolventOnly(operator)
    b = torch.randn(4, 10, dtype=torch.float64)
    z0 = torch.randn(4, 10, dtype=torch.float64)
    kept = z0.clone()
    act = get_activation(name, **kwargs)
    problem = FixedPointProblem(operator, b, act)
    z, stats = get_solver("pr", alpha=0.7, tol=1e-30, max_iter=7).solve(problem, z0)
    assert stats.total_iterations == 7
    assert torch.equal(z0, kept)
    W = model.explicit_weights().W.double()
    W = W.T if transposed else W
    eye = torch.eye(10, dtype=torch.float64)
    R = torch.linalg.inv(eye + 0.7 * (eye - W))
    z_ref, u = z0.clone(), z0.clone()
    for _ in range(7):
        u_half = 2 * z_ref - u
        z_half = (u_half + 0.7 * b) @ R.T
        u = 2 * z_half - u_half
        z_ref = act.prox(u, 0.7)
    torch.testing.assert_close(z, z_ref, rtol=1e-12, atol=1e-12)
