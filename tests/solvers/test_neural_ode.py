"""The neural-ODE solver: steady states against float64 references, gradients, budgets, options."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from lben_ode import LBEN, ConfigurationError, ConvergenceError, ConvergenceWarning, UnknownNameError
from lben_ode.activations import Activation, LinearSlopes, Tanh
from lben_ode.gradients import EquilibriumGraph, ODEAdjoint
from lben_ode.models.dense_operator import DenseOperator
from lben_ode.solvers import FixedPointProblem, available, get_solver, solver_class
from lben_ode.solvers.neural_ode import SteadyStateODE
from lben_ode.solvers.results import Result

MODEL_KINDS = ["lben_gamma", "lben_unconstrained", "mondeq"]
#: Right-hand-side evaluations per step of each method in torchdiffeq (dopri5 and bosh3 reuse the
#: last stage of the previous step; each adaptive chunk starts with one evaluation of its own).
STAGES = {"dopri5": 6, "bosh3": 3, "rk4": 4, "heun3": 3, "euler": 1, "midpoint": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: one thread keeps thread hand-offs from dominating their run time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def gradients(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of a fixed nonlinear loss of the outputs w.r.t. every parameter and the input."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    model(x).sin().sum().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None] + [x.grad.clone()]


# -- registration and configuration ----------------------------------------------------------------
def test_registered_and_usable_by_every_model_by_name():
    assert "ode" in available()
    assert solver_class("ode") is SteadyStateODE
    model = LBEN(4, 2, 6, solver="ode", tol=1e-4)
    assert isinstance(model.solver, SteadyStateODE) and model.solver.options["method"] == "auto"
    # Implicit gradients by default; torchdiffeq's adjoint only when asked for.
    assert not solver_class("ode").differentiable and not model.solver.differentiable
    assert get_solver("ode", backward="adjoint").differentiable


@pytest.mark.parametrize(
    ("options", "error", "needles"),
    [
        ({"chunk_tim": 1.0}, UnknownNameError, ["chunk_time", "max_time", "method", "backward"]),
        ({"method": "rk45"}, ConfigurationError, ["rk45", "dopri5", "bosh3", "rk4", "euler"]),
        ({"method": "explicit_adams", "step_size": 0.1}, ConfigurationError, ["explicit_adams", "implicit_adams"]),
        ({"method": "rk4"}, ConfigurationError, ["rk4", "needs step_size"]),
        ({"method": "dopri5", "step_size": 0.5}, ConfigurationError, ["step_size", "fixed-step"]),
        ({"method": "euler", "step_size": 0.5, "first_step": 0.1}, ConfigurationError, ["first_step"]),
        ({"method": "rk4", "step_size": 0.5, "max_step": 1.0}, ConfigurationError, ["max_step"]),
        ({"step_size": -1.0, "method": "rk4"}, ConfigurationError, ["step_size", "> 0"]),
        ({"chunk_growth": 0.5}, ConfigurationError, ["chunk_growth", "≥ 1"]),
        ({"rtol": 0.0}, ConfigurationError, ["rtol"]),
        ({"max_time": float("inf")}, ConfigurationError, ["max_time"]),
        ({"backward": "unrolled"}, ConfigurationError, ["'implicit' or 'adjoint'"]),
        ({"step_size": 0.5}, ConfigurationError, ["method='auto'", "step_size", "euler"]),
        ({"first_step": 0.5}, ConfigurationError, ["method='auto'", "first_step", "dopri5"]),
    ],
)
def test_bad_options_get_clear_errors(options, error, needles):
    with pytest.raises(error) as info:
        get_solver("ode", **options)
    for needle in needles:
        assert needle in str(info.value)
    with pytest.raises(error):
        LBEN(3, 2, 4, solver="ode", **options)


# -- the steady state ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "dopri5"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_steady_state_meets_tol_and_matches_newton_and_pr(
    kind, method, activation_case, reference, small_model_factory
):
    name, kwargs = activation_case
    tol = 1e-7
    model = small_model_factory(kind, name, kwargs, seed=5, solver="ode", tol=tol, method=method)
    x = torch.randn(6, 5, dtype=torch.float64)
    # Residual ≤ tol, and within C·residual of the float64 Newton equilibrium.
    z_ode, _ = reference.check_model(model, x, tol)
    stats, ode = model.solver_stats["forward"], model.solver
    model.set_solver("pr", tol=tol)
    with torch.no_grad():
        z_pr = model.equilibrium(x)
    weights = model.explicit_weights()
    C = reference.error_constant(weights.W, weights.lam)
    allowed = C * tol * (z_ode.norm(dim=1) + z_pr.norm(dim=1))
    assert bool(((z_ode - z_pr).norm(dim=1) <= allowed).all())
    # Steady state was measured between chunks, not at every step.
    extra = stats.extra
    assert extra["integration_time"] > 0 and extra["checks"] >= 2
    assert extra["checks"] < extra["accepted_steps"]
    operator = model.forward_parts().operator
    problem = FixedPointProblem(operator, torch.zeros(1, 12, dtype=torch.float64), model.activation)
    used, _ = ode.integration_method(problem)
    if method == "auto":
        # A fixed-step method chosen from the model: its stages per step, no extra evaluation per chunk.
        assert used in ("euler", "midpoint", "heun3", "rk4") and extra["step_size"] > 0
        assert stats.function_evaluations == STAGES[used] * extra["accepted_steps"]
    else:
        assert used == "dopri5"
        assert stats.function_evaluations == STAGES["dopri5"] * (
            extra["accepted_steps"] + extra["rejected_steps"]
        ) + (extra["checks"] - 1)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "rk4", "step_size": 0.5},
        {"method": "euler", "step_size": 0.25},
        {"method": "midpoint", "step_size": 0.5},
        {"method": "bosh3"},
    ],
    ids=["rk4", "euler", "midpoint", "bosh3"],
)
def test_other_methods_reach_the_same_equilibrium(options, reference, small_model_factory):
    tol = 1e-7
    model = small_model_factory("lben_gamma", "relu", {}, seed=6, solver="ode", tol=tol, **options)
    reference.check_model(model, torch.randn(5, 5, dtype=torch.float64), tol)
    stats = model.solver_stats["forward"]
    extra = stats.extra
    steps = extra["accepted_steps"] + extra["rejected_steps"]
    method = options["method"]
    if "step_size" in options:
        # A fixed-step method takes whole steps of step_size and rejects none.
        assert extra["rejected_steps"] == 0 and extra["step_size"] == options["step_size"]
        assert stats.function_evaluations == STAGES[method] * steps
        assert extra["integration_time"] == pytest.approx(steps * options["step_size"])
    else:
        assert stats.function_evaluations == STAGES[method] * steps + (extra["checks"] - 1)


def test_float32_defaults_converge_on_a_wider_model(reference):
    torch.manual_seed(3)
    model = LBEN(20, 4, 40, gamma=1.0, solver="ode", tol=1e-4)
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(16, 20)
    reference.check_float32_model(model, x, 1e-4)


def test_fixed_step_outside_the_stability_region_is_halved(reference, small_model_factory):
    # Every explicit method is unstable for steps much longer than the ODE's time scales.
    tol = 1e-7
    model = small_model_factory("lben_gamma", "tanh", {}, seed=9, solver="ode", tol=tol, method="rk4", step_size=16.0)
    reference.check_model(model, torch.randn(4, 5, dtype=torch.float64), tol)
    extra = model.solver_stats["forward"].extra
    assert extra["step_reductions"] >= 1 and extra["step_size"] == 16.0 / 2 ** extra["step_reductions"]


def test_transient_growth_of_the_residual_is_not_taken_for_instability(rescaled_random_model):
    # Growth over one chunk used to discard the chunk and shrink the steps; every retry saw the
    # same rise, the budget ran out at t = 0.09 and the implicit gradient was 101 % wrong.
    # A model whose adjoint ODE's ‖du/dt‖ rises over t ∈ [0, 2] before it decays.
    model, x = rescaled_random_model(104, "leaky_relu", 0.3, gamma=2.0, batch=3)
    model.set_solver("pr", tol=1e-12, max_iter=5000)
    expected = gradients(model, x)
    model.set_solver("ode", tol=1e-8, on_nonconvergence="raise")
    got = gradients(model, x)
    backward = model.solver_stats["backward"]
    assert backward.all_converged and backward.extra["step_reductions"] <= 1
    for a, b in zip(got, expected, strict=True):
        assert relative_error(a, b) < 1e-5


def test_unconverged_solves_say_the_gradient_is_unreliable(rescaled_random_model):
    # A model whose adjoint ODE's ‖du/dt‖ rises over t ∈ [0, 2] before it decays.
    model, x = rescaled_random_model(104, "leaky_relu", 0.3, gamma=2.0, batch=3)
    model.set_solver("ode", max_iter=3)
    with pytest.warns(ConvergenceWarning, match="gradients through this solve are unreliable"):
        y = model(x.clone().requires_grad_(True))
    with pytest.warns(ConvergenceWarning, match="gradient computed from this adjoint solve is unreliable"):
        y.sum().backward()
    # Without gradients the warning has nothing to say about them.
    with pytest.warns(ConvergenceWarning) as record, torch.no_grad():
        model(x)
    assert not any("unreliable" in str(w.message) for w in record)


def test_warm_start_at_the_equilibrium_takes_no_step(small_model_factory):
    model = small_model_factory("lben_gamma", "tanh", {}, seed=2, solver="pr", tol=1e-12, max_iter=2000)
    x = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        z_star = model.equilibrium(x)
        model.set_solver("ode", tol=1e-8)
        z = model.equilibrium(x, z0=z_star)
        at_start = model.solver_stats["forward"]
        # (The model returns σ(W z + U x + b) of the solver's z: z* up to rounding.)
        assert relative_error(z, z_star) < 1e-12
        assert at_start.all_converged and at_start.total_iterations == 0 and at_start.function_evaluations == 0
        # A start near z* needs fewer steps than a start at zero.
        near = model.equilibrium(x, z0=z_star + 1e-3 * torch.randn_like(z_star))
        warm_steps = model.solver_stats["forward"].total_iterations
        model.equilibrium(x)
        assert 0 < warm_steps < model.solver_stats["forward"].total_iterations
        assert relative_error(near, z_star) < 1e-6


def test_adjoint_equilibrium_of_implicit_gradients_matches_a_direct_solve(small_model_factory):
    # u = D(Wᵀu + g), i.e. (I − D Wᵀ) u = D g, solved by integrating du/dt = −u + D(Wᵀu + g).
    model = small_model_factory("lben_gamma", "relu", {}, seed=4, solver="ode")
    W = model.explicit_weights().W
    torch.manual_seed(4)
    slopes = torch.rand(5, 12, dtype=torch.float64)
    g = torch.randn(5, 12, dtype=torch.float64)
    problem = FixedPointProblem(model.forward_parts().operator.transpose(), g, LinearSlopes(slopes))
    u, stats = get_solver("ode", tol=1e-10).solve(problem)
    assert stats.all_converged
    eye = torch.eye(12, dtype=torch.float64)
    direct = torch.linalg.solve(eye - slopes[:, :, None] * W.T, (slopes * g)[:, :, None])[:, :, 0]
    assert relative_error(u, direct) < 1e-8


# -- gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_implicit_gradients_match_peaceman_rachford(kind, activation_case, small_model_factory):
    name, kwargs = activation_case
    model = small_model_factory(kind, name, kwargs, seed=11, solver="pr", tol=1e-12, max_iter=5000)
    x = torch.randn(4, 5, dtype=torch.float64)
    expected = gradients(model, x)
    tol = 1e-8
    model.set_solver("ode", tol=tol)
    got = gradients(model, x)
    assert model.solver_stats["backward"].all_converged and model.solver_stats["backward"].solver == "ode"
    # Forward and adjoint equilibria within about tol of exact put the gradients within a few
    # times tol of PR's (measured: at most 2·tol here); a wrong adjoint problem would be off by O(1).
    for a, b in zip(got, expected, strict=True):
        assert relative_error(a, b) < 100 * tol


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradcheck_of_the_implicit_gradient(activation, small_model_factory):
    # rk4 reaches 1e-12 in far fewer steps than dopri5 with rtol = 1e-13; the implicit gradient
    # does not depend on how the equilibrium was found.
    model = small_model_factory(
        "lben_gamma", activation, {}, seed=1, solver="ode", tol=1e-12, on_nonconvergence="raise",
        method="rk4", step_size=0.5,
    )
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    # Converged to 1e-12, the central differences are accurate to about 1e-12/eps = 1e-6.
    assert gradcheck(lambda v: model(v), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    ("activation", "kind", "options"),
    [
        ("tanh", "lben_gamma", {}),
        ("relu", "lben_unconstrained", {}),
        ("softplus", "mondeq", {"method": "rk4", "step_size": 0.5}),
        ("relu", "lben_gamma", {"method": "rk4", "step_size": 0.5}),
    ],
)
def test_adjoint_gradients_agree_with_implicit_ones(activation, kind, options, small_model_factory):
    tol = 1e-7
    model = small_model_factory(kind, activation, {}, seed=13, solver="ode", tol=tol, **options)
    x = torch.randn(4, 5, dtype=torch.float64)
    implicit = gradients(model, x)
    model.set_solver("ode", tol=tol, backward="adjoint", **options)
    adjoint = gradients(model, x)
    stats = model.solver_stats
    assert "backward" not in stats and stats["forward"].all_converged
    # odeint_adjoint differentiates z(T), with T where the residual reached tol; z(T) and its
    # gradient are then within a few times tol of z* and the implicit gradient (measured: 1–10·tol).
    for a, b in zip(adjoint, implicit, strict=True):
        assert relative_error(a, b) < 100 * tol


class ReshapedOperator:
    """A dense operator acting on states shaped ``(batch, 2, n/2)``, like a non-flat model's."""

    def __init__(self, flat: DenseOperator) -> None:
        self.flat = flat

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return self.flat.apply(z.flatten(1)).view_as(z)

    def transpose(self) -> ReshapedOperator:
        return ReshapedOperator(self.flat.transpose())

    def forward_backward_step(self) -> float:
        return self.flat.forward_backward_step()

    def resolvent(self, alpha: float) -> None:
        return None


