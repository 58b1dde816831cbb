"""Simulations against an independent RK4 integrator, and the guarantees measured on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from lben_ode import ContractingLBEN

F64 = torch.float64
IRREGULAR = torch.tensor([0.0, 0.2, 0.25, 0.9, 1.5, 1.55, 2.6, 3.0], dtype=F64)


def _reference_input(times: torch.Tensor, u: torch.Tensor, kind: str):
    """u(t) from its samples, written with numpy (linear between neighbours; zoh: the last sample ≤ t)."""
    tt, uu = times.numpy(), u.detach().numpy()

    def u_of_t(s: float) -> torch.Tensor:
        k = max(0, int(np.searchsorted(tt, s, side="right")) - 1)
        if kind == "zoh" or k == len(tt) - 1:
            return uu[:, k]
        w = (s - tt[k]) / (tt[k + 1] - tt[k])
        return (1 - w) * uu[:, k] + w * uu[:, k + 1]

    return u_of_t


@pytest.mark.parametrize("interpolation", ["linear", "zoh"])
@pytest.mark.parametrize(
    ("method", "options"), [("dopri5", {"rtol": 1e-9, "atol": 1e-11}), ("rk4", {"step_size": 0.005})]
)
def test_simulation_matches_an_independent_rk4_on_an_irregular_grid(
    ct_reference, interpolation, method, options
) -> None:
    torch.manual_seed(0)
    model = ContractingLBEN(2, 2, 5, activation="tanh", interpolation=interpolation, method=method, **options)
    model = model.double()
    ct_reference.randomize(model, 0.8, torch.Generator().manual_seed(1))
    u = torch.randn(2, len(IRREGULAR), 2, dtype=F64)
    z0 = torch.randn(2, 5, dtype=F64)
    z = model.states(u, IRREGULAR, z0)
    cert = model.certificate()
    expected = ct_reference.rk4_reference(
        cert, np.tanh, _reference_input(IRREGULAR, u, interpolation), IRREGULAR.numpy(), z0, max_step=0.002
    )
    torch.testing.assert_close(z.detach(), expected, rtol=0, atol=1e-7)
    y = model(u, IRREGULAR, z0)
    torch.testing.assert_close(y.detach(), expected @ cert.W_o.T + cert.b_y, rtol=0, atol=1e-7)


def test_initial_state_defaults_to_zero_broadcasts_and_single_time_returns_it() -> None:
    model = ContractingLBEN(1, 2, 3, activation="tanh").double()
    u = torch.randn(2, 5, 1, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    torch.testing.assert_close(model.states(u, t), model.states(u, t, torch.zeros(3, dtype=F64)))
    shared = torch.randn(3, dtype=F64)
    torch.testing.assert_close(model.states(u, t, shared), model.states(u, t, shared.expand(2, 3)))
    z = model.states(u[:, :1], t[:1], shared.expand(2, 3))
    torch.testing.assert_close(z, shared.expand(2, 3)[:, None])


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_contraction_measured_in_the_P_norm(ct_reference, activation) -> None:
    """Same input, different z0: ‖Δz(t)‖_P ≤ e^{−α(t − t0)}‖Δz(t0)‖_P at every sample time."""
    alpha = 0.5
    t = torch.linspace(0, 5, 11, dtype=F64)
    worst_rate = math.inf
    pairs = 3
    for seed in range(1):
        torch.manual_seed(seed)
        model = ContractingLBEN(
            2, 1, 5, gamma=None, contraction_rate=alpha, activation=activation, rtol=1e-8, atol=1e-10
        ).double()
        ct_reference.randomize(model, 1.0, torch.Generator().manual_seed(seed), 0.5)
        u = torch.randn(pairs, len(t), 2, dtype=F64).repeat(2, 1, 1)
        z0 = 3 * torch.randn(2 * pairs, 5, dtype=F64)
        with torch.no_grad():
            z = model.states(u, t, z0)
        P = model.certificate().P
        dz = z[:pairs] - z[pairs:]
        norms = torch.einsum("bti,ij,btj->bt", dz, P, dz).sqrt()
        ratio = norms / norms[:, :1]
        bound = torch.exp(-alpha * (t - t[0]))
        # Slack for the integration tolerance (rtol 1e-8 on states of size ~3).
        assert bool((ratio <= bound * (1 + 1e-6) + 1e-6).all()), float((ratio / bound).max())
        # Measured rate between the first sample and the last at which Δz is far above tolerance.
        visible = norms > 1e-4
        for b in range(pairs):
            k = int(visible[b].nonzero().max())
            if k > 0:
                worst_rate = min(worst_rate, float(-torch.log(ratio[b, k]) / (t[k] - t[0])))
    print(f"\n[{activation}] slowest measured contraction rate {worst_rate:.3f} vs certified α = {alpha}")
    assert worst_rate >= alpha


def _simpson(values: torch.Tensor, dt: float) -> torch.Tensor:
    """Composite Simpson over the last axis (an odd number of equally spaced points)."""
    w = torch.ones(values.shape[-1], dtype=values.dtype)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (values * w).sum(-1) * dt / 3


def _energy_of_linear_signal(du: torch.Tensor, dt: float) -> torch.Tensor:
    """∫‖Δu(t)‖² dt, exact for a piecewise-linear Δu sampled every dt: per interval
    dt (|a|² + a·b + |b|²)/3."""
    a, b = du[:, :-1], du[:, 1:]
    return ((a * a + a * b + b * b).sum(-1) * dt / 3).sum(-1)


def _adversarial_gain(model: ContractingLBEN, pairs: int, iterations: int, seed: int) -> float:
    """Largest ∫‖Δy‖² / ∫‖Δu‖² found by Adam ascent over input pairs from equal z0 = 0, re-measured
    with a tight adaptive integration."""
    coarse_dt, sub = 0.5, 4
    knots = 9
    fine = torch.linspace(0, coarse_dt * (knots - 1), sub * (knots - 1) + 1, dtype=F64)

    def upsample(u: torch.Tensor) -> torch.Tensor:  # the same piecewise-linear signal on the fine grid
        w = torch.arange(sub, dtype=F64) / sub
        inner = u[:, :-1, None] * (1 - w)[None, None, :, None] + u[:, 1:, None] * w[None, None, :, None]
        return torch.cat([inner.flatten(1, 2), u[:, -1:]], 1)

    def ratios(u1: torch.Tensor, du: torch.Tensor) -> torch.Tensor:
        y = model(upsample(torch.cat([u1, u1 + du])), fine)
        dy = y[:pairs] - y[pairs:]
        return _simpson(dy.square().sum(-1), coarse_dt / sub) / _energy_of_linear_signal(du, coarse_dt)

    g = torch.Generator().manual_seed(seed)
    u1 = torch.randn(pairs, knots, model.input_size, generator=g, dtype=F64).requires_grad_()
    du = (0.3 * torch.randn(pairs, knots, model.input_size, generator=g, dtype=F64)).requires_grad_()
    opt = torch.optim.Adam([u1, du], lr=0.05)
    model.set_integrator("rk4", step_size=coarse_dt / sub)
    for _ in range(iterations):
        opt.zero_grad()
        (-ratios(u1, du).log().sum()).backward()
        opt.step()
    model.set_integrator("dopri5", rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        return float(ratios(u1, du).max())


@pytest.mark.parametrize("trained", [False, True])
def test_incremental_gain_measured_never_exceeds_gamma(trained) -> None:
    gamma = 0.8
    torch.manual_seed(4)
    model = ContractingLBEN(2, 2, 5, gamma=gamma, activation="tanh", method="rk4", step_size=0.125).double()
    if trained:
        # Fit a target that needs more gain than γ allows, so the fit pushes towards the bound.
        t = torch.linspace(0, 4, 33, dtype=F64)
        u = torch.randn(4, 33, 2, dtype=F64)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(8):
            opt.zero_grad()
            (model(u, t) - 3 * u.flip(-1)).square().mean().backward()
            opt.step()
    found = _adversarial_gain(model, pairs=3, iterations=10, seed=0)
    print(f"\n[trained={trained}] largest measured gain ratio √(∫|Δy|²/∫|Δu|²) = {math.sqrt(found):.4f}, γ = {gamma}")
    # Slack: the quadrature of ∫|Δy|² (Simpson, O(h⁴)) and the integration tolerance.
    assert found <= gamma**2 * (1 + 1e-4)
    assert found > 0.01 * gamma**2  # the search did find a pair that passes signal through


def _param_function(model: ContractingLBEN, t: torch.Tensor):
    names = ["G", "G_u", "L_P"]
    rest = {k: v for k, v in model.named_parameters() if k not in names}

    def f(u, z0, *params):
        return functional_call(model, {**rest, **dict(zip(names, params, strict=True))}, (u, t, z0))

    return f, tuple(getattr(model, k).detach().clone().requires_grad_() for k in names)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
@pytest.mark.parametrize("interpolation", ["linear", "zoh"])
def test_gradcheck_in_float64(gradient, interpolation) -> None:
    torch.manual_seed(2)
    model = ContractingLBEN(
        2, 1, 3, activation="tanh", method="rk4", step_size=0.05, gradient=gradient, interpolation=interpolation
    ).double()
    t = torch.tensor([0.0, 0.2, 0.5], dtype=F64)
    f, params = _param_function(model, t)
    u = torch.randn(1, 3, 2, dtype=F64, requires_grad=True)
    z0 = torch.randn(1, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (u, z0, *params), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("interpolation", ["linear", "zoh"])
def test_adjoint_and_backprop_gradients_agree(interpolation) -> None:
    torch.manual_seed(3)
    model = ContractingLBEN(2, 2, 4, activation="softplus", interpolation=interpolation, rtol=1e-9, atol=1e-11)
    model = model.double()
    t = torch.linspace(0, 1.2, 4, dtype=F64)
    u = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    grads = {}
    for gradient in ("backprop", "adjoint"):
        model.set_integrator(gradient=gradient)
        model.zero_grad()
        u.grad = None
        model(u, t).square().sum().backward()
        grads[gradient] = [u.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["backprop"], grads["adjoint"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
