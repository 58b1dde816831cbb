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


def test_mondeq_initialisation_has_the_reference_codes_scale():
    # The reference monDEQ code builds U, A, B and the output layer from nn.Linear: weights uniform
    # in ±1/√fan_in, the same distribution as here. Trained side by side from one initialisation
    # on the same batches, the two give the same logits, gradients and test error.
    torch.manual_seed(0)
    n_x, n, n_y = 300, 200, 10
    model = MonDEQ(n_x, n_y, n)
    for name, tensor, fan_in in (("U", model.U, n_x), ("A", model.A, n), ("B", model.B, n), ("W_o", model.W_o, n)):
        bound = fan_in**-0.5
        values = tensor.detach()
        assert float(values.abs().max()) <= bound, name
        # Uniform(±b) has standard deviation b/√3; thousands of entries pin it to a few percent.
        assert float(values.std()) == pytest.approx(bound / 3**0.5, rel=0.05), name
    assert not model.b_z.any() and not model.b_y.any()


def test_mondeq_gradients_equal_an_explicit_implicit_function_theorem_solve(reference, activation_reference):
    torch.manual_seed(2)
    n_x, n, n_y, batch, margin = 6, 5, 3, 4, 0.3
    model = MonDEQ(n_x, n_y, n, margin=margin, solver="pr", tol=1e-13, max_iter=2000).double()
    with torch.no_grad():
        model.b_z.normal_()
        model.b_y.normal_()
    x = torch.randn(batch, n_x, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    torch.nn.functional.cross_entropy(model(x), target).backward()

    # Independent float64 gradient: z* by Newton, then dz = (I − DW)⁻¹ D (dW z* + dU x + db).
    A, B = model.A.detach().clone().requires_grad_(), model.B.detach().clone().requires_grad_()
    W = (1 - margin) * torch.eye(n, dtype=torch.float64) - A.T @ A + B - B.T
    U, b_z, W_o, b_y = (p.detach() for p in (model.U, model.b_z, model.W_o, model.b_y))
    sigma = activation_reference("relu")
    z = reference.equilibrium(W.detach(), x @ U.T + b_z, sigma)
    logits = (z @ W_o.T + b_y).requires_grad_()
    torch.nn.functional.cross_entropy(logits, target).backward()
    g_z = logits.grad @ W_o  # dL/dz*, (batch, n)
    slopes = sigma[1](z @ W.detach().T + x @ U.T + b_z)
    eye = torch.eye(n, dtype=torch.float64)
    # Per sample u = D (I − D W)⁻ᵀ g: the gradient of the loss with respect to the pre-activation.
    u = torch.stack(
        [s * torch.linalg.solve((eye - s[:, None] * W.detach()).T, g) for s, g in zip(slopes, g_z, strict=True)]
    )
    grad_W = u.T @ z
    grad_A, grad_B = torch.autograd.grad(W, (A, B), grad_outputs=grad_W)
    expected = {
        "U": u.T @ x,
        "b_z": u.sum(0),
        "A": grad_A,
        "B": grad_B,
        "W_o": logits.grad.T @ z,
        "b_y": logits.grad.sum(0),
    }
    for name, value in expected.items():
        torch.testing.assert_close(getattr(model, name).grad, value, rtol=1e-8, atol=1e-10, msg=name)
