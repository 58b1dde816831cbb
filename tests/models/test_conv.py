"""The convolutional LBEN against dense float64 matrices built independently, index by index."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

import lben_ode
from lben_ode import ConvLBEN
from lben_ode.errors import (
    ConfigurationError,
    NonFiniteInputError,
    ShapeError,
    UnknownNameError,
    UnsupportedSolverError,
)
from lben_ode.models.circular import (
    average_pool_adjoint,
    circular_conv,
    circular_conv_adjoint,
    frequency_response,
)

METRICS = ("full", "channels", "image", "identity")


# -- independent dense references ------------------------------------------------------------------
def dense_conv(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The matrix of ``y[o, i, j] = Σ K[o, c, a, b] x[c, (i + a − p) mod H, (j + b − p) mod W]``."""
    c_out, c_in, k, _ = kernel.shape
    p = k // 2
    matrix = torch.zeros(c_out, height, width, c_in, height, width, dtype=torch.float64)
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    for o in range(c_out):
        for c in range(c_in):
            for a in range(k):
                for b in range(k):
                    src_r, src_c = (rows + a - p) % height, (cols + b - p) % width
                    matrix[o, rows, cols, c, src_r, src_c] += float(kernel[o, c, a, b])
    return matrix.reshape(c_out * height * width, c_in * height * width)


