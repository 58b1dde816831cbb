"""What every registered solver promises, checked for each one in ``lben_ode.solvers.available()``.

Registering a solver is enough to put it through these tests: equilibria of dense LBENs (γ-bounded
and unconstrained), monDEQs and a small convolutional LBEN for every activation against the float64
reference of ``tests/conftest.py``; refusal of models whose operator lacks what the solver needs;
implicit gradients against a float64 solve of the adjoint equation; reporting of every way a
solve can fail to converge; and one host synchronisation per convergence check, counted by patching
the tensor-to-Python conversions (so an ``.item()`` added inside a step fails here).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torchdiffeq

from lben_ode import LBEN, ConvergenceError, ConvergenceWarning, ConvLBEN, MonDEQ, UnsupportedSolverError
from lben_ode.activations import get_activation
from lben_ode.solvers import FixedPointProblem, IterativeSolver, Option, available, registry, solver_class
from lben_ode.solvers.options import positive_int
from lben_ode.solvers.results import REMEDIES, Result

pytestmark = pytest.mark.usefixtures("single_thread")

SOLVERS = available()
MODEL_KINDS = ["lben_gamma", "lben_unconstrained", "mondeq", "conv"]


@pytest.fixture
def build(small_model_factory):
    """Builds the model kinds of :data:`MODEL_KINDS` (see :func:`build_model`)."""

    def make(kind: str, activation: str, kwargs: dict, seed: int, solver: str, **options) -> torch.nn.Module:
        return build_model(small_model_factory, kind, activation, kwargs, seed, solver, **options)

    return make


def build_model(small_model, kind: str, activation: str, kwargs: dict, seed: int, solver: str, **options):
    """A float64 model of ``kind`` with random biases (and Λ): the dense ones of conftest's
    ``small_model`` (5 inputs, 12 units), or a ConvLBEN with 2 channels on 4×4 images (32 units)."""
    if kind != "conv":
        return small_model(kind, activation, kwargs, seed, solver, **options)
    torch.manual_seed(seed)
    act = get_activation(activation, **kwargs)
    # Small kernels and a metric near I keep forward-backward's provably safe step from being tiny.
    model = ConvLBEN(1, 2, 4, 3, gamma=1.0, activation=act, kernel_scale=0.25, solver=solver, **options)
    with torch.no_grad():
        model.b_z.normal_()
        model.log_lambda.uniform_(-0.2, 0.2)
    return model.double()


def inputs(kind: str, batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, 4, 4) if kind == "conv" else (5,)
    return torch.randn(batch, *shape, dtype=torch.float64, generator=generator)


def supports(kind: str, solver: str) -> bool:
    """Whether the model kind's operator provides what the solver requires (from the declarations)."""
    provides = {"conv": ConvLBEN, "mondeq": MonDEQ}.get(kind, LBEN).OPERATOR_PROVIDES
    return solver_class(solver).REQUIRES <= provides


def takes_activation(solver: str, activation: str, kwargs: dict | None = None) -> bool:
    """Whether the solver, with its default options, takes the activation (e.g. Newton needs a
    piecewise-linear one); the others are refused by set_solver."""
    return solver_class(solver)().activation_unsupported(get_activation(activation, **(kwargs or {}))) is None


def first_taken(solver: str, *activations: str) -> str:
    """The first of ``activations`` that the solver takes."""
    return next(a for a in activations if takes_activation(solver, a))


#: (solver, model kind) pairs where the model's operator provides what the solver requires; the
#: others are refused by set_solver (tested in the first test).
APPLICABLE = [(s, kind) for s in SOLVERS for kind in MODEL_KINDS if supports(kind, s)]


