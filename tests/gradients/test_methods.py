"""The gradient methods: chosen by name, the adjoint method only with the ODE solver."""

from __future__ import annotations

import pytest
import torch

from lben_ode import LBEN, ConfigurationError, UnknownNameError
from lben_ode.gradients import GRADIENT_METHODS, EquilibriumGraph, ODEAdjoint, get_gradient_method
from lben_ode.solvers import get_solver

pytestmark = pytest.mark.usefixtures("single_thread")


def test_methods_by_name():
    assert set(GRADIENT_METHODS) == {"implicit", "adjoint"}
    assert get_gradient_method("adjoint").name == "adjoint"
    with pytest.raises(UnknownNameError, match="adjoint, implicit"):
        get_gradient_method("unrolled")


def test_the_adjoint_method_needs_the_ode_solver():
    torch.manual_seed(0)
    model = LBEN(3, 2, 4).double()
    parts = model.forward_parts()
    x = torch.randn(2, 3, dtype=torch.float64)
    graph = EquilibriumGraph(parts.apply_W, parts.injection(x), model.activation, parts.operator)
    with pytest.raises(ConfigurationError, match="needs solver 'ode'"):
        ODEAdjoint().equilibrium(get_solver("pr"), graph, None, lambda stats: None)
    # Without autograd the adjoint method is a plain solve: the state the solver found, no graph.
    with torch.no_grad():
        graph = EquilibriumGraph(parts.apply_W, parts.injection(x), model.activation, parts.operator)
        z, stats = ODEAdjoint().equilibrium(get_solver("ode", tol=1e-9), graph, None, lambda stats: None)
    assert not z.requires_grad and stats.all_converged
    assert stats.residual.max() <= 1e-9
