"""Condition 3 holds for every parameter value (checked on the explicit certificate in float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lben_ode import ContractingLBEN
from lben_ode.activations import available
from lben_ode.continuous import strict_contraction


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 7),
    m=st.integers(1, 4),
    p=st.integers(1, 4),
    activation=st.sampled_from(available()),
    alpha=st.sampled_from([0.0, 0.1, 0.5, 0.95]),
    gamma=st.sampled_from([None, 1e-3, 0.5, 1.0, 1e3]),
    learn_gamma=st.booleans(),
    log_scale=st.floats(-3.0, 2.0),
    log_lambda_scale=st.sampled_from([0.0, 1.0, 5.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_condition3_and_lben_conditions_hold_for_random_parameters(
    ct_reference, n, m, p, activation, alpha, gamma, learn_gamma, log_scale, log_lambda_scale, seed
) -> None:
    if gamma is None:
        learn_gamma = False
    model = ContractingLBEN(
        m, p, n, gamma=gamma, contraction_rate=alpha, activation=activation, learn_gamma=learn_gamma
    ).double()
    ct_reference.randomize(model, 10.0**log_scale, torch.Generator().manual_seed(seed), log_lambda_scale)
    if learn_gamma:
        # A learned γ moves: put it somewhere else than where it started.
        with torch.no_grad():
            model.log_gamma.add_(1.3)
    cert = model.certificate()
    assert cert.alpha == alpha
    assert cert.gamma == model.gain_bound()
    if gamma is not None:
        expected = gamma * (np.exp(1.3) if learn_gamma else 1.0)
        assert cert.gamma == pytest.approx(expected, rel=1e-6)  # log γ was stored in float32 first
    M = ct_reference.condition3_matrix(cert)
    assert ct_reference.largest_scaled_eigenvalue(M) < 0
    c1, c2 = ct_reference.lben_conditions(cert)
    assert c1 > 0
    if gamma is not None:
        assert c2 > 0


@pytest.mark.parametrize("gamma", [None, 1.0])
def test_float32_model_at_moderate_scale_is_certified_unscaled(ct_reference, gamma) -> None:
    """The default float32 model: the plain (unscaled) largest eigenvalue is negative."""
    worst = -np.inf
    for seed in range(20):
        torch.manual_seed(seed)
        model = ContractingLBEN(3, 2, 16, gamma=gamma)
        ct_reference.randomize(model, 1.0, torch.Generator().manual_seed(seed), 0.5)
        M = ct_reference.condition3_matrix(model.certificate())
        top = np.linalg.eigvalsh(M)[-1] / np.abs(np.linalg.eigvalsh(M)).max()
        worst = max(worst, top)
    assert worst < 0


def test_certificate_condition3_matrix_matches_the_independent_one(ct_reference) -> None:
    for gamma in (None, 2.0):
        model = ContractingLBEN(3, 2, 5, gamma=gamma, contraction_rate=0.3).double()
        ct_reference.randomize(model, 0.7, torch.Generator().manual_seed(3))
        cert = model.certificate()
        np.testing.assert_allclose(cert.condition3_matrix().numpy(), ct_reference.condition3_matrix(cert), atol=1e-12)


def test_certificate_is_detached_and_matches_the_explicit_formulas() -> None:
    """W_o, U and P as DESIGN §5 writes them, recomputed here from the free parameters."""
    model = ContractingLBEN(2, 3, 4, gamma=0.7, contraction_rate=0.2).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    cert = model.certificate()
    assert not any(t.requires_grad for t in cert[:7])
    P = model.L_P.detach() @ model.L_P.detach().T + 1e-3 * torch.eye(4, dtype=torch.float64)
    np.testing.assert_allclose(cert.P, P, atol=1e-12)

    def K(G: torch.Tensor) -> np.ndarray:  # DESIGN §5: G L⁻ᵀ with L Lᵀ = I + GᵀG (Cholesky), in numpy
        G = G.numpy()
        L = np.linalg.cholesky(np.eye(G.shape[1]) + G.T @ G)
        return G @ np.linalg.inv(L).T

    lam = model.log_lambda.detach().exp()
    C_P = np.linalg.cholesky(P.numpy())
    np.testing.assert_allclose(cert.W_o, np.sqrt(2 * 0.7 * 0.8) * K(model.G_o.detach()) @ C_P.T, atol=1e-12)
    U_expected = np.sqrt(2 * 0.7) * K(model.G_u.detach()) / lam.sqrt().numpy()[:, None]
    np.testing.assert_allclose(cert.U, U_expected, atol=1e-12)
    np.testing.assert_allclose(cert.lam, lam, atol=1e-14)


def test_strict_contraction_has_norm_below_one_and_reaches_any_contraction() -> None:
    g = torch.Generator().manual_seed(1)
    for scale in (1e-3, 1.0, 1e3):
        G = torch.randn(5, 3, generator=g, dtype=torch.float64) * scale
        s = torch.linalg.matrix_norm(G, 2)
        assert float(torch.linalg.matrix_norm(strict_contraction(G), 2)) == pytest.approx(
            float(s / (1 + s**2).sqrt()), rel=1e-10
        )
    # Every K with ‖K‖ < 1 is reached: G = K (I − KᵀK)^{-1/2} gives K(G) = K up to an orthogonal
    # factor on the right, so K(G)K(G)ᵀ = KKᵀ.
    K = torch.randn(4, 4, generator=g, dtype=torch.float64)
    K = 0.9 * K / torch.linalg.matrix_norm(K, 2)
    evals, evecs = torch.linalg.eigh(torch.eye(4, dtype=torch.float64) - K.T @ K)
    G = K @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    KG = strict_contraction(G)
    np.testing.assert_allclose(KG @ KG.T, K @ K.T, atol=1e-12)


def test_gradients_keep_the_certificate(ct_reference) -> None:
    """Plain gradient steps (no projection) on a fit keep Condition 3; γ learned moves."""
    torch.manual_seed(0)
    model = ContractingLBEN(2, 1, 6, gamma=0.5, learn_gamma=True, method="rk4", activation="tanh", step_size=0.05)
    model = model.double()
    u = torch.randn(4, 12, 2, dtype=torch.float64)
    t = torch.linspace(0, 3, 12, dtype=torch.float64)
    target = torch.sin(3 * t)[None, :, None].expand(4, 12, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(15):
        opt.zero_grad()
        loss = (model(u, t) - target).square().mean()
        loss.backward()
        opt.step()
    assert model.gain_bound() != pytest.approx(0.5)
    cert = model.certificate()
    assert ct_reference.largest_scaled_eigenvalue(ct_reference.condition3_matrix(cert)) < 0
