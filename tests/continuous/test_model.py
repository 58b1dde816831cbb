"""ContractingLBEN's interface: sizes, bounds and every bad input getting its typed error."""

from __future__ import annotations

import math

import pytest
import torch

from lben_ode import (
    ActivationError,
    ConfigurationError,
    ContractingLBEN,
    IntegrationError,
    NonFiniteInputError,
    ShapeError,
    TimeGridError,
    UnknownNameError,
)

T = torch.linspace(0, 1, 5)


@pytest.fixture
def model() -> ContractingLBEN:
    torch.manual_seed(0)
    return ContractingLBEN(2, 3, 4, activation="tanh")


def test_sizes_bounds_and_repr(model) -> None:
    assert (model.input_size, model.output_size, model.width) == (2, 3, 4)
    assert model.gain_bound() == pytest.approx(1.0)
    assert model.contraction_rate() == 0.1
    assert ContractingLBEN(1, 1, 2, gamma=None).gain_bound() is None
    assert "contraction_rate=0.1" in repr(model)
    y = model(torch.randn(6, 5, 2), T)
    assert y.shape == (6, 5, 3) and model.states(torch.randn(6, 5, 2), T).shape == (6, 5, 4)


@pytest.mark.parametrize("gamma", [0.0, -1.0, math.inf, math.nan, "1", True])
def test_bad_gamma(gamma) -> None:
    with pytest.raises(ConfigurationError, match="gamma"):
        ContractingLBEN(1, 1, 2, gamma=gamma)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, math.nan, None])
def test_contraction_rate_outside_the_unit_interval(rate) -> None:
    with pytest.raises(ConfigurationError, match=r"contraction_rate must be a float in \[0, 1\)"):
        ContractingLBEN(1, 1, 2, contraction_rate=rate)


def test_bad_activation_sizes_and_names() -> None:
    with pytest.raises(ActivationError, match="monotone"):
        ContractingLBEN(1, 1, 2, activation="gelu")
    with pytest.raises(ActivationError):
        ContractingLBEN(1, 1, 2, activation=torch.nn.ELU())
    with pytest.raises(ConfigurationError, match="width"):
        ContractingLBEN(1, 1, 0)
    with pytest.raises(UnknownNameError, match="linear, zoh"):
        ContractingLBEN(1, 1, 2, interpolation="cubic")
    with pytest.raises(UnknownNameError, match="dopri5"):
        ContractingLBEN(1, 1, 2, method="rk45")
    with pytest.raises(UnknownNameError, match="adjoint, backprop"):
        ContractingLBEN(1, 1, 2, gradient="implicit")
    with pytest.raises(ConfigurationError, match="learn_gamma"):
        ContractingLBEN(1, 1, 2, gamma=None, learn_gamma=True)
    with pytest.raises(ConfigurationError, match="metric_floor"):
        ContractingLBEN(1, 1, 2, metric_floor=0.0)


@pytest.mark.parametrize(
    "u",
    [
        [[0.0, 1.0]],  # not a tensor
        torch.randn(5, 2),  # no batch axis
        torch.randn(3, 5, 1),  # wrong input size
        torch.randn(0, 5, 2),  # empty batch
        torch.randn(3, 4, 2),  # time axis does not match t
        torch.randn(3, 5, 2, dtype=torch.float64),  # dtype differs from the model's
    ],
)
def test_bad_input_signal_shape_or_dtype(model, u) -> None:
    with pytest.raises((ShapeError, TimeGridError)):
        model(u, T)


def test_time_axis_mismatch_names_t(model) -> None:
    with pytest.raises(TimeGridError, match=r"shaped \(4,\)"):
        model(torch.randn(3, 4, 2), T)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input_signal(model, bad) -> None:
    u = torch.randn(3, 5, 2)
    u[1, 2, 0] = bad
    with pytest.raises(NonFiniteInputError, match="u contains NaN or infinity"):
        model(u, T)


@pytest.mark.parametrize(
    ("t", "error", "match"),
    [
        (torch.tensor([0.0, 0.5, 0.5, 0.7, 1.0]), TimeGridError, r"strictly increasing; t\[2\]"),
        (torch.tensor([0.0, 0.5, 0.4, 0.7, 1.0]), TimeGridError, "strictly increasing"),
        (torch.tensor([0.0, 0.5, math.nan, 0.7, 1.0]), NonFiniteInputError, "t contains NaN"),
        (torch.tensor([0.0, 0.5, 0.6, 0.7, math.inf]), NonFiniteInputError, "t contains NaN"),
        (torch.arange(5), TimeGridError, "floating-point"),
        (torch.zeros(1, 5), TimeGridError, r"shaped \(5,\)"),
        ([0.0, 0.1, 0.2, 0.3, 0.4], TimeGridError, "torch.Tensor"),
    ],
)
def test_bad_time_grid(model, t, error, match) -> None:
    with pytest.raises(error, match=match):
        model(torch.randn(2, 5, 2), t)


@pytest.mark.parametrize(
    ("z0", "error"),
    [
        (torch.zeros(2, 3), ShapeError),
        (torch.zeros(3, 4), ShapeError),
        (torch.zeros(2, 4, dtype=torch.float64), ShapeError),
        (torch.full((2, 4), math.nan), NonFiniteInputError),
        ([0.0] * 4, ShapeError),
    ],
)
def test_bad_initial_state(model, z0, error) -> None:
    with pytest.raises(error):
        model(torch.randn(2, 5, 2), T, z0)


def test_step_budget_is_reported_as_an_integration_error(model) -> None:
    model.set_integrator(max_steps=3, rtol=1e-9, atol=1e-9)
    with pytest.raises(IntegrationError, match="max_steps=3"):
        model(torch.randn(2, 5, 2), T * 10)
