"""The steady state at constant input: splitting solvers, long simulations and a float64 reference."""

from __future__ import annotations

import pytest
import torch

from lben_ode import EquilibriumModel
from lben_ode.continuous import ContractingLBEN
from lben_ode.robustness.certificates import certified_radius

F64 = torch.float64


@pytest.fixture
def model(ct_reference) -> ContractingLBEN:
    torch.manual_seed(0)
    m = ContractingLBEN(3, 2, 6, gamma=0.7, contraction_rate=0.3, activation="relu", rtol=1e-9, atol=1e-11).double()
    ct_reference.randomize(m, 0.7, torch.Generator().manual_seed(5), 0.5)
    return m


def _reference_steady_state(model, reference, u_const):
    cert = model.certificate()
    return reference.equilibrium(cert.W, u_const @ cert.U.T + cert.b_z, (torch.relu, lambda v: (v > 0).double()))


@pytest.mark.parametrize("solver", ["pr", "fb", "anderson"])
def test_steady_state_matches_a_float64_reference(model, reference, solver) -> None:
    u_const = torch.randn(4, 3, dtype=F64)
    z_star = model.steady_state(u_const, solver=solver, tol=1e-10, max_iter=5000)
    torch.testing.assert_close(z_star.detach(), _reference_steady_state(model, reference, u_const), rtol=0, atol=1e-8)


def test_long_simulation_at_constant_input_ends_at_the_steady_state(model, reference) -> None:
    u_const = torch.randn(4, 3, dtype=F64)
    z_star = model.steady_state(u_const, tol=1e-10)
    # Contraction at rate ≥ 0.3 from z = 0: within e^{−12}·‖z*‖_P-ish by t = 40.
    t = torch.tensor([0.0, 20.0, 40.0], dtype=F64)
    model.set_integrator(rtol=1e-8, atol=1e-10)
    with torch.no_grad():
        z = model.states(u_const[:, None].expand(4, 3, 3).contiguous(), t)
    torch.testing.assert_close(z[:, -1], _reference_steady_state(model, reference, u_const), rtol=0, atol=1e-5)
    torch.testing.assert_close(z[:, -1], z_star.detach(), rtol=0, atol=1e-5)


def test_equilibrium_model_shares_weights_and_bound(model) -> None:
    eq = model.as_equilibrium_model(tol=1e-10)
    assert isinstance(eq, EquilibriumModel)
    assert eq.lipschitz_bound() == model.gain_bound()
    cert, weights = model.certificate(), eq.explicit_weights()
    for a, b in zip((cert.W, cert.U, cert.b_z, cert.W_o, cert.b_y, cert.lam), weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert eq.input_shape == (3,) and eq.in_features == 3 and eq.out_features == 2
    # It is a view: its parameters are the continuous model's, and a change shows at once.
    assert {id(p) for p in eq.parameters()} == {id(p) for p in model.parameters()}
    with torch.no_grad():
        model.G.mul_(0.5)
    torch.testing.assert_close(eq.explicit_weights().W, model.certificate().W, rtol=0, atol=0)


def test_steady_state_map_is_gamma_lipschitz_and_certificates_work(model) -> None:
    eq = model.as_equilibrium_model(tol=1e-10)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(64, 3, generator=g, dtype=F64), torch.randn(64, 3, generator=g, dtype=F64)
    with torch.no_grad():
        ratio = (eq(x1) - eq(x2)).norm(dim=1) / (x1 - x2).norm(dim=1)
    assert float(ratio.max()) <= model.gain_bound() * (1 + 1e-8)
    with torch.no_grad():
        radius = certified_radius(eq(x1), eq.lipschitz_bound())
    assert bool((radius >= 0).all()) and radius.shape == (64,)


def test_gradients_of_the_steady_state_reach_the_continuous_parameters(model) -> None:
    u_const = torch.randn(2, 3, dtype=F64)
    model.steady_state(u_const, tol=1e-12, max_iter=2000).square().sum().backward()
    grad = model.G.grad.clone()
    # Finite differences along a random direction, with the float64 solve.
    direction = torch.randn_like(model.G)
    eps = 1e-6
    with torch.no_grad():
        model.G.add_(eps * direction)
        up = model.steady_state(u_const, tol=1e-13, max_iter=5000).square().sum()
        model.G.sub_(2 * eps * direction)
        down = model.steady_state(u_const, tol=1e-13, max_iter=5000).square().sum()
        model.G.add_(eps * direction)
    assert float((grad * direction).sum()) == pytest.approx(float((up - down) / (2 * eps)), rel=1e-5, abs=1e-8)
