"""Integrator configuration: validated methods and options, and the fixed-step rule."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lben_ode import ConfigurationError, ContractingLBEN, StepSizeWarning, UnknownNameError
from lben_ode.activations import LeakyReLU
from lben_ode.continuous.integrator import largest_stable_step, make_integrator_config, stable_for
from lben_ode.solvers.ode_dynamics import METHODS


def test_unknown_method_gradient_and_option_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="dopri5") as info:
        make_integrator_config("rk45", "backprop", {})
    assert all(m in str(info.value) for m in METHODS)
    with pytest.raises(UnknownNameError, match="adjoint, backprop"):
        make_integrator_config("dopri5", "implicit", {})
    with pytest.raises(UnknownNameError, match="rtol"):
        make_integrator_config("dopri5", "backprop", {"rtoll": 1e-3})
    with pytest.raises(UnknownNameError, match="valid names"):
        ContractingLBEN(1, 1, 2, tolerance=1e-3)


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("dopri5", {"step_size": 0.1}, "fixed-step"),
        ("rk4", {"rtol": 1e-3}, "adaptive"),
        ("euler", {"max_step": 1.0}, "adaptive"),
        ("dopri5", {"rtol": -1.0}, "float > 0"),
        ("dopri5", {"max_steps": 0}, "int ≥ 1"),
        ("rk4", {"step_check": "maybe"}, "'warn', 'raise' or 'off'"),
    ],
)
def test_bad_or_misplaced_option_values_are_refused(method, options, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make_integrator_config(method, "backprop", options)


def test_set_integrator_merges_options_and_resets_them_with_a_new_method() -> None:
    model = ContractingLBEN(1, 1, 2, rtol=1e-7)
    model.set_integrator(atol=1e-9)
    assert model.integrator.tolerances == (1e-7, 1e-9)
    model.set_integrator(gradient="adjoint")
    assert model.integrator.gradient == "adjoint" and model.integrator.tolerances == (1e-7, 1e-9)
    model.set_integrator("rk4", step_size=0.1)
    assert model.integrator.method == "rk4" and model.integrator.options["step_size"] == 0.1
    assert model.integrator.options["rtol"] is None
    with pytest.raises(UnknownNameError):
        model.set_integrator("nope")
    assert model.integrator.method == "rk4"  # a refused change leaves the configuration alone


def test_euler_step_limit_matches_its_closed_form() -> None:
    """Euler on {|λ| ≤ ρ, Re λ ≤ −α}: |1 + hλ| ≤ 1 ⟺ h ≤ 2α/ρ² (attained at |λ| = ρ, Re λ = −α)."""
    for radius, rate in ((3.0, 0.1), (1.5, 0.5), (10.0, 0.9)):
        assert largest_stable_step("euler", radius, rate) == pytest.approx(2 * rate / radius**2, rel=1e-6)
    # No λ off the real axis: the real stability interval [−2, 0] of Euler.
    assert largest_stable_step("euler", 2.0, 2.0) == pytest.approx(1.0, rel=1e-6)
    # With α = 0 the set touches the imaginary axis, where Euler and the 2-stage methods are unstable.
    # (Only steps so small that |R| exceeds 1 by less than rounding pass: h·ρ of order 1e-7.)
    assert largest_stable_step("euler", 2.0, 0.0) < 1e-6
    assert largest_stable_step("midpoint", 2.0, 0.0) < 1e-3


def test_rk4_step_limit_on_its_real_and_imaginary_axes() -> None:
    """RK4 is stable on [−2.7853, 0] (R(x) = 1 there: a root of 1 + x/2 + x²/6 + x³/24) and on the
    imaginary axis up to 2√2."""
    real_limit = -min(r.real for r in np.roots([1 / 24, 1 / 6, 1 / 2, 1]) if abs(r.imag) < 1e-9)
    assert stable_for("rk4", 0.99 * real_limit, 1.0, 1.0)
    assert not stable_for("rk4", 1.01 * real_limit, 1.0, 1.0)
    assert 0 < largest_stable_step("rk4", 1.0, 0.0) <= 2 * math.sqrt(2)


def _stiff_model(decay: float) -> ContractingLBEN:
    """A model with W = −decay·I (G = 0, Λ = I, P = decay·I) and the identity activation (leaky ReLU
    of slope 1): dz/dt = −(1 + decay) z + Uu, a real eigenvalue −(1 + decay)."""
    model = ContractingLBEN(
        1, 1, 2, gamma=None, contraction_rate=0.5, activation=LeakyReLU(1.0), method="euler", metric_floor=1e-12
    ).double()
    with torch.no_grad():
        model.G.zero_()
        model.log_lambda.zero_()
        model.L_P.copy_(math.sqrt(decay) * torch.eye(2))
        model.G_u.fill_(1.0)
    return model


def test_fixed_step_rule_warns_or_refuses_and_the_refused_step_really_diverges() -> None:
    decay = 9.0
    model = _stiff_model(decay)
    np.testing.assert_allclose(model.certificate().W, -decay * np.eye(2), atol=1e-9)
    rho = 1.0 + decay
    limit = largest_stable_step("euler", rho, 0.5)
    u = torch.ones(1, 41, 1, dtype=torch.float64)
    coarse = torch.linspace(0, 40 * 1.1 * 2 / rho, 41, dtype=torch.float64)  # h = 1.1 · 2/ρ > limit
    with pytest.warns(StepSizeWarning, match="too coarse"):
        z = model.states(u, coarse)
    # Independently: Euler on dz/dt = −ρz + 1 from 0 gives z_k = (1 − (1 − hρ)^k)/ρ, (1 − hρ) = −1.2.
    expected = (1 - (1 - 2.2) ** 40) / rho
    np.testing.assert_allclose(z[0, -1].detach().numpy(), [expected, expected], rtol=1e-9)
    assert abs(expected) > 100
    model.set_integrator(step_check="raise")
    with pytest.raises(ConfigurationError, match="too coarse"):
        model.states(u, coarse)
    fine = torch.linspace(0, 40 * 0.9 * limit, 41, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = model.states(u, fine)
    assert bool(torch.isfinite(z).all())
    model.set_integrator(step_check="off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.states(u, coarse)


def test_step_size_option_subdivides_sample_intervals() -> None:
    """step_size bounds the step; sample times stay step boundaries (an independent count)."""
    model = ContractingLBEN(1, 1, 3, method="rk4", step_size=0.1, activation="tanh")
    t = torch.tensor([0.0, 0.25, 0.3, 1.0])
    model(torch.zeros(1, 4, 1), t)
    steps = math.ceil(0.25 / 0.1) + math.ceil(0.05 / 0.1) + math.ceil(0.7 / 0.1)
    assert model.simulation_stats.accepted_steps == steps
    assert model.simulation_stats.function_evaluations == 4 * steps
