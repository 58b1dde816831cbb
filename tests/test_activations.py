"""Activations: monotone with slope in [0, 1], correct derivatives, and accurate proximal maps."""

from __future__ import annotations

import pytest
import torch

from lben_ode import activations
from lben_ode.activations import Activation, LeakyReLU, LinearSlopes, get_activation

pytestmark = pytest.mark.usefixtures("single_thread")

CASES = [("relu", {}), ("leaky_relu", {"negative_slope": 0.1}), ("tanh", {}), ("sigmoid", {}), ("softplus", {})]
IDS = [name for name, _ in CASES]
ALPHAS = [1e-3, 0.02, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0]


def test_available_names():
    assert activations.available() == ["leaky_relu", "relu", "sigmoid", "softplus", "tanh"]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_values_match_the_reference_formula(name, kwargs, activation_reference):
    act = get_activation(name, **kwargs)
    v = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    sigma, dsigma = activation_reference(name, **kwargs)
    torch.testing.assert_close(act(v), sigma(v), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(act.derivative(v), dsigma(v), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_derivative_matches_autograd_away_from_kinks(name, kwargs):
    act = get_activation(name, **kwargs)
    v = torch.randn(500, dtype=torch.float64) * 4
    v = v[v.abs() > 1e-6].requires_grad_()
    (grad,) = torch.autograd.grad(act(v).sum(), v)
    torch.testing.assert_close(act.derivative(v.detach()), grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_monotone_with_slope_at_most_one(name, kwargs):
    act = get_activation(name, **kwargs)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, generator=g, dtype=torch.float64) * 10
    gaps = torch.logspace(-6, 1, 20000, dtype=torch.float64)
    b = a + torch.randn(20000, generator=g, dtype=torch.float64).abs() * gaps
    slope = (act(b) - act(a)) / (b - a)
    assert float(slope.min()) >= 0.0
    assert float(slope.max()) <= 1.0 + 1e-9
    d = act.derivative(a)
    assert float(d.min()) >= 0.0 and float(d.max()) <= 1.0


def prox_reference(act: Activation, a: torch.Tensor, alpha: float) -> torch.Tensor:
    """prox_{αf}(a) = σ(v) with v solving (1 − α)σ(v) + αv = a, by 200 bisection steps in float64.

    The left side is increasing in v, so any bracket where it changes sign holds the root; the
    sign change is asserted rather than assumed.
    """

    def g(v: torch.Tensor) -> torch.Tensor:
        return (1 - alpha) * act(v) + alpha * v - a

    width = 4 * (a.abs() + 10) * max(alpha, 1.0) / min(alpha, 1.0)
    lo, hi = a - width, a + width
    assert bool((g(lo) < 0).all()) and bool((g(hi) > 0).all())
    for _ in range(200):
        mid = (lo + hi) / 2
        below = g(mid) < 0
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return act((lo + hi) / 2)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_prox_solves_its_defining_equation(name, kwargs, alpha):
    act = get_activation(name, **kwargs)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4000, generator=g, dtype=torch.float64) * torch.logspace(-3, 1.7, 4000, dtype=torch.float64)
    z = act.prox(a, alpha)
    expected = prox_reference(act, a, alpha)
    # float64: the prox must be accurate to rounding, for every α (tiny α is what forward-backward
    # uses with the model's safe step).
    torch.testing.assert_close(z, expected, rtol=1e-10, atol=1e-12)
    # In float32 it is accurate to a few ulps of the value's scale.
    z32 = act.prox(a.float(), alpha).double()
    assert float(((z32 - expected).abs() / (expected.abs() + 1)).max()) < 1e-5


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_prox_with_unit_step_is_the_activation(name, kwargs):
    act = get_activation(name, **kwargs)
    a = torch.randn(100, dtype=torch.float64) * 5
    # (leaky ReLU's closed form divides by 1/s where σ multiplies by s: equal up to one ulp)
    torch.testing.assert_close(act.prox(a, 1.0), act(a), rtol=3e-16, atol=0)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_prox_is_nonexpansive(name, kwargs, alpha):
    act = get_activation(name, **kwargs)
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2000, generator=g, dtype=torch.float64) * 5
    b = a + torch.randn(2000, generator=g, dtype=torch.float64) * 0.5
    assert bool(((act.prox(a, alpha) - act.prox(b, alpha)).abs() <= (a - b).abs() * (1 + 1e-9) + 1e-12).all())


