"""monDEQ: W = (1 − m)I − AᵀA + B − Bᵀ with Λ = I (Winston & Kolter 2020)."""

from __future__ import annotations

import pytest
import torch

from lben_ode import MonDEQ

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("margin", [0.01, 0.1, 2.0])
def test_explicit_weight_is_the_mondeq_formula(margin):
    torch.manual_seed(0)
    model = MonDEQ(4, 3, 7, margin=margin).double()
    with torch.no_grad():
        model.A.mul_(3.0)
        model.B.normal_()
    weights = model.explicit_weights()
    A, B = model.A.detach(), model.B.detach()
    expected = (1 - margin) * torch.eye(7, dtype=torch.float64) - A.T @ A + B - B.T
    torch.testing.assert_close(weights.W, expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(weights.lam, torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(weights.U, model.U.detach())
    torch.testing.assert_close(weights.W_o, model.W_o.detach())
    # I − W has symmetric part AᵀA + mI: strongly monotone with constant at least m.
    sym = torch.eye(7, dtype=torch.float64) - (weights.W + weights.W.T) / 2
    assert float(torch.linalg.eigvalsh(sym)[0]) >= margin - 1e-12
    assert model.lipschitz_bound() is None


def test_mondeq_parameters_and_shapes():
    model = MonDEQ(5, 2, 6)
    assert {name for name, _ in model.named_parameters()} == {"A", "B", "U", "b_z", "W_o", "b_y"}
    y = model(torch.randn(3, 5))
    assert y.shape == (3, 2)
    assert model.equilibrium(torch.randn(3, 5)).shape == (3, 6)


def test_mondeq_output_is_W_o_z_plus_b_y(reference, activation_reference):
    torch.manual_seed(1)
    model = MonDEQ(5, 2, 6, solver="pr", tol=1e-12).double()
    with torch.no_grad():
        model.b_z.normal_()
        model.b_y.normal_()
    x = torch.randn(4, 5, dtype=torch.float64)
    w = model.explicit_weights()
    z = reference.equilibrium(w.W, x @ w.U.T + w.b_z, activation_reference("relu"))
    torch.testing.assert_close(model(x).detach(), z @ w.W_o.T + w.b_y, rtol=1e-9, atol=1e-10)