# -- equilibria -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_equilibrium_meets_tol_and_matches_the_float64_reference(solver, kind, activation_case, reference, build):
    name, kwargs = activation_case
    tol = 1e-10
    if not (supports(kind, solver) and takes_activation(solver, name, kwargs)):
        with pytest.raises(UnsupportedSolverError) as info:
            build(kind, name, kwargs, 3, solver, tol=tol)
        message = str(info.value)
        usable = [s for s in SOLVERS if supports(kind, s) and takes_activation(s, name, kwargs)]
        assert usable and f"Solvers that work with it: {', '.join(repr(s) for s in usable)}" in message
        return
    model = build(kind, name, kwargs, 3, solver, tol=tol, max_iter=20000)
    x = inputs(kind, 6)
    # Residual ≤ tol as reported and recomputed in float64, and ‖z − z*‖ ≤ C·residual for Newton's z*.
    z, bound = reference.check_model(model, x, tol)
    stats = model.solver_stats["forward"]
    assert stats.result is Result.CONVERGED and stats.stop_reason == "" and stats.solver == solver
    assert stats.total_iterations == int(stats.iterations.max())
    # The bound is itself small: the comparison is not vacuous.
    assert bool((bound <= 1e-7 * (1 + z.norm(dim=1))).all())


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_set_solver_checks_requirements_and_takes_a_solver_instance(solver, kind, build):
    model = build(kind, "relu", {}, 0, "fb", tol=1e-4)
    instance = solver_class(solver)(tol=1e-6)
    if supports(kind, solver):
        assert model.set_solver(instance) is instance and model.solver is instance
        assert solver in model.usable_solvers()
    else:
        with pytest.raises(UnsupportedSolverError, match=f"cannot use solver {solver!r}"):
            model.set_solver(instance)
        assert model.solver.name == "fb" and model.solver.tol == 1e-4  # the previous solver is kept
        assert solver not in model.usable_solvers()


# -- implicit gradients -----------------------------------------------------------------------------
def reference_input_gradient(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, reference, act) -> torch.Tensor:
    """∂(Σ c·y)/∂x in float64 from the explicit weights: ``Uᵀ D (I − D W)⁻ᵀ W_oᵀ c`` at Newton's z*."""
    w = model.explicit_weights()
    flat = x.flatten(1)
    injection = flat @ w.U.T + w.b_z
    _, dsigma = act
    z = reference.equilibrium(w.W, injection, act)
    slopes = dsigma(z @ w.W.T + injection)
    eye = torch.eye(w.W.shape[0], dtype=torch.float64)
    jacobian = eye - slopes[:, :, None] * w.W  # I − D W per sample
    adjoint = torch.linalg.solve(jacobian.transpose(1, 2), (c @ w.W_o)[:, :, None])[:, :, 0]
    return ((slopes * adjoint) @ w.U).view_as(x)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(("solver", "kind"), APPLICABLE)
def test_implicit_gradient_matches_a_float64_adjoint_solve(
    solver, kind, activation, reference, build, activation_reference
):
    if not takes_activation(solver, activation):
        with pytest.raises(UnsupportedSolverError, match=f"cannot use solver {solver!r} with activation"):
            build(kind, activation, {}, 5, solver)
        return
    model = build(kind, activation, {}, 5, solver, tol=1e-11, max_iter=50000, on_nonconvergence="raise")
    x = inputs(kind, 4, seed=1).requires_grad_(True)
    c = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (model(x) * c).sum().backward()
    backward = model.solver_stats["backward"]
    assert backward.result is Result.CONVERGED and backward.solver == solver
    act = model.activation
    sigma = activation_reference(act.name, getattr(act, "negative_slope", 0.01))
    expected = reference_input_gradient(model, x.detach(), c, reference, sigma)
    # Forward and adjoint solves within 1e-11 of exact put the gradient within ~C·1e-11 of it.
    torch.testing.assert_close(x.grad, expected, rtol=1e-7, atol=1e-9)