def test_adjoint_gradients_of_a_non_flat_state_equal_the_flat_ones(small_model_factory):
    model = small_model_factory("lben_gamma", "tanh", {}, seed=3, solver="ode")
    solver = get_solver("ode", tol=1e-8, backward="adjoint", method="rk4", step_size=0.5)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)

    def run(flat: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        x.grad = None
        parts = model.forward_parts()
        graph = EquilibriumGraph(parts.apply_W, parts.injection(x), model.activation, parts.operator)
        if not flat:  # W through apply_W: the adjoint parameters are the leaves behind it
            graph = EquilibriumGraph(
                apply_W=lambda z: parts.apply_W(z.flatten(1)).view_as(z),
                injection=graph.injection.view(3, 2, 6),
                activation=model.activation,
                operator=ReshapedOperator(parts.operator),
            )
        z, stats = ODEAdjoint().equilibrium(solver, graph, None, lambda stats: None)
        assert stats.all_converged
        z = z.flatten(1)
        z.sin().sum().backward()
        return z.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None] + [x.grad.clone()]

    z_flat, g_flat = run(True)
    z_shaped, g_shaped = run(False)
    assert relative_error(z_shaped, z_flat) < 1e-12
    # U reaches z through W and through the injection: each path must count exactly once.
    assert len(g_shaped) == len(g_flat)
    for a, b in zip(g_shaped, g_flat, strict=True):
        assert relative_error(a, b) < 1e-10


