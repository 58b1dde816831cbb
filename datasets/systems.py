"""Embedded input-driven systems, simulated in float64 with a fixed-step fourth-order Runge-Kutta method.

Each system is a dataclass with documented parameters, its vector field ``dx/dt = f(x, u)`` (time
in the system's time unit, NumPy arrays), its output map ``y = h(x)`` and the excitation of its
training and test records. :func:`simulate` integrates it with the classical fourth-order
Runge-Kutta method at ``substeps`` steps per sampling interval, with the input interpolated
linearly between samples (so every step sees a smooth input and the method keeps its fourth order).

- :class:`DuffingOscillator`: ``ÿ + 2ζω₀ẏ + ω₀²y + βy³ = u``, the forced, damped, hardening-spring
  oscillator that the Silverbox benchmark (Wigren & Schoukens 2013) implements as an electronic circuit.
- :class:`NonlinearRLC`: the series RLC circuit with a current-dependent inductance of Forgione &
  Piga, "Continuous-time system identification with neural networks: model structures and fitting
  criteria" (European Journal of Control, 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lben_ode.errors import ConfigurationError, ShapeError

from . import signals


@dataclass(frozen=True)
class Excitation:
    """How a system's records are excited.

    Attributes:
        band: frequency band of the training multisines and noise (cycles per time unit).
        rms: root-mean-square of the training inputs (raw units).
        test_band: band of the test records (swept sine and amplitude-ramped noise).
        test_amplitude: peak of the swept sine and final RMS of the ramped noise (raw units).
    """

    band: tuple[float, float]
    rms: float
    test_band: tuple[float, float]
    test_amplitude: float


@dataclass(frozen=True)
class DuffingOscillator:
    """Forced Duffing oscillator ``ÿ + 2ζω₀ẏ + ω₀²y + βy³ = u`` (Silverbox-like), state ``x = (y, ẏ)``.

    Nondimensional: ω₀ = 1 rad per time unit (resonance period 2π), damping ratio ζ = 0.25 (free
    oscillations decay as e^{−0.25 t}: a washout of 10 time units, 50 samples, forgets 92 % of an
    unknown initial state), hardening β = 1, so an output amplitude of 1 raises the
    stiffness by 75 %. Sampled every ``dt`` = 0.2 time units (about 31 samples per resonance
    period). ``substeps`` = 10 Runge-Kutta steps per sample: the outputs differ from a simulation
    with 40 by under 1e-6 of their standard deviation. Training inputs excite 0.02-0.5 cycles per
    unit at RMS 0.5; the test records sweep 0.01-0.4 and, like Silverbox's "arrow" test, ramp the
    amplitude up to 0.8 (above the training level).
    """

    omega0: float = 1.0
    zeta: float = 0.25
    beta: float = 1.0
    dt: float = 0.2
    excitation: Excitation = field(default_factory=lambda: Excitation((0.02, 0.5), 0.5, (0.01, 0.4), 0.8))
    substeps: int = 10
    name: str = "duffing"
    input_names: tuple[str, ...] = ("force",)
    output_names: tuple[str, ...] = ("displacement",)
    state_size: int = 2

    def vector_field(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``dx/dt`` for states ``(batch, 2)`` and inputs ``(batch, 1)``."""
        y, v = x[:, 0], x[:, 1]
        acc = u[:, 0] - 2 * self.zeta * self.omega0 * v - self.omega0**2 * y - self.beta * y**3
        return np.stack([v, acc], axis=1)

    def output(self, x: np.ndarray) -> np.ndarray:
        """The displacement ``y``: ``(batch, 1)``."""
        return x[:, :1]

    def linearization(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(A, B, C)`` of the linearisation at the origin: ``ẋ = Ax + Bu``, ``y = Cx``."""
        a = np.array([[0.0, 1.0], [-(self.omega0**2), -2 * self.zeta * self.omega0]])
        return a, np.array([[0.0], [1.0]]), np.array([[1.0, 0.0]])

    def energy(self, x: np.ndarray) -> np.ndarray:
        """Mechanical energy ``½ẏ² + ½ω₀²y² + ¼βy⁴`` per state ``(batch, 2)``; constant when ζ = 0 and u = 0."""
        y, v = x[:, 0], x[:, 1]
        return 0.5 * v**2 + 0.5 * self.omega0**2 * y**2 + 0.25 * self.beta * y**4


@dataclass(frozen=True)
class NonlinearRLC:
    """Series RLC circuit with a saturating inductor (Forgione & Piga 2021), state ``x = (v_C, i_L)``::

        dv_C/dt = i_L / C
        di_L/dt = (v_in − v_C − R i_L) / L(i_L),   L(i) = L₀ [ (0.9/π) arctan(−5(|i| − 5)) + 0.5 ]

    with C = 270 nF, R = 3 Ω, L₀ = 50 µH (their values): L falls from 0.94 L₀ at small currents to
    0.05 L₀ above about 6 A. Input v_in (V), output v_C (V). One time unit is ``time_unit`` = 10 µs,
    so the small-signal resonance (43 kHz) has a period of 2.3 units; samples every ``dt`` = 0.1
    units (1 µs). Training inputs excite 0-150 kHz (0-1.5 cycles per unit) at 80 V RMS, as in the
    paper; test inputs sweep 0-60 kHz and ramp noise of that band up to 120 V.
    ``linear=True`` freezes L at L(0) (the linearisation at the origin). Where |i_L| crosses 5 A under a
    large voltage the inductor makes the circuit stiff, hence ``substeps`` = 50 Runge-Kutta steps per
    sample: the outputs then differ from a simulation with 320 by under 1e-3 of their standard deviation.
    """

    capacitance: float = 270e-9
    resistance: float = 3.0
    inductance: float = 50e-6
    time_unit: float = 1e-5
    linear: bool = False
    dt: float = 0.1
    excitation: Excitation = field(default_factory=lambda: Excitation((0.0, 1.5), 80.0, (0.0, 0.6), 120.0))
    substeps: int = 50
    name: str = "rlc"
    input_names: tuple[str, ...] = ("v_in",)
    output_names: tuple[str, ...] = ("v_C",)
    state_size: int = 2

    def inductance_at(self, current: np.ndarray) -> np.ndarray:
        """``L(i)`` in henry for currents in ampere (``L(0)`` everywhere when ``linear``)."""
        if self.linear:
            current = np.zeros_like(current)
        return self.inductance * ((0.9 / math.pi) * np.arctan(-5.0 * (np.abs(current) - 5.0)) + 0.5)

    def vector_field(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``dx/dt`` per time unit for states ``(batch, 2)`` (V, A) and inputs ``(batch, 1)`` (V)."""
        v, i = x[:, 0], x[:, 1]
        dv = i / self.capacitance
        di = (u[:, 0] - v - self.resistance * i) / self.inductance_at(i)
        return self.time_unit * np.stack([dv, di], axis=1)

    def output(self, x: np.ndarray) -> np.ndarray:
        """The capacitor voltage ``v_C``: ``(batch, 1)``."""
        return x[:, :1]

    def linearization(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(A, B, C)`` at the origin, per time unit."""
        ell = float(self.inductance_at(np.zeros(1))[0])
        a = self.time_unit * np.array([[0.0, 1.0 / self.capacitance], [-1.0 / ell, -self.resistance / ell]])
        return a, self.time_unit * np.array([[0.0], [1.0 / ell]]), np.array([[1.0, 0.0]])


#: The embedded systems by name.
SYSTEMS: dict[str, type] = {"duffing": DuffingOscillator, "rlc": NonlinearRLC}


def simulate(
    system: DuffingOscillator | NonlinearRLC, u: np.ndarray, substeps: int | None = None, x0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``system`` for inputs sampled every ``system.dt``; returns outputs and states at the samples.

    The classical fourth-order Runge-Kutta method with ``substeps`` equal steps per sampling
    interval, in float64, with u linear between samples (the steps never straddle a sample, so the
    input each step sees is smooth). A plain NumPy loop over all records at once: the vector fields
    are a handful of operations on ``(records, 2)`` arrays, where a general ODE library's per-step
    overhead would dominate (tens of seconds instead of about one for the default records).

    Args:
        system: the system.
        u: ``(records, T, m)`` input samples (raw units).
        substeps: Runge-Kutta steps per sampling interval (step ``dt / substeps``); None: the system's.
        x0: ``(records, n)`` initial states (default zero).

    Returns:
        ``y`` ``(records, T, p)`` and ``x`` ``(records, T, n)``, float64.
    """
    u = np.asarray(u, dtype=np.float64)
    substeps = system.substeps if substeps is None else substeps
    if u.ndim != 3:
        raise ShapeError(f"u must be shaped (records, T, m), got {u.shape}")
    if not isinstance(substeps, int) or isinstance(substeps, bool) or substeps < 1:
        raise ConfigurationError(f"substeps must be an int ≥ 1, got {substeps!r}")
    records, length, _ = u.shape
    x = np.zeros((records, system.state_size)) if x0 is None else np.array(x0, dtype=np.float64)
    if x.shape != (records, system.state_size):
        raise ShapeError(f"x0 must be shaped ({records}, {system.state_size}), got {x.shape}")
    h = system.dt / substeps
    f = system.vector_field
    states = np.empty((records, length, system.state_size))
    states[:, 0] = x
    for k in range(length - 1):
        u0, du = u[:, k], (u[:, k + 1] - u[:, k]) / substeps
        for j in range(substeps):
            ua, um, ub = u0 + j * du, u0 + (j + 0.5) * du, u0 + (j + 1) * du
            k1 = f(x, ua)
            k2 = f(x + 0.5 * h * k1, um)
            k3 = f(x + 0.5 * h * k2, um)
            k4 = f(x + h * k3, ub)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        states[:, k + 1] = x
    y = system.output(states.reshape(-1, system.state_size)).reshape(records, length, -1)
    return y, states


def training_inputs(system: DuffingOscillator | NonlinearRLC, records: int, length: int, seed: int) -> np.ndarray:
    """``(records, length)`` inputs: alternately a random-phase multisine and band-limited noise."""
    rng = np.random.default_rng(seed)
    e = system.excitation
    make = (signals.multisine, signals.filtered_noise)
    return np.stack([make[r % 2](length, system.dt, e.band, e.rms, rng) for r in range(records)])


#: Names of the two test records of :func:`test_inputs`.
TEST_RECORD_NAMES = ("swept sine", "ramped noise")


def test_inputs(system: DuffingOscillator | NonlinearRLC, length: int, seed: int) -> np.ndarray:
    """``(2, length)`` test inputs unlike the training ones (:data:`TEST_RECORD_NAMES`): a swept sine,
    and band-limited noise whose amplitude ramps from 0 to beyond the training level."""
    rng = np.random.default_rng(seed + 1_000_003)
    e = system.excitation
    chirp = signals.swept_sine(length, system.dt, e.test_band, e.test_amplitude)
    noise = signals.filtered_noise(length, system.dt, e.test_band, 1.0, rng)
    # Unit-RMS noise under a 0 → test_amplitude envelope: its local RMS ends at test_amplitude.
    noise = noise * signals.ramp(length) * e.test_amplitude
    return np.stack([chirp, noise])