@pytest.mark.parametrize("slope", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_leaky_relu_closed_form_prox_equals_the_generic_one(slope, alpha):
    act = LeakyReLU(slope)
    a = torch.linspace(-20, 20, 801, dtype=torch.float64)
    torch.testing.assert_close(act.prox(a, alpha), Activation.prox(act, a, alpha), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(act.prox(a, alpha), prox_reference(act, a, alpha), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_linear_slopes_prox(alpha):
    d = torch.tensor([0.0, 1e-3, 0.3, 0.7, 1.0], dtype=torch.float64)
    act = LinearSlopes(d)
    a = torch.randn(6, 5, dtype=torch.float64)
    z = act.prox(a, alpha)
    # (1 − α) z + α z / d = a where d > 0, and z = 0 where d = 0 (f is then the indicator of {0}).
    pos = d > 0
    torch.testing.assert_close(((1 - alpha) * z + alpha * z / d)[:, pos], a[:, pos], rtol=1e-12, atol=1e-12)
    assert bool((z[:, ~pos] == 0).all())
    torch.testing.assert_close(act(a), a * d)
    torch.testing.assert_close(act.derivative(a), d.expand_as(a))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 1.0, 3.0])
@pytest.mark.parametrize(
    "act",
    [*(get_activation(n, **k) for n, k in CASES), LeakyReLU(0.0), LeakyReLU(1.0), LinearSlopes(torch.rand(7, 9))],
    ids=[*IDS, "leaky_relu_0", "leaky_relu_1", "linear_slopes"],
)
def test_reflected_prox_is_twice_the_prox_minus_the_input_plus_the_shift(act, alpha):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(7, 9, generator=g, dtype=torch.float64) * 4
    shift = torch.randn(7, 9, generator=g, dtype=torch.float64)
    if isinstance(act, LinearSlopes):
        act.slopes = act.slopes.double()
    # The prox by bisection on its defining equation, independent of every closed form.
    expected = 2 * prox_reference(act, a, alpha) - a + shift
    torch.testing.assert_close(act.reflected_prox(a, alpha, shift), expected, rtol=1e-10, atol=1e-10)
    # Written into `out` where the activation uses it, and equal either way; a and shift are kept.
    kept = a.clone(), shift.clone()
    out = torch.empty_like(a)
    torch.testing.assert_close(act.reflected_prox(a, alpha, shift, out=out), expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(a, kept[0]) and torch.equal(shift, kept[1])


def test_repr_names_the_activation():
    assert repr(get_activation("leaky_relu", negative_slope=0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(get_activation("tanh")) == "Tanh()"


class _Custom(Activation):
    """A user-defined σ given by two functions (the probe must judge it, not its declaration)."""

    def __init__(self, f, df) -> None:
        self.f, self.df = f, df

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.f(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return self.df(v)


@pytest.mark.parametrize(
    ("f", "df", "match"),
    [
        (torch.sin, torch.cos, "not monotone"),
        (lambda v: 5 * torch.tanh(v), lambda v: 5 / torch.cosh(v) ** 2, "steeper than 1: slope 5"),
        (lambda v: -torch.tanh(v), lambda v: -1 / torch.cosh(v) ** 2, "not monotone"),
        (lambda v: torch.tanh(v), lambda v: 2 / torch.cosh(v) ** 2, "derivative is 2 at v = 0"),
        (lambda v: torch.where(v > 50, torch.nan, torch.tanh(v)), lambda v: 1 / torch.cosh(v) ** 2, "not finite"),
        (lambda v: v[:3], lambda v: v, "elementwise"),
    ],
    ids=["sin", "5tanh", "decreasing", "wrong-derivative", "nan", "not-elementwise"],
)
def test_custom_activations_are_probed_and_refused(f, df, match) -> None:
    import lben_ode
    from lben_ode.errors import ActivationError

    act = _Custom(f, df)
    with pytest.raises(ActivationError, match=match):
        get_activation(act)
    # The model constructors go through the same probe: no model with a wrong γ is ever built.
    with pytest.raises(ActivationError, match=match):
        lben_ode.LBEN(3, 2, 4, gamma=1.0, activation=act)


def test_a_slope_restricted_custom_activation_is_accepted() -> None:
    import lben_ode

    half_tanh = _Custom(lambda v: 0.5 * torch.tanh(v), lambda v: 0.5 / torch.cosh(v) ** 2)
    assert get_activation(half_tanh) is half_tanh
    assert lben_ode.LBEN(3, 2, 4, gamma=1.5, activation=half_tanh).lipschitz_bound() == pytest.approx(1.5)
