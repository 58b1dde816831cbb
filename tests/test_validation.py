"""The shared checks: each refusal is one of the library's typed errors and echoes the bad value."""

from __future__ import annotations

import math

import pytest
import torch

from lben_ode import ConfigurationError, LBENError, NonFiniteInputError, Normalization, ShapeError
from lben_ode.validation import (
    all_finite,
    check_betas,
    check_count,
    check_eps,
    check_float_batch,
    check_gamma,
    check_labels,
    check_margin,
    check_non_negative,
    check_positive,
)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: check_count("width", 0), r"width must be a positive int \(≥ 1\), got 0"),
        (lambda: check_count("width", True), "got True"),
        (lambda: check_count("val_size", -1, minimum=0), "val_size must be an int ≥ 0, got -1"),
        (lambda: check_count("steps", 2.0), "got 2.0"),
        (lambda: check_positive("lr", -0.1), "lr must be a finite float > 0, got -0.1"),
        (lambda: check_positive("lr", math.inf), "got inf"),
        (lambda: check_positive("lr", "1e-3"), "got '1e-3'"),
        (lambda: check_non_negative("start_noise", -1), "start_noise must be a finite float ≥ 0, got -1"),
        (lambda: check_gamma(0.0), r"gamma must be a finite float > 0 \(or None for unconstrained\), got 0.0"),
        (lambda: check_margin(float("nan")), "margin must be a float > 0.*got nan"),
        (lambda: check_betas((0.9, 1.0)), r"betas must be two numbers in \[0, 1\).*got \(0.9, 1.0\)"),
        (lambda: check_eps([0.5, -1.0]), "every eps must be a finite float ≥ 0, got -1.0"),
        (lambda: check_eps([]), "at least one radius"),
        (lambda: check_eps("0.5", "certify_eps"), "certify_eps must be a radius or a list of radii ≥ 0, got '0.5'"),
    ],
)
def test_bad_values_raise_configuration_errors_that_echo_them(call, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        call()


def test_good_values_come_back_as_plain_python() -> None:
    assert check_count("n", 3) == 3 and check_count("n", 0, minimum=0) == 0
    assert check_positive("lr", 1) == 1.0 and isinstance(check_positive("lr", 1), float)
    assert check_gamma(None) is None and check_gamma(2) == 2.0
    assert check_betas([0.0, 0.5]) == (0.0, 0.5)
    assert check_eps(0.5) == (0.5,) and check_eps([0, 1]) == (0.0, 1.0) and check_eps([], allow_empty=True) == ()


def test_tensor_checks() -> None:
    with pytest.raises(ShapeError, match=r"torch\.int64 tensor"):
        check_float_batch(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"got \(3,\)"):
        check_float_batch(torch.zeros(3))
    with pytest.raises(NonFiniteInputError, match="x contains NaN"):
        check_float_batch(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ShapeError, match=r"class indices in \[0, 2\], got \[3, -1\]"):
        check_labels(torch.tensor([0, 3, -1]), 3, classes=3)
    with pytest.raises(ShapeError, match=r"shaped \(2,\), got \(3,\)"):
        check_labels(torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ShapeError, match=r"torch\.float32 tensor"):
        check_labels(torch.zeros(2), 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": (0.1, 0.2), "std": (1.0,)}, r"one mean per std, got 2 means \(0.1, 0.2\) and 1 stds"),
        ({"std": (0.0,)}, r"std must be positive, got \(0.0,\)"),
        ({"std": (float("nan"),)}, "std must hold finite numbers"),
        ({"mean": "0.5"}, "mean must be a tuple of numbers, got '0.5'"),
        ({"raw_min": 1.0, "raw_max": 0.0}, "raw_min < raw_max, got 1.0, 0.0"),
        ({"raw_max": math.inf}, "raw_min and raw_max must be finite"),
    ],
)
def test_normalization_raises_the_library_configuration_error(kwargs, match) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        Normalization(**kwargs)
    assert isinstance(info.value, (LBENError, ValueError))


def test_normalization_with_mismatched_channels_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"3 channels needs inputs shaped \(batch, 3, ...\)"):
        Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).to_model(torch.zeros(2, 2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_one_non_finite_entry_anywhere(dtype, bad):
    x = torch.randn(5, 7, 3, dtype=dtype)
    assert all_finite(x) and all_finite(x[:0])
    # Extremes at the edge of the range are finite.
    x[0, 0, 0], x[4, 6, 2] = torch.finfo(dtype).max, torch.finfo(dtype).min
    assert all_finite(x)
    for index in [(0, 0, 0), (2, 3, 1), (4, 6, 2)]:
        y = x.clone()
        y[index] = bad
        assert not all_finite(y) and not all_finite(y.transpose(0, 2))


def test_all_finite_of_integer_boolean_and_complex_tensors():
    assert all_finite(torch.arange(6)) and all_finite(torch.tensor([True, False]))
    z = torch.randn(4, dtype=torch.complex64)
    assert all_finite(z)
    z[2] = complex(0.0, float("inf"))
    assert not all_finite(z)
