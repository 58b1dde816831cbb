"""Certified radius, certified accuracy and ``certify`` on a classifier whose margins are known by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lben_ode import ConfigurationError, Normalization, ShapeError
from lben_ode.robustness import certified_accuracy, certified_radius, certify

# logits = x (A = I, c = 0), with the stated bound γ = 2 (valid: ‖I‖₂ = 1 ≤ 2).
POINTS = torch.tensor([[3.0, 1.0], [0.0, 0.5], [1.0, 2.0], [-1.0, 3.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 0, 1])  # the third point is misclassified (predicted 1)
GAMMA = 2.0
# Top-two margins 2, 0.5, 1, 4 → radii margin / (√2 γ) in model units:
RADII = [2 / (2 * math.sqrt(2)), 0.5 / (2 * math.sqrt(2)), 1 / (2 * math.sqrt(2)), 4 / (2 * math.sqrt(2))]
EPS = [0.0, 0.1, 0.5, 1.0, 1.5]
# Correct and radius > ε: ε=0 → points 1, 2, 4; 0.1 → 1, 2, 4 (0.177 > 0.1); 0.5 → 1 (0.707), 4 (1.414);
# 1.0 → 4; 1.5 → none.
CERTIFIED = [0.75, 0.75, 0.5, 0.25, 0.0]


@pytest.fixture
def identity_classifier(linear_classifier):
    return linear_classifier(torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), GAMMA)


def test_certified_radius_and_accuracy_match_hand_values() -> None:
    radius = certified_radius(POINTS, GAMMA)
    assert torch.allclose(radius, torch.tensor(RADII, dtype=torch.float64), rtol=0, atol=1e-15)
    acc = certified_accuracy(POINTS, LABELS, GAMMA, EPS)
    assert acc.tolist() == CERTIFIED


def test_certify_in_model_units(identity_classifier) -> None:
    result = certify(identity_classifier, POINTS, LABELS, EPS)
    assert result.units == "model"
    assert result.gamma == GAMMA
    assert list(result.certified_accuracy) == CERTIFIED
    assert result.clean_accuracy == 0.75
    # Misclassified points count as radius 0 in the mean.
    assert result.mean_radius == pytest.approx((RADII[0] + RADII[1] + RADII[3]) / 4, rel=1e-14)
    assert torch.allclose(result.radius, torch.tensor(RADII, dtype=torch.float64), rtol=0, atol=1e-15)
    assert result.correct.tolist() == [True, True, False, True]
    assert result.as_dict()["certified_accuracy"] == CERTIFIED


def test_certify_in_raw_units_scales_radius_and_gamma_by_std(identity_classifier) -> None:
    norm = Normalization(mean=(0.5,), std=(0.25,), raw_min=-10.0, raw_max=10.0)
    x_raw = norm.to_raw(POINTS)
    # A model-unit radius r is 0.25 r in raw units, so the raw ε at which each point drops is 4× smaller.
    eps_raw = [e * 0.25 for e in EPS]
    result = certify(identity_classifier, x_raw, LABELS, eps_raw, norm, batch_size=3)
    assert result.units == "raw"
    assert result.gamma == pytest.approx(GAMMA / 0.25, rel=1e-15)
    assert list(result.certified_accuracy) == CERTIFIED
    assert torch.allclose(result.radius, 0.25 * torch.tensor(RADII, dtype=torch.float64), rtol=1e-14, atol=0)
    # The same raw ε read as model units would certify more: units matter.
    wrong_units = certify(identity_classifier, POINTS, LABELS, eps_raw)
    assert sum(wrong_units.certified_accuracy) > sum(result.certified_accuracy)


def test_certify_with_explicit_bound_on_a_model_without_one() -> None:
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    with pytest.raises(ConfigurationError, match="no Lipschitz bound"):
        certify(model, POINTS, LABELS, EPS)
    assert list(certify(model, POINTS, LABELS, EPS, lipschitz=GAMMA).certified_accuracy) == CERTIFIED


def test_certify_rejects_bad_input(identity_classifier) -> None:
    with pytest.raises(ConfigurationError, match="eps"):
        certify(identity_classifier, POINTS, LABELS, [0.1, -0.2])
    with pytest.raises(ShapeError, match="labels"):
        certify(identity_classifier, POINTS, LABELS[:3], EPS)
    with pytest.raises(ConfigurationError, match="batch_size"):
        certify(identity_classifier, POINTS, LABELS, EPS, batch_size=0)
    with pytest.raises(ConfigurationError, match="lipschitz"):
        certify(identity_classifier, POINTS, LABELS, EPS, lipschitz=-1.0)


def test_certified_accuracy_and_correct_refuse_bad_radii_and_labels() -> None:
    from lben_ode.robustness import certified_correct

    for bad in ([0.1, -0.2], -0.5, [float("nan")], []):
        with pytest.raises(ConfigurationError, match="eps"):
            certified_accuracy(POINTS, LABELS, GAMMA, bad)
        with pytest.raises(ConfigurationError, match="eps"):
            certified_correct(POINTS, LABELS, GAMMA, bad)
    with pytest.raises(ShapeError, match=r"class indices in \[0, 1\], got \[2, -1\]"):
        certified_accuracy(POINTS, torch.tensor([0, 2, -1, 1]), GAMMA, EPS)
    with pytest.raises(ShapeError, match="integer"):
        certified_accuracy(POINTS, LABELS.double(), GAMMA, EPS)
    with pytest.raises(ShapeError, match="converged"):
        certified_accuracy(POINTS, LABELS, GAMMA, EPS, converged=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ConfigurationError, match="gamma"):
        certified_accuracy(POINTS, LABELS, -1.0, EPS)
