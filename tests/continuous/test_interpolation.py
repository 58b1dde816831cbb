"""Sampled input signals: linear and zero-order-hold interpolation between irregular samples."""

from __future__ import annotations

import math

import pytest
import torch

from lben_ode import UnknownNameError
from lben_ode.continuous import SampledSignal

TIMES = torch.tensor([0.0, 0.3, 0.35, 1.2, 2.0, 3.7], dtype=torch.float64)


def test_linear_interpolation_reproduces_a_piecewise_linear_input_between_samples() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, len(TIMES), 3, generator=g, dtype=torch.float64)
    signal = SampledSignal(TIMES, values, "linear")
    for s in torch.rand(50, generator=g, dtype=torch.float64) * 3.7:
        k = int(torch.searchsorted(TIMES, s, right=True)) - 1
        k = min(k, len(TIMES) - 2)
        w = (s - TIMES[k]) / (TIMES[k + 1] - TIMES[k])
        expected = (1 - w) * values[:, k] + w * values[:, k + 1]
        torch.testing.assert_close(signal(s), expected, rtol=0, atol=1e-14)
    # An affine signal a + b t is reproduced exactly everywhere in between.
    a, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    affine = SampledSignal(TIMES, (a + b * TIMES[:, None])[None], "linear")
    for s in (0.0, 0.1, 0.31, 0.349, 1.9, 3.7):
        torch.testing.assert_close(affine(torch.tensor(s, dtype=torch.float64))[0], a + b * s, rtol=0, atol=1e-14)


def test_zero_order_hold_is_piecewise_constant_and_right_continuous() -> None:
    values = torch.arange(len(TIMES), dtype=torch.float32).reshape(1, -1, 1).expand(2, -1, 2)
    signal = SampledSignal(TIMES, values, "zoh")
    for k in range(len(TIMES) - 1):
        for s in torch.linspace(float(TIMES[k]), float(TIMES[k + 1]), 7, dtype=torch.float64)[:-1]:
            assert torch.equal(signal(s), values[:, k])
        # A time nudged just below a sample time is the left limit (how torchdiffeq steps to a jump).
        below = torch.nextafter(TIMES[k + 1], torch.tensor(-math.inf, dtype=torch.float64))
        assert torch.equal(signal(below), values[:, k])
        assert torch.equal(signal(TIMES[k + 1]), values[:, k + 1])


@pytest.mark.parametrize("kind", ["linear", "zoh"])
def test_signal_is_held_outside_the_samples(kind: str) -> None:
    values = torch.randn(1, len(TIMES), 2, dtype=torch.float64)
    signal = SampledSignal(TIMES, values, kind)
    torch.testing.assert_close(signal(torch.tensor(-1.0, dtype=torch.float64)), values[:, 0])
    torch.testing.assert_close(signal(torch.tensor(9.0, dtype=torch.float64)), values[:, -1])


def test_interpolation_carries_the_gradient_of_the_samples() -> None:
    values = torch.randn(1, len(TIMES), 1, dtype=torch.float64, requires_grad=True)
    SampledSignal(TIMES, values, "linear")(torch.tensor(0.32, dtype=torch.float64)).sum().backward()
    expected = torch.zeros_like(values)
    expected[0, 1, 0], expected[0, 2, 0] = 0.6, 0.4  # (0.35 − 0.32)/0.05 and (0.32 − 0.3)/0.05
    torch.testing.assert_close(values.grad, expected)


def test_unknown_interpolation_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="linear, zoh"):
        SampledSignal(TIMES, torch.zeros(1, len(TIMES), 1), "cubic")
