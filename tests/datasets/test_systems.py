"""The embedded systems: equations checked against exact solutions, excitations, cache and data module."""

import dataclasses

import numpy as np
import pytest
import torch
from lben_ode.datasets import DuffingOscillator, NonlinearRLC, SimulatedSystemDataModule, simulate, simulated_arrays
from lben_ode.datasets.signals import filtered_noise, multisine, swept_sine

from lben_ode.errors import ConfigurationError, UnknownNameError


def exact_linear_response(a, b, c, u, dt):
    """y of ``ẋ = Ax + Bu, y = Cx`` from x(0) = 0 for u linear between samples: on each interval the
    augmented state (x, u, du/dt) evolves by one matrix exponential (float64, no Runge-Kutta)."""
    n, m = b.shape
    big = torch.zeros(n + 2 * m, n + 2 * m, dtype=torch.float64)
    big[:n, :n], big[:n, n : n + m] = torch.from_numpy(a), torch.from_numpy(b)
    big[n : n + m, n + m :] = torch.eye(m, dtype=torch.float64)
    step = torch.linalg.matrix_exp(big * dt)
    u = torch.from_numpy(u)  # (T, m)
    x = torch.zeros(n, dtype=torch.float64)
    out = [x]
    for k in range(u.shape[0] - 1):
        slope = (u[k + 1] - u[k]) / dt
        x = (step @ torch.cat([x, u[k], slope]))[:n]
        out.append(x)
    return (torch.stack(out) @ torch.from_numpy(c).T).numpy()


@pytest.mark.parametrize(
    "system", [DuffingOscillator(beta=0.0), NonlinearRLC(linear=True)], ids=["duffing-linear", "rlc-linear"]
)
def test_linear_case_matches_the_matrix_exponential(system):
    rng = np.random.default_rng(3)
    u = filtered_noise(300, system.dt, system.excitation.band, system.excitation.rms, rng)[:, None]
    y, _ = simulate(system, u[None], substeps=10)
    reference = exact_linear_response(*system.linearization(), u, system.dt)
    assert np.abs(y[0] - reference).max() <= 1e-7 * np.abs(reference).max()


def test_linearization_is_the_jacobian_of_the_vector_field():
    for system in (DuffingOscillator(), NonlinearRLC()):
        a, b, _ = system.linearization()
        h = 1e-6
        scale = np.array([[1.0, 1.0]]) if system.name == "duffing" else np.array([[1.0, 1e-3]])
        jac = np.stack([(system.vector_field(h * np.eye(2)[[j]] * scale, np.zeros((1, 1))) / (h * scale[0, j]))[0]
                        for j in range(2)], axis=1)
        np.testing.assert_allclose(jac, a, rtol=1e-4, atol=1e-9 * np.abs(a).max())
        np.testing.assert_allclose(system.vector_field(np.zeros((1, 2)), np.ones((1, 1)))[0], b[:, 0], rtol=1e-12)


def test_undamped_unforced_duffing_conserves_energy_to_fourth_order():
    system = DuffingOscillator(zeta=0.0)
    x0 = np.array([[1.5, 0.0], [0.2, -0.7]])
    drift = []
    for substeps in (10, 20):
        _, x = simulate(system, np.zeros((2, 250, 1)), substeps=substeps, x0=x0)
        energy = system.energy(x.reshape(-1, 2)).reshape(2, -1)
        drift.append(np.abs(energy - energy[:, :1]).max() / energy[:, 0].max())
    assert drift[0] <= 1e-6
    assert drift[0] / drift[1] > 10  # halving the step divides a fourth-order error by about 16
    # The hardening spring matters: the quartic term holds a good part of the energy at y = 1.5.
    assert 0.25 * 1.5**4 > 0.5 * system.energy(x0[:1])[0]


def test_inductance_saturates_as_documented():
    rlc = NonlinearRLC()
    ell = rlc.inductance_at(np.array([0.0, 5.0, -5.0, 50.0])) / rlc.inductance
    np.testing.assert_allclose(ell[:3], [0.9 / np.pi * np.arctan(25.0) + 0.5, 0.5, 0.5], rtol=1e-12)
    assert 0.05 < ell[3] < 0.06


def test_signals_have_the_requested_level_and_band():
    rng = np.random.default_rng(0)
    for make in (multisine, filtered_noise):
        x = make(1000, 0.2, (0.1, 0.5), 0.7, rng)
        assert np.sqrt(np.mean(x**2)) == pytest.approx(0.7, rel=1e-12)
        spectrum = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(1000, 0.2)
        outside = (freqs < 0.1) | (freqs > 0.5)
        assert spectrum[outside].max() <= 1e-9 * spectrum.max()
    assert np.abs(swept_sine(500, 0.2, (0.0, 1.0), 2.0)).max() <= 2.0
    with pytest.raises(ConfigurationError, match="Nyquist"):
        multisine(100, 0.2, (0.0, 3.0), 1.0, rng)


def test_records_are_fixed_by_seed_and_cached(tmp_path):
    kwargs = dict(train_records=2, record_length=120, test_length=100, substeps=2)
    a = simulated_arrays("duffing", seed=5, cache_dir=str(tmp_path), **kwargs)
    assert len(list(tmp_path.glob("duffing-*.npz"))) == 1
    b = simulated_arrays("duffing", seed=5, cache=False, **kwargs)  # from memory
    c = simulated_arrays("duffing", seed=6, cache=False, **kwargs)
    np.testing.assert_array_equal(a["y_train"], b["y_train"])
    assert not np.allclose(a["u_train"], c["u_train"])
    assert a["u_train"].shape == (2, 120) and a["y_test"].shape == (2, 100)
    # The test inputs are unlike the training ones: they reach beyond the training amplitude.
    assert np.abs(a["u_test"]).max() > np.abs(a["u_train"]).max()


def test_data_module_noise_only_on_training_outputs(tmp_path):
    kwargs = dict(system="duffing", train_records=2, record_length=150, test_length=150, window=40, washout=5,
                  cache_dir=str(tmp_path), substeps=2)
    clean = SimulatedSystemDataModule(**kwargs)
    noisy = SimulatedSystemDataModule(noise_std=0.1, **kwargs)
    difference = noisy.records["train"][0].y - clean.records["train"][0].y
    ratio = float(difference.std() / torch.cat([r.y for r in clean.records["train"]]).std())
    assert 0.07 < ratio < 0.13
    assert torch.equal(noisy.records["test"][0].y, clean.records["test"][0].y)
    assert [r.name for r in clean.records["test"]] == ["swept sine", "ramped noise"]
    assert clean.output_names == ["displacement"] and clean.input_size == 1


def test_unknown_system_lists_the_embedded_ones():
    with pytest.raises(UnknownNameError, match=r"duffing.*rlc"):
        SimulatedSystemDataModule(system="silverbox")
    with pytest.raises(ConfigurationError, match="noise_std"):
        SimulatedSystemDataModule(noise_std=-1.0)


def test_parameters_are_documented_dataclass_fields():
    names = {f.name for f in dataclasses.fields(NonlinearRLC)}
    assert {"capacitance", "resistance", "inductance", "time_unit"} <= names
