"""Excitation signals for system identification: multisines, band-limited noise, swept sines.

Every function returns a float64 array ``(length,)`` sampled every ``dt`` time units and draws its
randomness from the ``numpy.random.Generator`` it is given, so a fixed seed gives a fixed signal.
Frequencies are in cycles per time unit.
"""

from __future__ import annotations

import math

import numpy as np

from lben_ode.errors import ConfigurationError


def _check_band(band: tuple[float, float], dt: float) -> tuple[float, float]:
    low, high = float(band[0]), float(band[1])
    nyquist = 0.5 / dt
    if not 0 <= low < high <= nyquist:
        raise ConfigurationError(f"frequency band must satisfy 0 ≤ low < high ≤ Nyquist ({nyquist:g}); got {band}")
    return low, high


def _scale_to_rms(x: np.ndarray, rms: float) -> np.ndarray:
    return x * (rms / math.sqrt(float(np.mean(x**2))))


def _band_bins(length: int, dt: float, band: tuple[float, float]) -> np.ndarray:
    """rfft bins (excluding DC) whose frequency lies in ``band``; at least one."""
    low, high = _check_band(band, dt)
    freqs = np.fft.rfftfreq(length, d=dt)
    bins = np.flatnonzero((freqs >= low) & (freqs <= high) & (freqs > 0))
    if bins.size == 0:
        raise ConfigurationError(
            f"no frequency line of a {length}-sample record (resolution {1 / (length * dt):g}) lies in {band}"
        )
    return bins


def multisine(length: int, dt: float, band: tuple[float, float], rms: float, rng: np.random.Generator) -> np.ndarray:
    """Random-phase multisine: equal amplitudes on every frequency line ``k / (length · dt)`` in
    ``band``, independent uniform phases, scaled to root-mean-square ``rms``. Periodic over the record."""
    spectrum = np.zeros(length // 2 + 1, dtype=np.complex128)
    bins = _band_bins(length, dt, band)
    spectrum[bins] = np.exp(2j * np.pi * rng.uniform(size=bins.size))
    return _scale_to_rms(np.fft.irfft(spectrum, n=length), rms)


def filtered_noise(
    length: int, dt: float, band: tuple[float, float], rms: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian white noise passed through an ideal band-pass filter on ``band`` (zeroing the other
    frequency lines of its discrete Fourier transform), scaled to root-mean-square ``rms``."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    keep = np.zeros(spectrum.shape, dtype=bool)
    keep[_band_bins(length, dt, band)] = True
    spectrum[~keep] = 0.0
    return _scale_to_rms(np.fft.irfft(spectrum, n=length), rms)


def swept_sine(length: int, dt: float, band: tuple[float, float], amplitude: float) -> np.ndarray:
    """Linear chirp from ``band[0]`` to ``band[1]`` over the record, peak ``amplitude``, zero phase at t = 0."""
    low, high = _check_band(band, dt)
    t = dt * np.arange(length)
    duration = dt * length
    return amplitude * np.sin(2 * np.pi * (low * t + 0.5 * (high - low) * t**2 / duration))


def ramp(length: int, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """Linear envelope from ``start`` to ``end`` (multiply a signal by it to sweep its amplitude)."""
    return np.linspace(start, end, length)
