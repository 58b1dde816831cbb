"""The direct parameterization makes every LBEN well-posed and γ-Lipschitz (DESIGN §1).

Property-based: parameters are drawn at extreme scales, the explicit matrices are rebuilt in
float64 and Conditions 1 and 2 are checked with independent eigenvalue computations. Every check
allows only the float64 rounding that building the matrices can cause (``rounding``, an entrywise
bound), never a fixed loosened threshold; ``test_the_condition_2_check_rejects_a_wrong_construction``
shows the same checks fail for a W that drops the ΛUUᵀΛ term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lben_ode import LBEN, MonDEQ

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = torch.finfo(torch.float64).eps


@dataclass
class Draw:
    """One random LBEN: sizes, γ, margin, metric and the scales its parameters are drawn at."""

    width: int
    in_features: int
    out_features: int
    rank: int
    gamma: float | None
    margin: float
    metric: str
    scale_V: float
    scale_S: float
    scale_U: float
    scale_W_o: float
    lambda_shift: float
    lambda_spread: float
    seed: int


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """10**u for u uniform in [log10 lo, log10 hi] (hypothesis also tries the end points)."""
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda u: 10.0**u)


def draws(gamma: bool = True, metric: str | None = None) -> st.SearchStrategy[Draw]:
    """Random LBEN draws with every parameter scaled by 1e-3..1e3 and Λ shifted by ±5."""
    return st.builds(
        Draw,
        width=st.integers(1, 10),
        in_features=st.integers(1, 6),
        out_features=st.integers(1, 5),
        rank=st.integers(1, 12),
        gamma=log_uniform(1e-2, 1e2) if gamma else st.none(),
        margin=log_uniform(1e-3, 10.0),
        metric=st.sampled_from(["diagonal", "identity"]) if metric is None else st.just(metric),
        scale_V=log_uniform(1e-3, 1e3),
        scale_S=log_uniform(1e-3, 1e3),
        scale_U=log_uniform(1e-3, 1e3),
        scale_W_o=log_uniform(1e-3, 1e3),
        lambda_shift=st.floats(-5.0, 5.0),
        lambda_spread=st.floats(0.0, 3.0),
        seed=st.integers(0, 2**31 - 1),
    )


def build(draw: Draw) -> LBEN:
    """The LBEN of a draw, in float64, with its parameters overwritten at the drawn scales."""
    model = LBEN(
        draw.in_features,
        draw.out_features,
        draw.width,
        gamma=draw.gamma,
        margin=draw.margin,
        metric=draw.metric,
        rank=draw.rank,
    ).double()
    g = torch.Generator().manual_seed(draw.seed)

    def normal(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=torch.float64)

    with torch.no_grad():
        model.V.copy_(draw.scale_V * normal(model.V))
        model.S.copy_(draw.scale_S * normal(model.S))
        model.U.copy_(draw.scale_U * normal(model.U))
        model.W_o.copy_(draw.scale_W_o * normal(model.W_o))
        if draw.metric == "diagonal":
            model.log_lambda.copy_(draw.lambda_shift + draw.lambda_spread * normal(model.log_lambda))
    return model


def jacobi_min_eigenvalue(M: torch.Tensor, rounding: torch.Tensor) -> tuple[float, float]:
    """λ_min of D M D with D = diag(M)^{-½}, and the bound ‖D·rounding·D‖_F on its float64 error.

    The congruence D·D keeps the sign of every eigenvalue (Sylvester), so M ≻ 0 iff D M D ≻ 0, and
    the scaled matrix has a unit diagonal: rounding is measured against entries of order one
    whatever the scales of the parameters.
    """
    diag = torch.diagonal(M)
    assert bool((diag > 0).all()), "a positive definite matrix has a positive diagonal"
    d = diag.rsqrt()
    scaled = d[:, None] * M * d[None, :]
    lam_min = float(torch.linalg.eigvalsh((scaled + scaled.T) / 2)[0])
    error = float(torch.linalg.matrix_norm(d[:, None] * rounding * d[None, :]))
    return lam_min, error


def condition_matrices(W, U, W_o, lam, gamma):
    """Condition 1's ``2Λ − ΛW − WᵀΛ`` and Condition 2's block matrix, in float64."""
    Lam = torch.diag(lam)
    c1 = 2 * Lam - Lam @ W - W.T @ Lam
    if gamma is None:
        return c1, None
    nx = U.shape[1]
    top = torch.cat([c1 - W_o.T @ W_o / gamma, -Lam @ U], dim=1)
    bottom = torch.cat([-U.T @ Lam, gamma * torch.eye(nx, dtype=W.dtype)], dim=1)
    return c1, torch.cat([top, bottom], dim=0)


def rounding_bounds(model: LBEN, W: torch.Tensor, lam: torch.Tensor):
    """Entrywise bounds on the float64 rounding in Condition 1's and Condition 2's matrices.

    Building H, then W = I − Λ⁻¹H, then ``2Λ − ΛW − WᵀΛ`` and the blocks rounds each entry by
    at most k·eps times the sum of the absolute values that enter it (k counts the terms of the
    longest dot product, doubled for safety).
    """
    V, S, U, W_o = (t.detach() for t in (model.V, model.S, model.U, model.W_o))
    gamma = model.lipschitz_bound()
    k = 2 * (max(V.shape[0], W.shape[0], U.shape[1], W_o.shape[0]) + 8)
    absH = V.abs().T @ V.abs() + model.margin * torch.eye(W.shape[0], dtype=W.dtype) + S.abs() + S.abs().T
    lam_u = (lam[:, None] * U).abs()
    if gamma is not None:
        absH = absH + (W_o.abs().T @ W_o.abs() + lam_u @ lam_u.T) / gamma
    Lam = torch.diag(lam)
    c1 = k * EPS * (2 * absH + 2 * Lam + Lam @ W.abs() + W.abs().T @ Lam)
    if gamma is None:
        return c1, None
    nx = U.shape[1]
    top = torch.cat([c1 + k * EPS * W_o.abs().T @ W_o.abs() / gamma, k * EPS * lam_u], dim=1)
    bottom = torch.cat([k * EPS * lam_u.T, k * EPS * gamma * torch.eye(nx, dtype=W.dtype)], dim=1)
    return c1, torch.cat([top, bottom], dim=0)


def check_conditions(model: LBEN, W: torch.Tensor | None = None) -> None:
    """Assert Conditions 1 and 2 (when γ is set) for the model, or for a substitute W."""
    weights = model.explicit_weights()
    W = weights.W if W is None else W
    lam, U, W_o = weights.lam, weights.U, weights.W_o
    gamma = model.lipschitz_bound()
    c1, c2 = condition_matrices(W, U, W_o, lam, gamma)
    r1, r2 = rounding_bounds(model, W, lam)

    lam_min, err = jacobi_min_eigenvalue(c1, r1)
    assert lam_min > -err, ("Condition 1", lam_min, err)
    if gamma is None:
        # Exactly VᵀV + mI: its smallest eigenvalue is at least the margin.
        assert float(torch.linalg.eigvalsh((c1 + c1.T) / 2)[0]) >= model.margin - float(torch.linalg.matrix_norm(r1))
        return
    lam_min, err = jacobi_min_eigenvalue(c2, r2)
    assert lam_min > -err, ("Condition 2", lam_min, err)
    # Its Schur complement is exactly VᵀV + mI ⪰ mI.
    Lu = lam[:, None] * U
    schur = c2[: W.shape[0], : W.shape[0]] - Lu @ Lu.T / gamma
    schur_err = float(torch.linalg.matrix_norm(r2[: W.shape[0], : W.shape[0]])) + float(
        torch.linalg.matrix_norm(4 * EPS * U.shape[1] * Lu.abs() @ Lu.abs().T / gamma)
    )
    assert float(torch.linalg.eigvalsh((schur + schur.T) / 2)[0]) >= model.margin - schur_err


@settings(max_examples=300, deadline=None)
@given(draws(gamma=True))
def test_conditions_1_and_2_hold_for_every_parameter_value(draw):
    model = build(draw)
    weights = model.explicit_weights()
    assert weights.W.dtype == torch.float64
    expected_lam = model.log_lambda.exp() if draw.metric == "diagonal" else torch.ones(draw.width)
    torch.testing.assert_close(weights.lam, expected_lam.double(), rtol=1e-15, atol=0)
    # γ is stored as a float32 log γ buffer: the bound the model certifies (and builds W with) is
    # the requested γ to float32 precision.
    assert math.isclose(model.lipschitz_bound(), draw.gamma, rel_tol=4 * torch.finfo(torch.float32).eps)
    check_conditions(model)


@settings(max_examples=150, deadline=None)
@given(draws(gamma=False))
def test_condition_1_holds_for_the_unconstrained_lben(draw):
    model = build(draw)
    assert model.lipschitz_bound() is None
    check_conditions(model)


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(1, 10),
    margin=log_uniform(1e-3, 10.0),
    scale_A=log_uniform(1e-3, 1e3),
    scale_B=log_uniform(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_condition_1_holds_for_mondeq(width, margin, scale_A, scale_B, seed):
    model = MonDEQ(3, 2, width, margin=margin).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.A.copy_(scale_A * torch.randn(width, width, generator=g, dtype=torch.float64))
        model.B.copy_(scale_B * torch.randn(width, width, generator=g, dtype=torch.float64))
    W, lam = model.explicit_weights().W, model.explicit_weights().lam
    torch.testing.assert_close(lam, torch.ones(width, dtype=torch.float64))
    eye = torch.eye(width, dtype=torch.float64)
    c1 = 2 * eye - W - W.T  # = 2AᵀA + 2mI
    A, B = model.A.detach(), model.B.detach()
    rounding = 4 * (width + 4) * EPS * (2 * A.abs().T @ A.abs() + 2 * B.abs() + 2 * B.abs().T + 4 * eye)
    lam_min, err = jacobi_min_eigenvalue(c1, rounding)
    assert lam_min > -err
    assert float(torch.linalg.eigvalsh((c1 + c1.T) / 2)[0]) >= 2 * margin - float(torch.linalg.matrix_norm(rounding))


def wrong_weight(model: LBEN) -> torch.Tensor:
    """W built without the γ⁻¹ΛUUᵀΛ term of H: Condition 1 holds, Condition 2 need not."""
    lam = model.log_lambda.exp().detach()
    n = model.width
    eye = torch.eye(n, dtype=lam.dtype)
    V, S, W_o = model.V.detach(), model.S.detach(), model.W_o.detach()
    H = 0.5 * (V.T @ V + model.margin * eye + W_o.T @ W_o / model.lipschitz_bound()) + S - S.T
    return eye - H / lam[:, None]


def test_the_condition_2_check_rejects_a_wrong_construction():
    failures = 0
    for seed in range(20):
        draw = Draw(6, 4, 3, 6, 1.0, 0.1, "diagonal", 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, seed)
        model = build(draw)
        check_conditions(model)  # the right W passes on the same draw
        try:
            check_conditions(model, W=wrong_weight(model))
        except AssertionError as exc:
            assert "Condition 2" in str(exc) or "Condition 1" not in str(exc)
            failures += 1
    assert failures >= 15, failures
