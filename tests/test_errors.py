"""Every bad input gets a typed exception with a clear message; non-convergence is never silent."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from lben_ode import (
    LBEN,
    ActivationError,
    ConfigurationError,
    ConvergenceError,
    ConvergenceWarning,
    LBENError,
    MonDEQ,
    NonFiniteInputError,
    ShapeError,
    UnknownNameError,
)
from lben_ode.activations import get_activation

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def model() -> LBEN:
    torch.manual_seed(0)
    return LBEN(5, 3, 8)


# -- inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6), (4,), (4, 5, 1), (5,)])
def test_wrong_input_shape(model, shape):
    with pytest.raises(ShapeError, match=r"expects inputs shaped \(batch, 5\)"):
        model(torch.randn(*shape))


def test_empty_batch(model):
    with pytest.raises(ShapeError, match="empty batch"):
        model(torch.randn(0, 5))


@pytest.mark.parametrize("x", [torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool)])
def test_non_floating_input(model, x):
    with pytest.raises(ShapeError, match="floating-point"):
        model(x)


def test_non_tensor_input(model):
    with pytest.raises(ShapeError, match=r"torch\.Tensor"):
        model([[0.0] * 5])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input(model, bad):
    x = torch.randn(3, 5)
    x[1, 2] = bad
    with pytest.raises(NonFiniteInputError, match="NaN or infinity"):
        model(x)
    with pytest.raises(NonFiniteInputError):
        model.equilibrium(x)


def test_warm_start_of_the_wrong_shape(model):
    with pytest.raises(ShapeError, match="warm start"):
        model.equilibrium(torch.randn(3, 5), z0=torch.zeros(3, 7))


# -- constructor arguments ----------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.0, -1.0, math.nan, math.inf, -math.inf, True, "1.0"])
def test_bad_gamma(gamma):
    with pytest.raises(ConfigurationError, match="gamma must be a finite float > 0"):
        LBEN(5, 3, 8, gamma=gamma)


def test_learn_gamma_needs_a_gamma():
    with pytest.raises(ConfigurationError, match="learn_gamma"):
        LBEN(5, 3, 8, gamma=None, learn_gamma=True)


@pytest.mark.parametrize("margin", [0.0, -0.1, math.nan, None, "0.1"])
@pytest.mark.parametrize("cls", [LBEN, MonDEQ])
def test_bad_margin(cls, margin):
    with pytest.raises(ConfigurationError, match="margin must be a float > 0"):
        cls(5, 3, 8, margin=margin)


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 0}, {"in_features": 0}, {"out_features": -1}, {"width": 2.5}, {"rank": 0}],
)
def test_bad_sizes(kwargs):
    args = {"in_features": 5, "out_features": 3, "width": 8, **kwargs}
    with pytest.raises(ConfigurationError, match="must be a positive int"):
        LBEN(**args)


def test_unknown_metric():
    with pytest.raises(UnknownNameError, match="unknown metric 'full'") as info:
        LBEN(5, 3, 8, metric="full")
    assert "diagonal" in str(info.value) and "identity" in str(info.value)


# -- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["gelu", "Relu", "swish"])
def test_unknown_activation_name(activation):
    with pytest.raises(ActivationError, match="monotone") as info:
        LBEN(5, 3, 8, activation=activation)
    for name in ("relu", "leaky_relu", "tanh", "sigmoid", "softplus"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "module", [nn.GELU(), nn.SiLU(), nn.ELU(), nn.Hardswish(), nn.LeakyReLU(1.5), nn.LeakyReLU(-0.1)]
)
def test_non_monotone_or_unsupported_activation_module(module):
    with pytest.raises(ActivationError):
        LBEN(5, 3, 8, activation=module)


@pytest.mark.parametrize("slope", [-0.1, 1.5, math.nan])
def test_leaky_slope_outside_unit_interval(slope):
    with pytest.raises(ActivationError, match=r"negative_slope must be in \[0, 1\]"):
        get_activation("leaky_relu", negative_slope=slope)


def test_bad_activation_options_and_types():
    with pytest.raises(ActivationError, match="bad options"):
        get_activation("relu", slope=0.1)
    with pytest.raises(ActivationError, match="cannot be applied"):
        get_activation(get_activation("tanh"), negative_slope=0.1)
    with pytest.raises(ActivationError, match="must be a name or an Activation"):
        LBEN(5, 3, 8, activation=3)


@pytest.mark.parametrize("module", [nn.ReLU(), nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid(), nn.Softplus()])
def test_supported_activation_modules_are_accepted(module):
    model = LBEN(5, 3, 8, activation=module)
    x = torch.randn(2, 5)
    z = model.equilibrium(x).detach()
    assert torch.isfinite(z).all()


# -- solvers and options ------------------------------------------------------------------------
def test_unknown_solver_lists_the_valid_names(model):
    for build in (lambda: LBEN(5, 3, 8, solver="broyden"), lambda: model.set_solver("broyden")):
        with pytest.raises(UnknownNameError, match="unknown solver 'broyden'") as info:
            build()
        assert "'fb'" not in str(info.value)  # listed plainly, not quoted by KeyError
        assert "fb" in str(info.value) and "pr" in str(info.value)


def test_unknown_option_lists_the_valid_options(model):
    with pytest.raises(UnknownNameError, match="tolerance") as info:
        LBEN(5, 3, 8, tolerance=1e-3)
    for name in ("tol", "max_iter", "check_every", "on_nonconvergence", "alpha"):
        assert name in str(info.value)
    with pytest.raises(UnknownNameError, match="max_iters"):
        model.set_solver("fb", max_iters=10)


@pytest.mark.parametrize("solver", ["fb", "pr"])
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("tol", 0.0),
        ("tol", -1e-3),
        ("tol", math.nan),
        ("tol", "1e-3"),
        ("max_iter", 0),
        ("max_iter", 2.5),
        ("max_iter", True),
        ("check_every", 0),
        ("alpha", -1.0),
        ("alpha", 0.0),
        ("alpha", math.inf),
        ("on_nonconvergence", "x"),
        ("on_nonconvergence", None),
    ],
)
def test_bad_option_values(solver, option, value):
    with pytest.raises(ConfigurationError, match=f"option '{option}' must be"):
        LBEN(5, 3, 8, solver=solver, **{option: value})


def test_alpha_none_takes_the_models_step_for_pr_and_fb():
    for solver in ("pr", "fb"):
        assert LBEN(5, 3, 8, solver=solver, alpha=None).solver.options["alpha"] is None
    with pytest.raises(ConfigurationError, match="option 'alpha' must be a float > 0 or None"):
        LBEN(5, 3, 8, solver="pr", alpha=0.0)


def test_errors_are_also_builtin_exceptions():
    assert issubclass(ConfigurationError, ValueError) and issubclass(ConfigurationError, LBENError)
    assert issubclass(UnknownNameError, KeyError)
    assert issubclass(ShapeError, ValueError) and issubclass(NonFiniteInputError, ValueError)
    assert issubclass(ConvergenceError, RuntimeError)
    assert issubclass(ConvergenceWarning, UserWarning)


# -- non-convergence ----------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["fb", "pr"])
def test_too_few_iterations_warn_and_report(solver):
    torch.manual_seed(0)
    model = LBEN(5, 3, 8, solver=solver, max_iter=2, check_every=1)
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(4, 5)
    with pytest.warns(ConvergenceWarning, match=r"forward solve: 4 of 4 samples did not reach tol=1e-05 in 2"):
        y = model(x)
    stats = model.solver_stats["forward"]
    assert not bool(stats.converged.any())
    assert bool((stats.residual > stats.tol).all())
    assert stats.iterations.tolist() == [2, 2, 2, 2]
    assert stats.summary()["converged_fraction"] == 0.0
    with pytest.warns(ConvergenceWarning, match="backward solve"):
        y.sum().backward()
    assert not model.solver_stats["backward"].all_converged


@pytest.mark.parametrize("solver", ["fb", "pr"])
def test_too_few_iterations_raise_when_asked(solver):
    torch.manual_seed(0)
    model = LBEN(5, 3, 8, solver=solver, max_iter=2, on_nonconvergence="raise")
    with torch.no_grad():
        model.b_z.normal_()
    with pytest.raises(ConvergenceError, match="did not reach tol"):
        model(torch.randn(4, 5))
    assert not model.solver_stats["forward"].all_converged


def test_converged_solve_does_not_warn(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(4, 5)).sum().backward()