# -- non-convergence --------------------------------------------------------------------------------
def solve_warning(model: torch.nn.Module, x: torch.Tensor) -> str:
    """The one ConvergenceWarning a forward solve gives."""
    with pytest.warns(ConvergenceWarning) as caught, torch.no_grad():
        model.equilibrium(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1, messages
    return messages[0]


#: (budget, tol) out of reach on the model below: two steps to 1e-14, but for Newton one step to
#: 1e-30: its first step here is already the exact equilibrium to rounding (about 1e-16), since the
#: active set of b is that of z*, so only a tolerance under rounding is out of its reach.
SPENT_BUDGET = {"newton": (1, 1e-30)}


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_spent_budget_is_reported_as_max_steps(solver, build):
    budget, tol = SPENT_BUDGET.get(solver, (2, 1e-14))
    model = build("lben_gamma", "relu", {}, 8, solver, tol=tol, max_iter=budget, check_every=1)
    x = inputs("lben_gamma", 4)
    message = solve_warning(model, x)
    stats = model.solver_stats["forward"]
    assert stats.result is Result.MAX_STEPS and not bool(stats.converged.any())
    assert f"{solver} forward solve: 4 of 4 samples did not reach tol={tol:g}" in message
    assert "[max_steps]" in message and REMEDIES[Result.MAX_STEPS] in message and f"max_iter={budget}" in message
    model.set_solver(solver, tol=tol, max_iter=budget, check_every=1, on_nonconvergence="raise")
    with pytest.raises(ConvergenceError, match=r"\[max_steps\]"), torch.no_grad():
        model.equilibrium(x)


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_non_finite_sample_is_reported_without_asking_for_more_iterations(solver, build):
    model = build("lben_gamma", first_taken(solver, "tanh", "relu"), {}, 8, solver, tol=1e-8)
    operator = model.forward_parts().operator
    injection = torch.randn(4, 12, dtype=torch.float64)
    injection[0, 3] = float("nan")
    _, stats = model.solver.solve(FixedPointProblem(operator, injection, model.activation))
    # An ODE integrator meets the NaN in its error control; the splitting methods in the state.
    assert stats.result in (Result.NONFINITE, Result.INTEGRATOR_FAILED)
    assert not bool(stats.converged[0]) and math.isnan(float(stats.residual[0]))
    with pytest.warns(ConvergenceWarning) as caught:
        model.solver.report(stats, "forward")
    message = str(caught[0].message)
    assert f"[{stats.result.value}]" in message and "raise max_iter" not in message


class Doubling(IterativeSolver):
    """z⁺ = 2z + 1 − F(z): a diverging iteration (the residual doubles), for the loop's result codes."""

    name = "test_doubling"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "max_iter": Option(20, positive_int, "an int ≥ 1", "budget"),
    }

    def init_state(self, problem, z0):
        return z0

    def step(self, problem, state):
        return 2 * state + 1 - problem.fixed_point_map(state)

    def current(self, state):
        return state


def test_a_growing_residual_is_reported_as_diverged(small_model_factory):
    model = small_model_factory("lben_gamma", "relu", {}, 2, "fb")
    injection = torch.randn(3, 12, dtype=torch.float64)
    problem = FixedPointProblem(model.forward_parts().operator, injection, model.activation)
    z, stats = Doubling().solve(problem)
    assert stats.result is Result.DIVERGED and bool(torch.isfinite(z).all())
    assert "grew from" in stats.stop_reason
    with pytest.warns(ConvergenceWarning, match=r"\[diverged\]") as caught:
        Doubling().report(stats, "forward")
    assert "raise max_iter" not in str(caught[0].message)
    # Too large a forward-backward step: it diverges, to infinity or not, and is never told to iterate more.
    model.set_solver("fb", alpha=50.0, max_iter=30)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.equilibrium(torch.randn(4, 5, dtype=torch.float64))
    assert model.solver_stats["forward"].result in (Result.DIVERGED, Result.NONFINITE)


# -- host synchronisation -----------------------------------------------------------------------------
#: Conversions that make the host wait for the device's value.
SYNCING = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "__format__")
#: Code whose own syncs are not the solvers' (torchdiffeq's adaptive error control reads every step).
EXEMPT = tuple(str(Path(m.__file__).parent) for m in (torch, torchdiffeq))


