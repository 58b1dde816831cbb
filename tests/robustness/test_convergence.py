"""No certificate, failed attack or Lipschitz lower bound from an equilibrium solve that did not converge.

An LBEN solved with ``max_iter=1`` has not found its equilibrium for any sample; its logits are an
iterate, not the γ-Lipschitz map the bound is about. Every robustness function refuses such
samples unless told ``allow_unconverged=True``, and then counts them as not certified, not robust
and outside every lower bound, reporting the converged fraction.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from lben_ode import LBEN, ConvergenceError, ConvergenceWarning
from lben_ode.robustness import (
    certified_accuracy,
    certified_correct,
    certified_radius,
    certify,
    empirical_lipschitz,
    format_table,
    jacobian_norm,
    pgd_attack,
    robustness_report,
    run_model,
)

EPS = [0.0, 0.05, 0.1]


@pytest.fixture
def unconverged() -> tuple[LBEN, torch.Tensor, torch.Tensor]:
    """An LBEN whose solver stops after one iteration, inputs, and the labels it predicts."""
    torch.manual_seed(0)
    model = LBEN(4, 3, 8, gamma=1.0, activation="tanh", solver="fb", max_iter=1, check_every=1).double().eval()
    x = torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model(x).argmax(dim=1)
    return model, x, labels


class PartlyConverged(LBEN):
    """An LBEN solved tightly whose stats then mark the samples in ``self.unconverged`` as not converged."""

    unconverged: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        stats = self.solver_stats["forward"]
        stats.converged = stats.converged & ~self.unconverged[: x.shape[0]]
        return y


def test_run_model_reads_the_forward_solve(unconverged) -> None:
    model, x, _ = unconverged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = run_model(model, x)
    assert out.converged.shape == (12,) and not bool(out.converged.any())
    model.set_solver("pr", tol=1e-10, max_iter=2000)
    assert bool(run_model(model, x).converged.all())
    plain = torch.nn.Linear(4, 3).double()  # no equilibrium: an exact map
    assert bool(run_model(plain, x).converged.all())


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_certify_refuses_or_does_not_count_unconverged_samples(unconverged) -> None:
    model, x, labels = unconverged
    with torch.no_grad():
        logits = model(x)
    # The margins alone would certify every sample at ε = 0: the refusal is what keeps it honest.
    assert bool(certified_correct(logits, labels, 1.0, [0.0]).all())
    with pytest.raises(ConvergenceError, match=r"12 of 12 samples.*allow_unconverged=True"):
        certify(model, x, labels, EPS)
    result = certify(model, x, labels, EPS, allow_unconverged=True)
    assert result.certified_accuracy == (0.0, 0.0, 0.0)
    assert result.converged_fraction == 0.0 and result.mean_radius == 0.0
    assert result.as_dict()["converged_fraction"] == 0.0
    assert result.clean_accuracy == 1.0  # what the model outputs, which is not a certificate
    converged = model.solver_stats["forward"].converged
    assert certified_accuracy(logits, labels, 1.0, EPS, converged=converged).tolist() == [0.0, 0.0, 0.0]


def test_certified_accuracy_counts_exactly_the_converged_samples() -> None:
    torch.manual_seed(1)
    model = PartlyConverged(4, 3, 8, gamma=1.0, tol=1e-10, max_iter=2000).double().eval()
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model.unconverged = torch.zeros(10, dtype=torch.bool)
    with torch.no_grad():
        logits = model(x)
    labels = logits.argmax(dim=1)
    model.unconverged = torch.arange(10) % 3 == 0
    with pytest.raises(ConvergenceError, match="4 of 10 samples"):
        certify(model, x, labels, EPS)
    result = certify(model, x, labels, EPS, allow_unconverged=True)
    # Independent count: correct (all are) and converged and margin / (√2 γ) > ε.
    top2 = logits.topk(2, dim=1).values
    radius = (top2[:, 0] - top2[:, 1]) / (2 ** 0.5)
    expected = [float(((radius > e) & ~model.unconverged).double().mean()) for e in EPS]
    assert list(result.certified_accuracy) == pytest.approx(expected, abs=1e-15)
    assert expected[0] == pytest.approx(0.6)
    assert result.converged_fraction == pytest.approx(0.6)
    assert result.converged.tolist() == (~model.unconverged).tolist()
    assert torch.allclose(result.radius, certified_radius(logits, 1.0))


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_attack_refuses_or_does_not_count_unconverged_samples(unconverged) -> None:
    model, x, labels = unconverged
    with pytest.raises(ConvergenceError, match="pgd_attack"):
        pgd_attack(model, x, labels, 0.1, steps=2, restarts=1)
    result = pgd_attack(model, x, labels, 0.1, steps=2, restarts=1, allow_unconverged=True)
    assert not bool(result.robust.any()) and result.converged_fraction == 0.0
    assert bool(result.clean_correct.all())
    zero = pgd_attack(model, x, labels, 0.0, allow_unconverged=True)
    assert not bool(zero.robust.any())


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_lipschitz_bounds_leave_out_unconverged_solves(unconverged) -> None:
    model, x, _ = unconverged
    with pytest.raises(ConvergenceError, match="empirical_lipschitz"):
        empirical_lipschitz(model, x, restarts=1, steps=3)
    estimate = empirical_lipschitz(model, x, restarts=1, steps=3, allow_unconverged=True)
    assert estimate.converged_fraction == 0.0
    assert estimate.value != estimate.value  # NaN: no pair is a valid lower bound
    with pytest.raises(ConvergenceError, match="jacobian_norm"):
        jacobian_norm(model, x)
    assert bool(jacobian_norm(model, x, allow_unconverged=True).isnan().all())


def test_jacobian_norm_checks_the_adjoint_solves_too() -> None:
    torch.manual_seed(2)
    model = LBEN(4, 3, 8, gamma=1.0, solver="pr", tol=1e-10, max_iter=2000).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    assert not bool(jacobian_norm(model, x).isnan().any())
    # Forward solves converge; adjoint solves with a one-iteration budget cannot.
    model.solver_stats = {}
    original = model.solver.solve

    def tight_forward_loose_backward(problem, z0=None):
        z, stats = original(problem, z0)
        if type(problem.activation).__name__ == "LinearSlopes":  # the adjoint equilibrium
            stats.converged = torch.zeros_like(stats.converged)
        return z, stats

    model.solver.solve = tight_forward_loose_backward
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(ConvergenceError, match="5 of 5 samples"):
            jacobian_norm(model, x)


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_report_refuses_or_carries_the_converged_fraction(unconverged) -> None:
    model, x, labels = unconverged
    settings = dict(attack_steps=2, attack_restarts=1, lipschitz_samples=4, lipschitz_steps=2)
    with pytest.raises(ConvergenceError, match="robustness_report"):
        robustness_report([("lben", model, None)], (x, labels), EPS, **settings)
    (row,) = robustness_report([("lben", model, None)], (x, labels), EPS, allow_unconverged=True, **settings)
    assert row["converged_fraction"] == 0.0 and row["certified_accuracy"] == [0.0, 0.0, 0.0]
    assert row["attack_accuracy"] == [0.0, 0.0, 0.0] and row["attack_converged_fraction"] == [0.0, 0.0, 0.0]
    assert row["lipschitz_converged_fraction"] == 0.0 and row["jacobian_converged_fraction"] == 0.0
    assert row["clean_accuracy"] == 1.0
    header, _, line = format_table([row]).splitlines()
    assert "conv %" in header and "all conv" in header
    assert line.split()[6:8] == ["0.0", "no"]
