"""Empirical Lipschitz lower bounds: exact on linear maps, never above γ on an LBEN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lben_ode import LBEN, ConfigurationError, NonFiniteInputError
from lben_ode.robustness import empirical_lipschitz, jacobian_norm


def lben_jacobians(model: LBEN, x: torch.Tensor) -> torch.Tensor:
    """∂y/∂x = W_o (I − D W)⁻¹ D U per sample (D = σ'(W z* + U x + b_z)), in float64."""
    W, U, b_z, W_o, _, _ = model.explicit_weights()
    with torch.no_grad():
        z = model.equilibrium(x)
    D = ((z @ W.T + x @ U.T + b_z) > 0).double()  # ReLU slopes
    eye = torch.eye(W.shape[0], dtype=torch.float64)
    return torch.stack([W_o @ torch.linalg.solve(eye - D[i, :, None] * W, D[i, :, None] * U) for i in range(len(x))])


def test_linear_map_constant_is_found(linear_classifier) -> None:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    model = linear_classifier(A, torch.zeros(5, dtype=torch.float64))
    norm_A = float(torch.linalg.matrix_norm(A, ord=2))
    x = torch.randn(16, 12, generator=gen, dtype=torch.float64)
    estimate = empirical_lipschitz(model, x, restarts=1, steps=60, generator=gen)
    assert 0.99 * norm_A <= estimate.value <= norm_A * (1 + 1e-12)
    # The reported pair achieves the reported ratio.
    ratio = (A @ (estimate.x1 - estimate.x2)).norm() / (estimate.x1 - estimate.x2).norm()
    assert float(ratio) == pytest.approx(estimate.value, rel=1e-12)
    assert estimate.pair_ratios.shape == (2 * 16,)
    assert torch.allclose(jacobian_norm(model, x), torch.full((16,), norm_A, dtype=torch.float64), rtol=1e-12)


def test_jacobian_norm_of_image_shaped_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).double()
    x = torch.randn(5, 2, 3, 3, generator=gen, dtype=torch.float64)
    expected = float(torch.linalg.matrix_norm(model[1].weight.detach(), ord=2))
    assert torch.allclose(jacobian_norm(model, x, batch_size=2), torch.full((5,), expected, dtype=torch.float64))


def test_random_lben_lower_bounds_stay_below_gamma() -> None:
    torch.manual_seed(3)
    gamma = 1.0
    model = LBEN(8, 4, 16, gamma=gamma, tol=1e-11, max_iter=3000).double()
    x = torch.randn(24, 8, dtype=torch.float64)
    jac = jacobian_norm(model, x)
    exact = torch.linalg.matrix_norm(lben_jacobians(model, x), ord=2)
    assert torch.allclose(jac, exact, rtol=1e-7, atol=0)
    estimate = empirical_lipschitz(model, x, restarts=1, steps=60, generator=torch.Generator().manual_seed(0))
    assert float(jac.max()) <= gamma
    assert estimate.value <= gamma * (1 + 1e-7)
    # The ascent starts at every data point, so it reaches at least the local Jacobian norms there.
    assert estimate.value >= 0.98 * float(jac.max())


def test_lipschitz_rejects_bad_input(linear_classifier) -> None:
    model = linear_classifier(torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ConfigurationError, match="restarts"):
        empirical_lipschitz(model, x, restarts=0)
    with pytest.raises(ConfigurationError, match="min_distance"):
        empirical_lipschitz(model, x, min_distance=0.0)
    x[0, 0] = float("nan")
    with pytest.raises(NonFiniteInputError):
        jacobian_norm(model, x)
