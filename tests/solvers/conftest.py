"""Fixtures of the solver tests: every activation the library accepts, with its options."""

from __future__ import annotations

import pytest

#: (activation name, options) for every monotone, slope-restricted activation of the library.
ACTIVATIONS = [
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.1}),
    ("tanh", {}),
    ("sigmoid", {}),
    ("softplus", {}),
]


@pytest.fixture(params=ACTIVATIONS, ids=[name for name, _ in ACTIVATIONS])
def activation_case(request: pytest.FixtureRequest) -> tuple[str, dict]:
    """One (name, options) pair of :data:`ACTIVATIONS`; a test using it runs once per activation."""
    return request.param


@pytest.fixture
def rescaled_random_model():
    """Builds a small float64 LBEN with every weight rescaled by a random factor 10^±spread and
    random Λ and biases (sizes drawn from ``seed``; γ drawn in [0.1, 10] when None): well-posed by
    construction, but far from the initialisation's conditioning."""
    import numpy as np
    import torch

    from lben_ode import LBEN

    def build(
        seed: int, activation: str, spread: float, gamma: float | None = None, batch: int = 8, solver: str = "pr"
    ):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        n_x, n, n_y = int(rng.integers(2, 6)), int(rng.integers(3, 9)), int(rng.integers(2, 4))
        if gamma is None:
            gamma = float(10 ** rng.uniform(-1, 1))
        model = LBEN(n_x, n_y, n, gamma=gamma, activation=activation, solver=solver)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in ("log_lambda", "b_z", "b_y"):
                    p.copy_(0.5 * torch.randn(p.shape))
                else:
                    p.mul_(float(10 ** rng.uniform(-spread, spread)))
        x = torch.randn(batch, n_x, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        return model.double(), x

    return build
