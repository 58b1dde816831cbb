"""The shared loop's check schedule: checks every ``check_every`` steps, sooner at the predicted crossing."""

from __future__ import annotations

import math

import pytest
import torch

from lben_ode import LBEN
from lben_ode.solvers import FixedPointProblem, get_solver
from lben_ode.solvers.loop import Check, next_interval

pytestmark = pytest.mark.usefixtures("single_thread")


def _check(steps: int, worst: float) -> Check:
    empty = torch.zeros(1)
    return Check(empty, steps, steps, empty, empty, empty.bool(), empty.long(), worst, worst, False, False)


def test_next_interval_predicts_the_crossing_of_tol():
    # The worst residual fell by 10× over 5 steps: from 1e-3 it needs log(1e-3/1e-5)/log(10)·5 = 10
    # more steps, more than check_every, so the interval stays 5; from 1e-4 it needs 5·1 = 5; from
    # 3e-5, ⌈5·log10(3)⌉ = 3; with check_every 8, from 1e-4 it is 5.
    assert next_interval(_check(5, 1e-2), _check(10, 1e-3), 1e-5, 5) == 5
    assert next_interval(_check(5, 1e-3), _check(10, 1e-4), 1e-5, 8) == 5
    assert next_interval(_check(5, 3e-4), _check(10, 3e-5), 1e-5, 5) == math.ceil(5 * math.log10(3))
    # No prediction without a decay: the full interval.
    assert next_interval(None, _check(5, 1e-3), 1e-5, 5) == 5
    assert next_interval(_check(5, 1e-3), _check(10, 2e-3), 1e-5, 5) == 5
    assert next_interval(_check(5, 1e-3), _check(10, 0.0), 1e-5, 5) == 5


def test_sparse_checks_stop_close_to_where_every_step_checks_stop():
    torch.manual_seed(2)
    model = LBEN(8, 2, 24, gamma=1.0).double()
    with torch.no_grad():
        model.b_z.normal_()
        injection = model.forward_parts().injection(torch.randn(16, 8, dtype=torch.float64))
    problem = FixedPointProblem(model.forward_parts().operator, injection, model.activation)
    _, dense = get_solver("pr", tol=1e-9, check_every=1).solve(problem)
    _, sparse = get_solver("pr", tol=1e-9, check_every=5).solve(problem)
    assert dense.all_converged and sparse.all_converged
    # Fixed checks every 5 steps would stop at the next multiple of 5 (up to 4 steps late).
    assert sparse.total_iterations <= dense.total_iterations + 2
    assert sparse.checks < dense.checks
