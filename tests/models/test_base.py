"""What every equilibrium model checks at its door: input and warm-start dtypes, finiteness, precision."""

from __future__ import annotations

import pytest
import torch

import lben_ode
from lben_ode import ConfigurationError, NonFiniteInputError, ShapeError


@pytest.fixture
def model() -> lben_ode.LBEN:
    torch.manual_seed(0)
    return lben_ode.LBEN(4, 3, 8, gamma=1.0, tol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_of_another_dtype_is_refused_naming_both(model, dtype) -> None:
    with pytest.raises(ShapeError, match=rf"torch.float32 parameters but got a {dtype} input"):
        model(torch.randn(5, 4).to(dtype))
    with pytest.raises(ShapeError, match=str(dtype)):
        model.equilibrium(torch.randn(5, 4).to(dtype))


def test_warm_start_must_be_finite_and_of_the_model_dtype(model) -> None:
    x = torch.randn(5, 4)
    with pytest.raises(NonFiniteInputError, match="40 NaN or infinite entries of 40"):
        model.equilibrium(x, torch.full((5, 8), float("nan")))
    partly = torch.zeros(5, 8)
    partly[2, 3] = float("inf")
    with pytest.raises(NonFiniteInputError, match="1 NaN or infinite entries"):
        model.equilibrium(x, partly)
    with pytest.raises(ShapeError, match=r"dtype torch.float32, got torch.float64"):
        model.equilibrium(x, torch.zeros(5, 8, dtype=torch.float64))
    with pytest.raises(ShapeError, match="floating-point"):
        model.equilibrium(x, torch.zeros(5, 8, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"shaped \(5, 8\)"):
        model.equilibrium(x, torch.zeros(5, 7))
    # A finite warm start of the right dtype is taken: from the equilibrium itself, no iteration is needed.
    with torch.no_grad():
        z = model.equilibrium(x)
        model.equilibrium(x, z)
    assert bool(model.solver_stats["forward"].converged.all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_refused_in_one_line(model, dtype) -> None:
    model.to(dtype)
    with pytest.raises(ConfigurationError, match=rf"{dtype} parameters.*'16-mixed' or 'bf16-mixed'"):
        model(torch.randn(5, 4).to(dtype))


def test_under_autocast_the_solve_runs_in_float32(model) -> None:
    x = torch.randn(6, 4)
    with torch.no_grad():
        expected = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        # An autocast layer before the model hands over bfloat16: it is cast, and nothing inside
        # the equilibrium network runs in bfloat16.
        stem = torch.nn.Linear(4, 4)
        with torch.no_grad():
            stem.weight.copy_(torch.eye(4))
            stem.bias.zero_()
        half_x = stem(x)
        assert half_x.dtype == torch.bfloat16
        y = model(half_x)
        y_exact = model(x)
    assert y.dtype == torch.float32
    assert torch.equal(y_exact, expected)  # autocast off inside: the float32 computation, bit for bit
    assert torch.allclose(y, model(half_x.float()), atol=0, rtol=0)
