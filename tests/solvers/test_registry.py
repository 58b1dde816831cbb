"""The solver registry: solvers are found, listed and added by name."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from lben_ode import LBEN, ConfigurationError, UnknownNameError
from lben_ode.solvers import (
    IterativeSolver,
    Option,
    available,
    get_solver,
    register,
    registry,
    solver_class,
)
from lben_ode.solvers.forward_backward import ForwardBackward
from lben_ode.solvers.options import positive_float
from lben_ode.solvers.peaceman_rachford import PeacemanRachford

pytestmark = pytest.mark.usefixtures("single_thread")


def test_builtin_solvers_are_registered():
    names = available()
    assert {"fb", "pr"} <= set(names)
    assert names == sorted(names)
    assert solver_class("fb") is ForwardBackward
    assert solver_class("pr") is PeacemanRachford
    solver = get_solver("pr", alpha=2.0, tol=1e-6)
    assert isinstance(solver, PeacemanRachford)
    assert solver.options["alpha"] == 2.0 and solver.tol == 1e-6


def test_unknown_solver_name_lists_every_registered_one():
    with pytest.raises(UnknownNameError) as info:
        solver_class("anderson-typo")
    message = str(info.value)
    assert "unknown solver 'anderson-typo'" in message
    for name in available():
        assert name in message


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry, so solvers registered by a test do not leak into others."""
    monkeypatch.setattr(registry, "_SOLVERS", dict(registry._SOLVERS))


class DampedPicard(IterativeSolver):
    """z⁺ = (1 − θ) z + θ σ(W z + b): converges for small θ on these test models."""

    name = "test_damped_picard"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "theta": Option(0.5, positive_float(), "a float > 0", "damping"),
        "max_iter": Option(5000, lambda v: isinstance(v, int) and v > 0, "an int ≥ 1", "budget"),
    }

    def init_state(self, problem, z0):
        return z0

    def step(self, problem, state):
        theta = self.options["theta"]
        return (1 - theta) * state + theta * problem.fixed_point_map(state)

    def current(self, state):
        return state


def test_a_registered_solver_is_usable_by_name(isolated_registry):
    assert register(DampedPicard) is DampedPicard
    assert "test_damped_picard" in available()
    assert register(DampedPicard) is DampedPicard  # registering the same class again is harmless
    torch.manual_seed(0)
    model = LBEN(4, 2, 6, gamma=1.0, margin=1.0, solver="test_damped_picard", theta=0.3, tol=1e-10).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        z = model.equilibrium(x)
    assert model.solver_stats["forward"].solver == "test_damped_picard"
    assert model.solver_stats["forward"].all_converged
    model.set_solver("pr", tol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(z, model.equilibrium(x), rtol=1e-7, atol=1e-9)
    with pytest.raises(UnknownNameError, match="theta"):
        get_solver("test_damped_picard", thetaa=0.1)


def test_register_refuses_nameless_and_clashing_solvers(isolated_registry):
    class Nameless(DampedPicard):
        name = ""

    with pytest.raises(TypeError, match="non-empty class attribute 'name'"):
        register(Nameless)

    class Clash(DampedPicard):
        name = "fb"

    with pytest.raises(ValueError, match="already registered"):
        register(Clash)
    assert solver_class("fb") is ForwardBackward


def test_register_refuses_what_is_not_a_solver(isolated_registry):
    class NotASolver:
        name = "not_a_solver"

    with pytest.raises(TypeError, match="only Solver subclasses"):
        register(NotASolver)
    assert "not_a_solver" not in available()


def test_set_solver_takes_an_instance_without_options_and_refuses_other_things():
    model = LBEN(4, 2, 6, solver="fb", tol=1e-4)
    solver = get_solver("pr", alpha=0.5)
    assert model.set_solver(solver) is solver and model.solver.options["alpha"] == 0.5
    with pytest.raises(ConfigurationError, match="Solver instance and options"):
        model.set_solver(get_solver("fb"), tol=1e-6)
    with pytest.raises(ConfigurationError, match="registry name"):
        model.set_solver(3)
    assert model.solver is solver  # refusals keep the solver
    # The gradient method follows the solver's options.
    assert model.gradient.name == "implicit"
    model.set_solver("ode", backward="adjoint")
    assert model.gradient.name == "adjoint"