# -- budgets and failures -------------------------------------------------------------------------
def test_tiny_step_budget_is_flagged(small_model_factory):
    model = small_model_factory("lben_gamma", "relu", {}, seed=8, solver="ode", tol=1e-8, max_iter=3)
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match=r"step budget max_iter=3 ran out"):
        with torch.no_grad():
            z = model.equilibrium(x)
    stats = model.solver_stats["forward"]
    assert not bool(stats.converged.any()) and stats.residual.max() > 1e-8
    assert stats.extra["accepted_steps"] + stats.extra["rejected_steps"] == 3
    assert bool(torch.isfinite(z).all()) and z.abs().sum() > 0  # the last state reached, not zeros
    assert "max_iter=3" in stats.stop_reason and stats.result is Result.MAX_STEPS
    model.set_solver("ode", tol=1e-8, max_iter=3, on_nonconvergence="raise")
    with pytest.raises(ConvergenceError, match=r"4 of 4 samples did not reach tol=1e-08"):
        model(x)


def test_tiny_time_budget_is_flagged(small_model_factory):
    model = small_model_factory("mondeq", "tanh", {}, seed=8, solver="ode", tol=1e-8, max_time=0.5, method="dopri5")
    with pytest.warns(ConvergenceWarning, match=r"max_time=0.5"):
        with torch.no_grad():
            model.equilibrium(torch.randn(4, 5, dtype=torch.float64))
    stats = model.solver_stats["forward"]
    assert stats.extra["integration_time"] == 0.5 and not stats.all_converged
    assert stats.result is Result.MAX_TIME


