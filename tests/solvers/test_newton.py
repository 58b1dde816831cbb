"""The semismooth Newton solver: exact steps on piecewise-linear models, its safeguard, the direct
adjoint solve, and what it refuses. Equilibria and gradients are checked against the float64
references of ``tests/conftest.py``."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN, ConfigurationError, ConvLBEN, UnknownNameError, UnsupportedSolverError
from lben_ode.activations import Sigmoid
from lben_ode.solvers import FixedPointProblem, get_solver
from lben_ode.solvers.newton import SemismoothNewton, dense_matrix, newton_direction

pytestmark = pytest.mark.usefixtures("single_thread")


def random_lben(width: int, activation: str = "relu", dtype: torch.dtype = torch.float64, **options) -> LBEN:
    """A γ = 1 LBEN at its initialisation (784 inputs, 10 outputs), random Λ and biases."""
    torch.manual_seed(width)
    model = LBEN(784, 10, width, gamma=1.0, activation=activation, solver="newton", **options)
    with torch.no_grad():
        model.log_lambda.uniform_(-1.0, 1.0)
        model.b_z.normal_()
    return model.to(dtype)


def mnist_like(batch: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(batch, 784, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_converges_to_the_float64_reference_in_a_few_newton_steps(activation, reference):
    model = random_lben(40, activation, tol=1e-11)
    reference.check_model(model, mnist_like(16), 1e-11)
    stats = model.solver_stats["forward"]
    # Exact on each active set: a handful of steps, none of them the safeguard's.
    assert stats.total_iterations <= 8
    assert int(stats.safeguard_steps.sum()) == 0
    assert stats.checks == stats.total_iterations  # checked after every step by default


def test_float32_meets_its_tolerance_in_a_few_steps(reference):
    model = random_lben(80, dtype=torch.float32, tol=1e-4)
    reference.check_float32_model(model, mnist_like(64, torch.float32), 1e-4)
    assert model.solver_stats["forward"].total_iterations <= 8


def pure_newton_residuals(problem: FixedPointProblem, steps: int) -> list[torch.Tensor]:
    """Per-sample ‖z − σ(Wz + b)‖ along plain semismooth Newton from zero (no safeguard), in float64."""
    M = dense_matrix(problem.operator)
    z = torch.zeros_like(problem.injection)
    residuals = [problem.residuals(z)[0]]
    for _ in range(steps):
        v = z @ M.T + problem.injection
        z = z + newton_direction(M, problem.activation.derivative(v), z - problem.activation(v))
        residuals.append(problem.residuals(z)[0])
    return residuals


def test_the_safeguard_converges_where_plain_newton_cycles(rescaled_random_model, reference):
    # Weights rescaled by up to 10^±2: the active set of plain Newton cycles on this model.
    model, x = rescaled_random_model(28, "relu", spread=2.0)
    with torch.no_grad():
        parts = model.forward_parts()
        problem = FixedPointProblem(parts.operator, parts.injection(x), model.activation)
    plain = pure_newton_residuals(problem, 60)
    assert bool((plain[1] > plain[0]).any())  # the first plain step raises the residual of some samples
    stuck = plain[-1] > 1e-3 * plain[0]  # after 60 steps, far from z*
    assert int(stuck.sum()) >= 6
    model.set_solver("newton", tol=1e-8, max_iter=20000)
    reference.check_model(model, x, 1e-8)
    stats = model.solver_stats["forward"]
    assert bool((stats.safeguard_steps[stuck] > 0).all())


def test_the_merit_stays_under_the_envelope_at_every_step(rescaled_random_model):
    model, x = rescaled_random_model(10, "relu", spread=2.0)
    solver = SemismoothNewton(slack=2.0)
    with torch.no_grad():
        parts = model.forward_parts()
        problem = FixedPointProblem(parts.operator, parts.injection(x), model.activation)
        state = solver.init_state(problem, torch.zeros_like(problem.injection))
        rate, start = state.step.rate, state.merit
        assert rate is not None and 0 < rate < 1
        took_safe_steps = False
        for k in range(1, 200):
            before = state.safeguarded
            state = solver.step(problem, state)
            took_safe_steps |= bool((state.safeguarded > before).any())
            # The merit recomputed from z, against κ ρᵏ m(z₀) computed here.
            image = problem.activation.prox(
                (1 - state.step.alpha) * state.z
                + state.step.alpha * (state.z @ dense_matrix(parts.operator).T + problem.injection),
                state.step.alpha,
            )
            merit = ((state.z - image).square() * state.step.weights).sum(dim=1).sqrt()
            assert bool((merit <= 2.0 * rate**k * start * (1 + 1e-9) + 1e-14).all()), k
    assert took_safe_steps


def explicit_input_gradient(model, x: torch.Tensor, c: torch.Tensor, reference, sigma) -> torch.Tensor:
    """∂(Σ c·y)/∂x = Uᵀ D (I − D W)⁻ᵀ W_oᵀ c at the reference equilibrium, in float64."""
    w = model.explicit_weights()
    injection = x @ w.U.T + w.b_z
    z = reference.equilibrium(w.W, injection, sigma)
    slopes = sigma[1](z @ w.W.T + injection)
    jacobian = torch.eye(w.W.shape[0], dtype=torch.float64) - slopes[:, :, None] * w.W
    adjoint = torch.linalg.solve(jacobian.transpose(1, 2), (c @ w.W_o)[:, :, None])[:, :, 0]
    return (slopes * adjoint) @ w.U


@pytest.mark.parametrize(("activation", "forward"), [("relu", "newton"), ("relu", "pr"), ("tanh", "pr")])
def test_the_adjoint_is_one_direct_solve(activation, forward, reference, activation_reference):
    model = random_lben(30, activation, tol=1e-11, forward=forward, on_nonconvergence="raise")
    x = mnist_like(6).requires_grad_(True)
    c = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (model(x) * c).sum().backward()
    forward_stats, backward_stats = model.solver_stats["forward"], model.solver_stats["backward"]
    assert forward_stats.solver == ("newton" if forward == "newton" else "pr")
    assert backward_stats.solver == "newton" and backward_stats.total_iterations == 1
    if forward == "pr":  # the direct solve needs no safeguard: no forward-backward step was computed
        shared = model.forward_parts().operator._shared
        assert "fb_contraction" not in shared and ("safe_step", True) not in shared
    expected = explicit_input_gradient(model, x.detach(), c, reference, activation_reference(activation))
    torch.testing.assert_close(x.grad, expected, rtol=1e-7, atol=1e-9)


def test_smooth_activations_and_conv_models_are_refused_with_the_solvers_that_work():
    with pytest.raises(UnsupportedSolverError, match="piecewise-linear") as info:
        LBEN(4, 2, 6, activation="tanh", solver="newton")
    message = str(info.value)
    assert "Solvers that work with it: 'anderson', 'fb', 'ode', 'pr'" in message and "forward='pr'" in message
    model = LBEN(4, 2, 6, activation="softplus", solver="pr")
    with pytest.raises(UnsupportedSolverError):
        model.set_solver("newton")
    assert model.solver.name == "pr"  # the previous solver is kept
    assert model.set_solver("newton", forward="pr").name == "newton"  # PR forward takes any activation
    with pytest.raises(UnsupportedSolverError, match="explicit dense matrix"):
        ConvLBEN(1, 2, 4, 3, solver="newton")
    # A problem handed to the solver directly is checked too.
    dense = LBEN(4, 2, 6, activation="relu")
    with torch.no_grad():
        parts = dense.forward_parts()
        problem = FixedPointProblem(parts.operator, parts.injection(torch.randn(3, 4)), dense.activation)
    problem.activation = Sigmoid()
    with pytest.raises(UnsupportedSolverError, match="cannot use activation Sigmoid"):
        get_solver("newton").solve(problem)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"forward": "lu"}, ConfigurationError, "'newton' or 'pr'"),
        ({"slack": 0.5}, ConfigurationError, "a float ≥ 1"),
        ({"check_every": 0}, ConfigurationError, "an int ≥ 1 or None"),
        ({"max_iter": 2.5}, ConfigurationError, "an int ≥ 1 or None"),
        ({"alpha": -1.0}, ConfigurationError, "a float > 0"),
        ({"damping": 0.5}, UnknownNameError, "slack"),
    ],
)
def test_bad_options_are_rejected(options, error, match):
    with pytest.raises(error, match=match):
        get_solver("newton", **options)


def test_the_default_budget_covers_the_proven_rate():
    model = random_lben(20)
    with torch.no_grad():
        parts = model.forward_parts()
        problem = FixedPointProblem(parts.operator, parts.injection(mnist_like(2)), model.activation)
    fb_budget = get_solver("fb", tol=1e-6).step_budget(problem)
    newton = get_solver("newton", tol=1e-6)
    # The envelope κ(1 + ρ)/(1 − ρ) costs extra steps over forward-backward's proven budget.
    assert newton.step_budget(problem) > fb_budget
    assert get_solver("newton", max_iter=7).step_budget(problem) == 7