def dense_pool(channels: int, height: int, width: int, pool: int) -> torch.Tensor:
    """Average pooling with window = stride = pool, as a matrix on (C, H, W)-flattened images."""
    matrix = torch.zeros(channels, height // pool, width // pool, channels, height, width, dtype=torch.float64)
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                matrix[c, i // pool, j // pool, c, i, j] = 1.0 / pool**2
    return matrix.reshape(-1, channels * height * width)


def dense_model(model: ConvLBEN) -> dict[str, torch.Tensor]:
    """W, U, W_o, Λ and H of a ConvLBEN from the DESIGN §1 formula on dense component matrices."""
    c, h, w = model.state_shape
    n = c * h * w
    A = dense_conv(model.A.detach(), h, w)
    B = dense_conv(model.B.detach(), h, w)
    U = dense_conv(model.U.detach(), h, w)
    W_o = model.W_o.detach().double() @ dense_pool(c, h, w, model.pool)
    lam = model.log_lambda.detach().double().exp().expand(c, h, w).reshape(n)
    Lam = torch.diag(lam)
    eye = torch.eye(n, dtype=torch.float64)
    sym = A.T @ A + model.margin * eye
    if model.gamma is not None:
        g = float(model.gamma)
        sym = sym + (W_o.T @ W_o + Lam @ U @ U.T @ Lam) / g
    H = 0.5 * sym + B - B.T
    W = eye - H / lam[:, None]
    return {"W": W, "U": U, "W_o": W_o, "lam": lam, "H": H}


def perturbed_model(metric: str, seed: int, scale: float = 1.0, spread: float = 0.5, **kwargs) -> ConvLBEN:
    """A float64 ConvLBEN with every parameter random (kernels × scale, log Λ with std spread)."""
    torch.manual_seed(seed)
    options = {"in_channels": 2, "channels": 3, "image_size": 6, "out_features": 4, "pool": 2} | kwargs
    model = ConvLBEN(metric=metric, **options).double()
    with torch.no_grad():
        for name in ("A", "B", "U", "W_o"):
            getattr(model, name).mul_(scale)
        model.b_z.normal_()
        model.b_y.normal_()
        if metric != "identity":
            model.log_lambda.normal_(0.0, spread)
    return model


# -- the convolutions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("c_out", "c_in", "k", "height", "width"),
    [(3, 3, 3, 5, 5), (3, 2, 3, 4, 6), (2, 1, 5, 6, 5), (2, 3, 1, 3, 4)],
)
def test_circular_conv_and_adjoint_match_the_dense_matrix(c_out, c_in, k, height, width):
    torch.manual_seed(0)
    kernel = torch.randn(c_out, c_in, k, k, dtype=torch.float64)
    dense = dense_conv(kernel, height, width)
    x = torch.randn(4, c_in, height, width, dtype=torch.float64)
    y = torch.randn(4, c_out, height, width, dtype=torch.float64)
    torch.testing.assert_close(circular_conv(x, kernel).reshape(4, -1), x.reshape(4, -1) @ dense.T)
    torch.testing.assert_close(circular_conv_adjoint(y, kernel).reshape(4, -1), y.reshape(4, -1) @ dense)


def test_frequency_response_holds_the_singular_values():
    torch.manual_seed(1)
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    dense = dense_conv(kernel, 5, 6)
    response = frequency_response(kernel, (5, 6))
    assert response.shape == (5, 4, 3, 2)
    per_frequency = torch.linalg.svdvals(response)
    dense_values = torch.linalg.svdvals(dense)
    torch.testing.assert_close(per_frequency.max(), dense_values.max())
    torch.testing.assert_close(per_frequency.min(), dense_values.min())


def test_output_map_and_adjoint_match_the_dense_matrix():
    model = perturbed_model("full", seed=2, image_size=(4, 6), pool=2)
    weights = model.conv_weights()
    dense = dense_model(model)["W_o"]
    z = torch.randn(3, *model.state_shape, dtype=torch.float64)
    y = torch.randn(3, model.out_features, dtype=torch.float64)
    torch.testing.assert_close(weights.output_map(z), z.reshape(3, -1) @ dense.T)
    back = weights.output_adjoint(y, model.state_shape)
    torch.testing.assert_close(back.reshape(3, -1), y @ dense)
    v = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    spread = average_pool_adjoint(v, 2).reshape(2, -1)
    torch.testing.assert_close(spread, v.reshape(2, -1) @ dense_pool(3, 4, 6, 2))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("gamma", [0.7, None])
def test_w_and_its_transpose_match_the_dense_formula(metric, gamma):
    model = perturbed_model(metric, seed=3, gamma=gamma)
    ref = dense_model(model)
    n = ref["W"].shape[0]
    z = torch.randn(4, *model.state_shape, dtype=torch.float64)
    flat = z.reshape(4, n)
    weights = model.conv_weights()
    operator = model.forward_parts().operator
    for forward in (weights.apply_w(z), operator.apply(z), model.forward_parts().apply_W(z)):
        torch.testing.assert_close(forward.reshape(4, n), flat @ ref["W"].T)
    for backward in (weights.apply_w_transpose(z), operator.transpose().apply(z)):
        torch.testing.assert_close(backward.reshape(4, n), flat @ ref["W"])
    explicit = model.explicit_weights()
    torch.testing.assert_close(explicit.W, ref["W"])
    torch.testing.assert_close(explicit.U, ref["U"])
    torch.testing.assert_close(explicit.W_o, ref["W_o"])
    torch.testing.assert_close(explicit.lam, ref["lam"])
    torch.testing.assert_close(explicit.b_z, model.b_z.detach().repeat_interleave(36))
    torch.testing.assert_close(explicit.b_y, model.b_y.detach())


# -- the conditions hold for every parameter value -------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    metric=st.sampled_from(METRICS),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.1, 1.0, 10.0, 30.0]),
    spread=st.sampled_from([0.0, 1.0, 2.0]),
    gamma=st.sampled_from([0.05, 1.0, 20.0]),
    margin=st.sampled_from([1e-3, 1.0]),
)
def test_conditions_1_and_2_hold_for_random_parameters(metric, seed, scale, spread, gamma, margin):
    model = perturbed_model(metric, seed, scale=scale, spread=spread, gamma=gamma, margin=margin)
    e = model.explicit_weights()
    Lam = torch.diag(e.lam)
    n_x = e.U.shape[1]
    condition_1 = 2 * Lam - Lam @ e.W - e.W.T @ Lam
    top = condition_1 - e.W_o.T @ e.W_o / gamma
    condition_2 = torch.cat(
        [
            torch.cat([top, -Lam @ e.U], dim=1),
            torch.cat([-e.U.T @ Lam, gamma * torch.eye(n_x, dtype=torch.float64)], dim=1),
        ]
    )
    sym = lambda m: (m + m.T) / 2  # noqa: E731
    # The construction makes the Schur complement exactly AᵀA + mI ⪰ mI.
    assert torch.linalg.eigvalsh(sym(condition_1))[0] >= margin * (1 - 1e-6)
    assert torch.linalg.eigvalsh(sym(condition_2))[0] > 0
    schur = top - Lam @ e.U @ e.U.T @ Lam / gamma
    assert torch.linalg.eigvalsh(sym(schur))[0] >= margin * (1 - 1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("gamma", [1.0, None])
def test_forward_backward_step_comes_from_valid_bounds(metric, gamma):
    model = perturbed_model(metric, seed=4, scale=2.0, gamma=gamma)
    ref = dense_model(model)
    s = ref["lam"].sqrt()
    M = ref["H"] / s[:, None] / s[None, :]  # Λ^{1/2}(I − W)Λ^{-1/2}
    mu = float(torch.linalg.eigvalsh((M + M.T) / 2)[0])
    lipschitz = float(torch.linalg.matrix_norm(M, ord=2))
    operator = model.forward_parts().operator
    mu_bound, lipschitz_bound = operator.monotonicity()
    assert 0 < mu_bound <= mu * (1 + 1e-9)
    assert lipschitz_bound >= lipschitz * (1 - 1e-9)
    if gamma is None and metric in ("channels", "identity"):
        # Λ commutes with the Fourier transform: both bounds are exact.
        assert mu_bound == pytest.approx(mu, rel=1e-9)
        assert lipschitz_bound == pytest.approx(lipschitz, rel=1e-9)
    assert operator.forward_backward_step() == pytest.approx(mu_bound / lipschitz_bound**2)
    assert operator.transpose().forward_backward_step() == operator.forward_backward_step()
    assert operator.resolvent(1.0) is None


# -- the equilibrium -------------------------------------------------------------------------------
def dense_equilibrium(W, U, b_z, x, activation, iterations=5000):
    """Peaceman-Rachford with α = 1 (prox = σ) on the dense float64 matrices."""
    n = W.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    inverse = torch.linalg.inv(2 * eye - W)
    b = x.reshape(x.shape[0], -1) @ U.T + b_z
    z = torch.zeros_like(b)
    u = torch.zeros_like(b)
    for _ in range(iterations):
        u_half = 2 * z - u
        z_half = (u_half + b) @ inverse.T
        u = 2 * z_half - u_half
        z = activation(u)
    residual = (z - activation(z @ W.T + b)).norm(dim=1) / z.norm(dim=1)
    assert residual.max() < 1e-12
    return z


EQUILIBRIUM_CASES = [
    ("full", "relu", 1.0),
    ("channels", "relu", None),
    ("image", "tanh", 0.5),
    ("identity", "relu", 2.0),
]


@pytest.mark.parametrize("solver", ["fb", "anderson", "ode"])
@pytest.mark.parametrize(("metric", "activation", "gamma"), EQUILIBRIUM_CASES)
def test_equilibrium_matches_a_dense_solve(metric, activation, gamma, solver):
    model = perturbed_model(metric, seed=5, spread=0.3, activation=activation, gamma=gamma, image_size=4)
    tol = 1e-11
    model.set_solver(solver, tol=tol, max_iter=20_000, on_nonconvergence="raise")
    x = torch.randn(5, *model.input_shape, dtype=torch.float64)
    e = model.explicit_weights()
    z_ref = dense_equilibrium(e.W, e.U, e.b_z, x, model.activation)
    with torch.no_grad():
        z = model.equilibrium(x)
        y = model(x)
    assert z.shape == (5, *model.state_shape)
    torch.testing.assert_close(z.reshape(5, -1), z_ref, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(y, z_ref @ e.W_o.T + e.b_y, rtol=1e-8, atol=1e-9)
    stats = model.solver_stats["forward"]
    assert stats.solver == solver and stats.all_converged and float(stats.residual.max()) <= tol


@pytest.mark.parametrize(
    ("solver", "metric", "scale"),
    # Forward-backward's provably safe step is small: its gradcheck uses a well-conditioned model.
    [("anderson", "full", 1.0), ("fb", "channels", 0.3)],
)
def test_gradients_match_finite_differences(solver, metric, scale):
    model = perturbed_model(
        metric, seed=6, scale=scale, activation="tanh", in_channels=1, channels=2, image_size=4, out_features=3
    )
    model.set_solver(solver, tol=1e-13, max_iter=50_000, on_nonconvergence="raise")
    x = torch.randn(2, *model.input_shape, dtype=torch.float64, requires_grad=True)
    names = ("A", "B", "U", "log_lambda", "W_o")
    params = tuple(getattr(model, name).detach().clone().requires_grad_(True) for name in names)

    def outputs(x, *values):
        return functional_call(model, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(outputs, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4)
    model(x).sum().backward()
    backward = model.solver_stats["backward"]
    assert backward.solver == solver and backward.all_converged


def test_training_step_updates_the_cached_operator():
    model = perturbed_model("full", seed=7)
    model.set_solver("anderson", tol=1e-9, max_iter=20_000, on_nonconvergence="raise")
    first = model.forward_parts().operator
    assert model.forward_parts().operator is first
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(4, *model.input_shape, dtype=torch.float64)
    loss = model(x).square().sum()
    loss.backward()
    assert model.solver_stats["backward"].all_converged
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    optimizer.step()
    second = model.forward_parts().operator
    assert second is not first
    z = torch.randn(2, *model.state_shape, dtype=torch.float64)
    torch.testing.assert_close(second.apply(z).reshape(2, -1), z.reshape(2, -1) @ dense_model(model)["W"].T)


# -- the Lipschitz bound ---------------------------------------------------------------------------
def test_adversarial_lipschitz_search_stays_under_gamma():
    gamma = 0.5
    model = perturbed_model("full", seed=8, scale=3.0, gamma=gamma, in_channels=1, image_size=5, pool=1)
    model.set_solver("anderson", tol=1e-10, max_iter=20_000, on_nonconvergence="raise")
    assert model.lipschitz_bound() == pytest.approx(gamma)
    torch.manual_seed(0)
    restarts = 6
    x1 = torch.randn(restarts, *model.input_shape, dtype=torch.float64, requires_grad=True)
    delta = (0.1 * torch.randn(restarts, *model.input_shape, dtype=torch.float64)).requires_grad_(True)
    optimizer = torch.optim.Adam([x1, delta], lr=0.05)
    best = 0.0
    for _ in range(60):
        y = model(torch.cat([x1, x1 + delta]))
        ratio = (y[:restarts] - y[restarts:]).norm(dim=1) / delta.flatten(1).norm(dim=1)
        best = max(best, float(ratio.detach().max()))
        optimizer.zero_grad()
        (-ratio.sum()).backward()
        optimizer.step()
    assert best <= gamma * (1 + 1e-6)
    # The search is not idle: it reaches a sizeable fraction of the bound.
    assert best > 0.2 * gamma


def test_lipschitz_bound_is_gamma_or_none():
    assert ConvLBEN(1, 2, 4, 3, gamma=2.5).lipschitz_bound() == pytest.approx(2.5)
    assert ConvLBEN(1, 2, 4, 3, gamma=None).lipschitz_bound() is None
    learned = ConvLBEN(1, 2, 4, 3, gamma=2.0, learn_gamma=True)
    assert isinstance(learned.log_gamma, torch.nn.Parameter)


# -- solvers and errors ----------------------------------------------------------------------------
def test_peaceman_rachford_is_refused_with_a_clear_error():
    with pytest.raises(UnsupportedSolverError, match=r"ConvLBEN cannot use solver 'pr'.*'fb'"):
        ConvLBEN(1, 2, 4, 3, solver="pr")
    model = ConvLBEN(1, 2, 4, 3, solver="fb", tol=1e-4)
    with pytest.raises(UnsupportedSolverError, match=r"\(I \+ α\(I − W\)\)⁻¹"):
        model.set_solver("pr", alpha=0.5)
    assert model.solver.name == "fb" and model.solver.tol == 1e-4


def test_package_exports_the_model():
    assert lben_ode.ConvLBEN is ConvLBEN
    assert lben_ode.models.ConvLBEN is ConvLBEN
    assert issubclass(ConvLBEN, lben_ode.EquilibriumModel)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metric": "diagonal"}, UnknownNameError, "channels, full, identity, image"),
        ({"pool": 3}, ConfigurationError, "pool=3 must divide the image size 4×4"),
        ({"kernel_size": 2}, ConfigurationError, "kernel_size must be odd"),
        ({"kernel_size": 5}, ConfigurationError, "at most the image side 4"),
        ({"gamma": 0.0}, ConfigurationError, "gamma must be a finite float > 0"),
        ({"gamma": None, "learn_gamma": True}, ConfigurationError, "learn_gamma"),
        ({"margin": -1.0}, ConfigurationError, "margin"),
        ({"image_size": (4, 0)}, ConfigurationError, "image_size"),
        ({"image_size": "4"}, ConfigurationError, "image_size"),
        ({"channels": 0}, ConfigurationError, "channels must be a positive int"),
        ({"kernel_scale": -1.0}, ConfigurationError, "kernel_scale"),
        ({"activation": "elu"}, lben_ode.ActivationError, "relu"),
        ({"solver": "broyden"}, UnknownNameError, "fb"),
        ({"step": 0.1}, UnknownNameError, "option of solver 'anderson'"),
        ({"alpha": -1.0}, ConfigurationError, "alpha"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, error, message):
    options = {"in_channels": 1, "channels": 2, "image_size": 4, "out_features": 3} | kwargs
    with pytest.raises(error, match=message):
        ConvLBEN(**options)


def test_bad_inputs_get_clear_errors():
    model = ConvLBEN(2, 3, (4, 6), 5)
    with pytest.raises(ShapeError, match=r"\(batch, 2, 4, 6\), got \(3, 1, 4, 6\)"):
        model(torch.zeros(3, 1, 4, 6))
    with pytest.raises(ShapeError, match=r"\(batch, 2, 4, 6\)"):
        model(torch.zeros(2, 4, 6))
    bad = torch.zeros(1, 2, 4, 6)
    bad[0, 1, 2, 3] = math.nan
    with pytest.raises(NonFiniteInputError):
        model(bad)
    with pytest.raises(ShapeError, match="warm start"):
        model.equilibrium(torch.zeros(1, 2, 4, 6), z0=torch.zeros(1, 2, 4, 6))


def test_explicit_weights_are_refused_for_large_images():
    model = ConvLBEN(1, 8, 28, 10, pool=4)
    with pytest.raises(ConfigurationError, match="n = 6272"):
        model.explicit_weights()
