"""Certificates, attacks and Lipschitz lower bounds agree on a small trained LBEN.

A certified-correct point that PGD breaks would mean a wrong certificate or an infeasible attack;
a lower bound above γ would mean a wrong bound (or a solve too loose for the bound to hold).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lben_ode import LBEN, Normalization
from lben_ode.robustness import certified_correct, certify, empirical_lipschitz, jacobian_norm, pgd_attack

GAMMA = 1.0
NORM = Normalization(mean=(0.5,), std=(0.2,))  # raw inputs in [0, 1]; model units stretch by 5


@pytest.fixture(scope="module")
def trained() -> tuple[LBEN, torch.Tensor, torch.Tensor]:
    """An LBEN (γ = 1 in model units) trained on three separable blobs in the unit square."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.25, 0.3], [0.75, 0.3], [0.5, 0.75]], dtype=torch.float64)
    labels = torch.arange(3).repeat(50)
    x_raw = (centers[labels] + 0.08 * torch.randn(150, 2, generator=gen, dtype=torch.float64)).clamp(0, 1)
    model = LBEN(2, 3, 12, gamma=GAMMA, tol=1e-5).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    x_model = NORM.to_model(x_raw)
    for _ in range(80):
        optimizer.zero_grad()
        F.cross_entropy(model(x_model), labels).backward()
        optimizer.step()
    # Evaluate with a tight solve, so the computed map obeys the bound to ~1e-10.
    model.set_solver("pr", tol=1e-10, max_iter=3000)
    model.eval()
    return model, x_raw, labels


def test_certified_points_are_never_broken(trained) -> None:
    model, x_raw, labels = trained
    eps = [0.05, 0.15, 0.3]  # raw units
    gen = torch.Generator().manual_seed(1)
    result = certify(model, x_raw, labels, eps, NORM)
    assert result.clean_accuracy > 0.95
    assert result.gamma == pytest.approx(GAMMA / 0.2)
    with torch.no_grad():
        logits = model(NORM.to_model(x_raw))
    # Certificates taken in model units but read as raw units (the unit error of DESIGN §7).
    wrong_units = certified_correct(logits, labels, GAMMA, eps, input_scale=1.0)
    n_wrong_broken = 0
    for j, e in enumerate(eps):
        certified = result.radius.gt(e) & result.correct
        assert float(certified.double().mean()) == pytest.approx(result.certified_accuracy[j])
        attack = pgd_attack(model, x_raw, labels, e, NORM, steps=25, restarts=2, generator=gen)
        assert not bool((certified & ~attack.robust).any()), f"certified point broken at eps={e}"
        # Certified accuracy is a lower bound, attack accuracy an upper bound, clean accuracy the top.
        assert result.certified_accuracy[j] <= attack.robust_accuracy <= result.clean_accuracy
        n_wrong_broken += int((wrong_units[:, j] & ~attack.robust).sum())
    assert 0 < result.certified_accuracy[1] and result.certified_accuracy[-1] < result.clean_accuracy
    # The attack is strong enough to expose certificates in the wrong units.
    assert n_wrong_broken > 0


def test_lipschitz_lower_bounds_stay_below_gamma(trained) -> None:
    model, x_raw, _ = trained
    x_model = NORM.to_model(x_raw)
    jac = jacobian_norm(model, x_model, batch_size=64)
    estimate = empirical_lipschitz(model, x_model[:40], restarts=1, steps=50,
                                   generator=torch.Generator().manual_seed(2))
    assert float(jac.max()) <= GAMMA * (1 + 1e-7)
    assert estimate.value <= GAMMA * (1 + 1e-7)
    # Training pushes the map towards its bound: the lower bounds are far from trivial.
    assert estimate.value >= 0.98 * float(jac.max()) > 0.5 * GAMMA
