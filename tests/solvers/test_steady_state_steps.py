"""The ODE solver's automatic fixed step: the predicted decay against independent float64 computations."""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

from lben_ode import LBEN
from lben_ode.activations import get_activation
from lben_ode.models.dense_operator import EXACT_CONSTANTS_MAX_WIDTH
from lben_ode.solvers import FixedPointProblem, get_solver
from lben_ode.solvers.steady_state_steps import STABILITY_POLYNOMIALS, numerical_range_box, steady_state_step

pytestmark = pytest.mark.usefixtures("single_thread")


def _metric_matrix(model: LBEN) -> torch.Tensor:
    weights = model.explicit_weights()
    W, s = weights.W.double(), weights.lam.double().sqrt()
    return (torch.eye(W.shape[0], dtype=torch.float64) - W) * s[:, None] / s[None, :]


def test_real_spectrum_gives_eulers_optimal_step():
    # On a real interval [μ, L], explicit Euler's best step is 2/(μ + L) with factor (L − μ)/(L + μ),
    # and no other method beats it per evaluation.
    mu, L = 0.5, 4.0
    choice = steady_state_step(mu, L, 0.0)
    assert choice.method == "euler"
    assert choice.step_size == pytest.approx(2 / (mu + L), rel=0.05)
    assert choice.factor == pytest.approx((L - mu) / (L + mu), rel=0.05)


def test_predicted_factor_is_the_worst_over_the_box_and_decays():
    mu, l_sym, k = 0.3, 1.2, 1.5
    choice = steady_state_step(mu, l_sym, k)
    coefficients = {
        "euler": [1, 1], "midpoint": [1, 1, 0.5], "heun3": [1, 1, 0.5, 1 / 6], "rk4": [1, 1, 0.5, 1 / 6, 1 / 24]
    }[choice.method]
    # An independent dense sampling of the whole box (interior too), in float64.
    x, y = torch.meshgrid(torch.linspace(mu, l_sym, 101), torch.linspace(-k, k, 101), indexing="ij")
    z = -choice.step_size * torch.complex(x.double(), y.double())
    p = sum(c * z**j for j, c in enumerate(coefficients))
    assert float(p.abs().max()) == pytest.approx(choice.factor, rel=1e-3)
    assert choice.factor < 1
    # Euler's disc misses the rotating modes of a large K: a multi-stage method is chosen.
    assert choice.method in ("midpoint", "heun3", "rk4")


@pytest.mark.parametrize("method", sorted(STABILITY_POLYNOMIALS))
@pytest.mark.parametrize("h_lambda", [(-0.3, 0.0), (-0.5, 1.2), (-1.1, -0.7), (-0.05, 2.0)])
def test_stability_polynomial_is_torchdiffeqs_step(method, h_lambda):
    """One step of torchdiffeq's method on dy/dt = λy (λ = a + ib as a real 2×2 rotation-scaling,
    h = 1) multiplies y by the tabulated P(hλ): the table describes the methods that actually run."""
    a, b = h_lambda
    A = torch.tensor([[a, -b], [b, a]], dtype=torch.float64)
    calls = []

    def f(t, y):
        calls.append(t)
        return A @ y

    y = odeint(f, torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
               method=method, options={"step_size": 1.0})[-1]
    coefficients, stages = STABILITY_POLYNOMIALS[method]
    assert len(calls) == stages  # the evaluations per step that the decay per evaluation divides by
    p = sum(c * complex(a, b) ** j for j, c in enumerate(coefficients))
    assert float(y[0]) == pytest.approx(p.real, abs=1e-12) and float(y[1]) == pytest.approx(p.imag, abs=1e-12)


def test_no_step_for_a_box_that_is_not_monotone():
    assert steady_state_step(0.0, 1.0, 0.5) is None
    assert steady_state_step(-0.1, 1.0, 0.5) is None
    assert steady_state_step(0.1, float("nan"), 0.5) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_box_is_exact_and_holds_every_relu_linearisation(seed):
    torch.manual_seed(seed)
    model = LBEN(6, 2, 14, gamma=1.0, margin=0.5).double()
    mu, l_sym, k = model.forward_parts().operator.numerical_range_box()
    M = _metric_matrix(model)
    eig = torch.linalg.eigvalsh((M + M.T) / 2)
    assert mu == pytest.approx(float(eig[0]), rel=1e-10) and l_sym == pytest.approx(float(eig[-1]), rel=1e-10)
    assert k == pytest.approx(float(torch.linalg.matrix_norm((M - M.T) / 2, ord=2)), rel=1e-10)
    # For slopes in {0, 1}, I − DW has eigenvalue 1 (inactive units) and those of I − W on the
    # active set, a compression of M: all inside the box.
    W = model.explicit_weights().W.double()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(50):
        d = (torch.rand(14, generator=generator) < 0.6).double()
        lam = torch.linalg.eigvals(torch.eye(14, dtype=torch.float64) - d[:, None] * W)
        active = lam[(lam - 1).abs() > 1e-9]
        assert bool((active.real >= mu - 1e-9).all() and (active.real <= l_sym + 1e-9).all())
        assert bool((active.imag.abs() <= k + 1e-9).all())


def test_wide_models_estimate_the_box():
    torch.manual_seed(3)
    model = LBEN(6, 2, EXACT_CONSTANTS_MAX_WIDTH + 44, gamma=1.0, margin=1.0).double()
    mu, l_sym, k = model.forward_parts().operator.numerical_range_box()
    M = _metric_matrix(model)
    eig = torch.linalg.eigvalsh((M + M.T) / 2)
    k_exact = float(torch.linalg.matrix_norm((M - M.T) / 2, ord=2))
    assert 0.97 * float(eig[-1]) <= l_sym <= float(eig[-1]) * (1 + 1e-9)
    assert float(eig[0]) * (1 - 1e-9) <= mu <= 1.5 * float(eig[0])
    assert 0.97 * k_exact <= k <= k_exact * (1 + 1e-9)


def test_auto_converges_to_tol_with_the_chosen_method_and_falls_back_without_constants(reference):
    torch.manual_seed(4)
    model = LBEN(6, 2, 16, gamma=1.0, solver="ode", tol=1e-9).double()
    with torch.no_grad():
        model.b_z.normal_()
    x = torch.randn(8, 6, dtype=torch.float64)
    reference.check_model(model, x, 1e-9)
    operator = model.forward_parts().operator
    problem = FixedPointProblem(operator, torch.zeros(1, 16, dtype=torch.float64), model.activation)
    method, step = model.solver.integration_method(problem)
    choice = steady_state_step(*numerical_range_box(operator))
    assert (method, step) == (choice.method, choice.step_size)
    assert model.solver_stats["forward"].extra["step_size"] <= step

    class OnlyW:
        PROVIDES = frozenset()

        def __init__(self, W: torch.Tensor) -> None:
            self.W = W

        def apply(self, z: torch.Tensor) -> torch.Tensor:
            return z @ self.W.T

    half = OnlyW(0.5 * torch.eye(3, dtype=torch.float64))
    only_w = FixedPointProblem(half, torch.ones(2, 3, dtype=torch.float64), get_activation("relu"))
    solver = get_solver("ode", tol=1e-8)
    assert solver.integration_method(only_w) == ("dopri5", None)
    z, stats = solver.solve(only_w)
    assert stats.all_converged
    torch.testing.assert_close(z, torch.full((2, 3), 2.0, dtype=torch.float64), rtol=1e-6, atol=0)
    assert math.isfinite(stats.extra["integration_time"])
