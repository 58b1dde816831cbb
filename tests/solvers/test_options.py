"""Declared solver options: defaults, validation, and the documented check_every behaviour."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN, ConfigurationError, UnknownNameError
from lben_ode.solvers import COMMON_OPTIONS, FixedPointProblem, get_solver, solver_class
from lben_ode.solvers.options import validate_options

pytestmark = pytest.mark.usefixtures("single_thread")


def test_common_defaults():
    assert {k: v.default for k, v in COMMON_OPTIONS.items()} == {
        "tol": 1e-5,
        "max_iter": 300,
        "check_every": 10,
        "on_nonconvergence": "warn",
    }
    for option in COMMON_OPTIONS.values():
        assert option.doc and option.expects


def test_solver_specific_options_and_overrides():
    fb, pr = solver_class("fb").all_options(), solver_class("pr").all_options()
    assert set(fb) == set(COMMON_OPTIONS) | {"alpha"} == set(pr)
    assert fb["alpha"].default is None and pr["alpha"].default is None
    # Forward-backward derives its budget from the model's proven contraction factor.
    assert fb["max_iter"].default is None and pr["max_iter"].default == 300
    solver = get_solver("fb", tol=1e-7)
    assert solver.options == {
        "tol": 1e-7,
        "max_iter": None,
        "check_every": 10,
        "on_nonconvergence": "warn",
        "alpha": None,
    }
    # Options are per instance.
    assert get_solver("fb").options["tol"] == 1e-5


def test_validate_options_messages():
    expected = r"unknown option of solver 'x': 'tolerance'; valid names: max_iter, tol"
    with pytest.raises(UnknownNameError, match=expected):
        validate_options("x", {k: COMMON_OPTIONS[k] for k in ("tol", "max_iter")}, {"tolerance": 1.0})
    with pytest.raises(ConfigurationError, match=r"solver 'x' option 'tol' must be a float > 0, got 0"):
        validate_options("x", COMMON_OPTIONS, {"tol": 0})


def test_model_options_reach_the_solver():
    model = LBEN(3, 2, 4, solver="pr", alpha=0.7, tol=1e-4, max_iter=50, check_every=2)
    assert model.solver.options == {
        "tol": 1e-4,
        "max_iter": 50,
        "check_every": 2,
        "on_nonconvergence": "warn",
        "alpha": 0.7,
    }
    model.set_solver("fb")
    assert model.solver.options["tol"] == 1e-5  # set_solver starts from the defaults


class CountingProblem(FixedPointProblem):
    """Counts residual evaluations: each is a convergence check, i.e. one host synchronisation."""

    checks = 0

    def residuals(self, z):
        CountingProblem.checks += 1
        return super().residuals(z)


@pytest.mark.parametrize("solver", ["fb", "pr"])
def test_budget_not_a_multiple_of_check_every_ends_with_a_check(solver):
    torch.manual_seed(0)
    model = LBEN(5, 3, 10, gamma=1.0).double()
    with torch.no_grad():
        model.b_z.normal_()
    injection = (torch.randn(4, 5, dtype=torch.float64) @ model.U.T + model.b_z).detach()
    problem = CountingProblem(model.forward_parts().operator, injection, model.activation)
    CountingProblem.checks = 0
    _, stats = get_solver(solver, tol=1e-14, check_every=4, max_iter=11).solve(problem)
    assert not stats.all_converged
    assert stats.total_iterations == 11
    assert stats.iterations.tolist() == [11] * 4
    # At 2 and 4 (the first two ⌈4/2⌉ apart), 8 and the budget 11.
    assert CountingProblem.checks == 4 == stats.checks


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_iterations_are_the_first_check_that_met_tol():
    torch.manual_seed(3)
    model = LBEN(5, 3, 10, gamma=1.0, margin=0.5).double()
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(8, 5, dtype=torch.float64)
    model.set_solver("pr", tol=1e-9, check_every=1)
    model.equilibrium(x)
    iterations = model.solver_stats["forward"].iterations
    assert len(set(iterations.tolist())) > 1  # samples do finish at different iterations
    for i in range(len(x)):
        # With exactly that budget the sample converges; with one iteration less it does not.
        model.set_solver("pr", tol=1e-9, max_iter=int(iterations[i]), check_every=1)
        model.equilibrium(x)
        assert bool(model.solver_stats["forward"].converged[i])
        model.set_solver("pr", tol=1e-9, max_iter=int(iterations[i]) - 1, check_every=1)
        model.equilibrium(x)
        assert not bool(model.solver_stats["forward"].converged[i])