class SyncCounter:
    """Counts tensor-to-Python conversions called from code outside torch and torchdiffeq."""

    def __init__(self) -> None:
        self.count = 0
        self.where: list[str] = []


@pytest.fixture
def count_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncCounter]:
    counter = SyncCounter()
    active = [False]

    def wrap(name: str):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            if active[0] and not caller.co_filename.startswith(EXEMPT):
                counter.count += 1
                counter.where.append(f"{name} in {caller.co_name} ({Path(caller.co_filename).name})")
            return original(self, *args, **kwargs)

        return counted

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    counter.start = lambda: active.__setitem__(0, True)  # type: ignore[attr-defined]
    counter.stop = lambda: active.__setitem__(0, False)  # type: ignore[attr-defined]
    yield counter


def counted_solve(solver, problem: FixedPointProblem, counter: SyncCounter):
    solver.solve(problem)  # warm-up: the operator's cached step and factorisation
    counter.count, counter.where = 0, []
    counter.start()
    try:
        return solver.solve(problem)
    finally:
        counter.stop()


@pytest.mark.parametrize(
    ("solver", "kind", "every"),
    [(s, "lben_gamma", every) for s in SOLVERS for every in (1, 3, 7)]
    + [(s, kind, 5) for s, kind in APPLICABLE if kind == "conv"],
)
def test_one_host_sync_per_check(solver, kind, every, count_syncs, build):
    model = build(kind, "relu", {}, every, solver, tol=1e-7, check_every=every, max_iter=5000)
    with torch.no_grad():
        parts = model.forward_parts()
        injection = parts.injection(inputs(kind, 6, seed=every))
    _, stats = counted_solve(model.solver, FixedPointProblem(parts.operator, injection, model.activation), count_syncs)
    assert stats.result is Result.CONVERGED
    # One sync per check; the ODE solver reads its last step size when it shrinks the steps.
    allowed = stats.checks + int(stats.extra.get("step_reductions", 0))
    assert count_syncs.count == allowed, count_syncs.where
    # Several checks, or (a solver that converges within one interval, e.g. Newton) several steps
    # inside it: either way a per-step sync would show in the count.
    assert stats.checks >= 2 or stats.total_iterations >= 2 * stats.checks
    interval = model.solver.check_interval()
    if interval > 1:  # the iterative splitting methods: the first two checks ⌈every/2⌉ apart
        assert interval == every
        # Checks come at most `every` steps apart, sooner only where the measured decay predicts
        # the crossing of tol (loop.next_interval): never more often than needed to follow it.
        assert stats.checks >= math.ceil(stats.total_iterations / every)
        early = math.ceil(every / 2)
        assert int(stats.iterations.min()) >= early and stats.total_iterations >= early


class SyncingPicard(IterativeSolver):
    """Damped Picard iteration that reads a value on the host at every step: what the count catches."""

    name = "test_syncing_picard"

    def init_state(self, problem, z0):
        return z0

    def step(self, problem, state):
        if state.abs().max().item() > 1e6:  # a per-step host check: forbidden in a solver
            raise RuntimeError("diverged")
        return 0.5 * state + 0.5 * problem.fixed_point_map(state)

    def current(self, state):
        return state


def test_the_count_catches_a_sync_inside_a_step(count_syncs, small_model_factory, monkeypatch):
    monkeypatch.setattr(registry, "_SOLVERS", dict(registry._SOLVERS))
    registry.register(SyncingPicard)
    model = small_model_factory("lben_gamma", "relu", {}, 0, "test_syncing_picard", tol=1e-8, check_every=5)
    with torch.no_grad():
        parts = model.forward_parts()
        injection = parts.injection(inputs("lben_gamma", 3))
    _, stats = counted_solve(model.solver, FixedPointProblem(parts.operator, injection, model.activation), count_syncs)
    assert stats.result is Result.CONVERGED
    assert count_syncs.count == stats.checks + stats.total_iterations > stats.checks
