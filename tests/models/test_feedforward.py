"""from_mlp: an MLP written as an equilibrium network with a strictly block-lower-triangular W."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from lben_ode import ActivationError, ConfigurationError, FeedforwardEquilibrium, from_mlp

pytestmark = pytest.mark.usefixtures("single_thread")

ACTIVATION_MODULES = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


def make_mlp(sizes: list[int], activation: str, output: int | None, bias: bool = True) -> nn.Sequential:
    """Linear/activation pairs through ``sizes``, then an optional final Linear to ``output``."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b, bias=bias), ACTIVATION_MODULES[activation]()]
    if output is not None:
        layers.append(nn.Linear(sizes[-1], output))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("solver", ["fb", "pr"])
@pytest.mark.parametrize("activation", list(ACTIVATION_MODULES))
@pytest.mark.parametrize(
    ("sizes", "output"),
    [([4, 6], 3), ([4, 6], None), ([4, 5, 7], 2), ([4, 3, 5, 6, 2], None), ([4, 8, 8, 8], 5)],
    ids=["1-hidden", "1-hidden-no-out", "2-hidden", "4-hidden-no-out", "3-hidden"],
)
def test_from_mlp_reproduces_the_mlp(sizes, output, activation, solver):
    torch.manual_seed(len(sizes) + (output or 0))
    mlp = make_mlp(sizes, activation, output, bias=len(sizes) != 3).double()
    model = from_mlp(mlp, solver=solver, tol=1e-13, max_iter=1000)
    assert isinstance(model, FeedforwardEquilibrium)
    assert model.width == sum(sizes[1:])
    assert model.lipschitz_bound() is None
    x = torch.randn(5, sizes[0], dtype=torch.float64)
    y = model(x)
    torch.testing.assert_close(y, mlp(x), rtol=1e-10, atol=1e-11)
    assert model.solver_stats["forward"].all_converged

    # W is strictly block lower triangular, with layer k+1's weight in block (k+1, k).
    W = model.explicit_weights().W
    offsets = [0]
    for size in sizes[1:]:
        offsets.append(offsets[-1] + size)
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    for i in range(len(sizes) - 1):
        for j in range(len(sizes) - 1):
            block = W[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]]
            if i == j + 1:
                torch.testing.assert_close(block, linears[i].weight.detach())
            else:
                assert bool((block == 0).all()), (i, j)


def test_from_mlp_gradients_match_the_mlp():
    torch.manual_seed(0)
    mlp = make_mlp([3, 5, 4], "tanh", 2).double()
    model = from_mlp(mlp, tol=1e-13)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    g_model = torch.autograd.grad(model(x).square().sum(), x)[0]
    g_mlp = torch.autograd.grad(mlp(x).square().sum(), x)[0]
    torch.testing.assert_close(g_model, g_mlp, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    ("mlp", "error", "match"),
    [
        (nn.Sequential(), ConfigurationError, "non-empty"),
        (nn.Linear(3, 4), ConfigurationError, "nn.Sequential"),
        (nn.Sequential(nn.ReLU(), nn.Linear(3, 4)), ConfigurationError, "layer 0 is ReLU"),
        (nn.Sequential(nn.Linear(3, 4)), ConfigurationError, "at least one hidden"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ReLU()), ConfigurationError, "layer 2 is ReLU"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2)), ConfigurationError, "Dropout"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), ActivationError, "Linear is not a supported"),
        (nn.Sequential(nn.Linear(3, 4), nn.GELU()), ActivationError, "GELU"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh()), ActivationError, "one activation"),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(1.5)), ActivationError, r"\[0, 1\]"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2.0)), ActivationError, "beta=1"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)), ConfigurationError, "takes 5 features"),
        (
            nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(7, 2)),
            ConfigurationError,
            "previous Linear gives 6",
        ),
    ],
)
def test_from_mlp_refuses_bad_sequentials(mlp, error, match):
    with pytest.raises(error, match=match):
        from_mlp(mlp)