class BreaksAbove(Activation):
    """tanh that returns NaN above a threshold: a right-hand side the integrator cannot cross."""

    name = "breaks_above"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return torch.where(v > 1.2, torch.full_like(v, float("nan")), torch.tanh(v))

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return Tanh().derivative(v)


def test_a_failure_inside_torchdiffeq_is_reported_not_raised():
    # z grows from 0 towards z* = tanh(0.5 z* + 0.85) ≈ 0.86, crossing v = 1.2 (z = 0.7) on the way.
    W = 0.5 * torch.eye(3, dtype=torch.float64)
    problem = FixedPointProblem(DenseOperator(W, None), torch.full((2, 3), 0.85, dtype=torch.float64), BreaksAbove())
    solver = get_solver("ode", tol=1e-8, method="dopri5")
    z, stats = solver.solve(problem)
    assert not stats.all_converged and "step size underflowed" in stats.stop_reason
    assert stats.result is Result.INTEGRATOR_FAILED
    # The last state the integration accepted is returned: finite, and on the way to z*.
    assert bool(torch.isfinite(z).all()) and stats.extra["integration_time"] > 0
    assert bool(((z > 0.3) & (z <= 0.7)).all())
    with pytest.warns(ConvergenceWarning, match="step size underflowed"):
        solver.report(stats, "forward")
    with pytest.raises(ConvergenceError, match="step size underflowed"):
        get_solver("ode", tol=1e-8, method="dopri5", on_nonconvergence="raise").report(stats, "forward")
