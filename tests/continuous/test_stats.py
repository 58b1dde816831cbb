"""Simulation statistics against independent counts."""

from __future__ import annotations

import torch

from lben_ode import ContractingLBEN


def test_fixed_step_counts_are_exact_and_summary_has_the_keys() -> None:
    model = ContractingLBEN(1, 1, 3, method="rk4", activation="tanh")
    assert model.simulation_stats is None
    t = torch.tensor([0.0, 0.1, 0.3, 0.35])
    model(torch.randn(2, 4, 1), t)
    stats = model.simulation_stats
    assert (stats.method, stats.gradient) == ("rk4", "backprop")
    assert stats.accepted_steps == 3 and stats.function_evaluations == 12 and stats.rejected_steps == 0
    assert stats.time_s > 0
    assert set(stats.summary()) == {
        "function_evaluations", "backward_function_evaluations", "accepted_steps", "rejected_steps", "time_s"
    }


def test_adaptive_counts_and_backward_evaluations_of_the_adjoint() -> None:
    torch.manual_seed(0)
    model = ContractingLBEN(1, 1, 3, activation="tanh", gradient="adjoint")
    t = torch.linspace(0, 2, 5)
    y = model(torch.randn(2, 5, 1), t)
    stats = model.simulation_stats
    # dopri5 evaluates the field 6 times per attempted step, besides its initial-step estimate.
    assert stats.accepted_steps >= 4
    assert stats.function_evaluations >= 6 * (stats.accepted_steps + stats.rejected_steps)
    assert stats.backward_function_evaluations == 0
    y.sum().backward()
    assert stats.backward_function_evaluations > 0
    model.set_integrator(gradient="backprop")
    model(torch.randn(2, 5, 1), t).sum().backward()
    assert model.simulation_stats.backward_function_evaluations == 0
