"""The robustness table agrees with the individual evaluations, prints, and plots."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lben_ode import ConfigurationError, Normalization
from lben_ode.robustness import (
    certify,
    format_table,
    jacobian_norm,
    plot_accuracy_vs_eps,
    robustness_report,
)


@pytest.fixture
def setup(linear_classifier):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(3, generator=gen, dtype=torch.float64)
    norm_A = float(torch.linalg.matrix_norm(A, ord=2))
    bounded = linear_classifier(A, c, bound=1.5 * norm_A)
    unbounded = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.rand(20, 4, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        labels = bounded(Normalization(mean=(0.5,), std=(0.3,)).to_model(x)).argmax(dim=1)
    labels[:3] = (labels[:3] + 1) % 3
    return bounded, unbounded, norm_A, x, labels


def test_report_rows_match_direct_evaluation(setup, boundary_distance) -> None:
    bounded, unbounded, norm_A, x, labels = setup
    norm = Normalization(mean=(0.5,), std=(0.3,))
    eps = [0.0, 0.1, 0.24]
    loader = DataLoader(TensorDataset(x, labels), batch_size=7)
    rows = robustness_report(
        [("linear", bounded, norm), ("mlp", unbounded, None)], loader, eps,
        attack_steps=20, attack_restarts=1, attack_targets=2, lipschitz_samples=8, lipschitz_steps=30,
    )
    linear, mlp = rows
    expected = certify(bounded, x, labels, eps, norm)
    assert linear["certified_accuracy"] == pytest.approx(list(expected.certified_accuracy), abs=1e-15)
    assert linear["clean_accuracy"] == expected.clean_accuracy == 17 / 20
    assert linear["units"] == "raw" and mlp["units"] == "model"
    assert linear["gamma"] == 1.5 * norm_A and linear["gamma_input_units"] == pytest.approx(1.5 * norm_A / 0.3)
    # With all targets the attack on a linear map is exact: robust iff correct and farther than ε from the
    # boundary (raw logits (A / 0.3) x + c − (A / 0.3)·0.5).
    A, c = bounded.A.detach(), bounded.c.detach()
    _, dist = boundary_distance(A / 0.3, c - (A / 0.3) @ torch.full((4,), 0.5, dtype=torch.float64), x)
    correct = torch.arange(20) >= 3
    for e in eps[1:]:
        assert bool(((dist / e - 1).abs() > 0.02).all())  # no point on the fence
    expected_attack = [float((correct & (dist > e)).double().mean()) for e in eps]
    assert linear["attack_accuracy"] == expected_attack
    assert expected_attack[-1] < expected_attack[0]
    # Lipschitz figures in model units: the linear map's constant is ‖A‖₂, 1/1.5 of its bound.
    assert linear["jacobian_norm_max"] == pytest.approx(norm_A, rel=1e-12)
    assert linear["lower_bound"] <= norm_A * (1 + 1e-12)
    assert linear["tightness"] == pytest.approx(1 / 1.5, rel=1e-12)
    assert mlp["gamma"] is None and mlp["certified_accuracy"] is None and mlp["tightness"] is None
    assert mlp["jacobian_norm_max"] == pytest.approx(float(jacobian_norm(unbounded, x[:8]).max()), rel=1e-12)
    assert mlp["samples"] == mlp["attack_samples"] == 20

    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].split()[0] == "model"
    assert "cert@0.24" in lines[0] and "pgd@0.1" in lines[0]
    assert lines[2].startswith("linear") and "85.0" in lines[2]
    assert lines[3].startswith("mlp") and "—" in lines[3]


def test_report_limits_attacked_samples_and_checks_arguments(setup) -> None:
    bounded, _, _, x, labels = setup
    rows = robustness_report([("linear", bounded, None)], (x, labels), [0.2], batch_size=6, attack_samples=9,
                             attack_steps=5, attack_restarts=1, lipschitz_samples=4, lipschitz_steps=5)
    assert rows[0]["samples"] == 20 and rows[0]["attack_samples"] == 9
    with pytest.raises(ConfigurationError, match="at least one"):
        robustness_report([], (x, labels), [0.1])
    with pytest.raises(ConfigurationError, match="same eps"):
        format_table([rows[0], {**rows[0], "eps": [0.5]}])


def test_plot_writes_a_png(setup, tmp_path) -> None:
    bounded, unbounded, _, x, labels = setup
    rows = robustness_report([("linear", bounded, None), ("mlp", unbounded, None)], (x, labels),
                             [0.0, 0.2, 0.4], attack_steps=5, attack_restarts=1, lipschitz_samples=4,
                             lipschitz_steps=5)
    path = plot_accuracy_vs_eps(rows, tmp_path / "acc.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
