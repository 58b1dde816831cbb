"""Independent float64 references for the continuous-time model tests.

Nothing here calls lben_ode's continuous-time code: the Condition-3 matrix, the LBEN conditions and
a plain RK4 integrator are written from DESIGN §5 with numpy and torch, and applied to the explicit
weights the model reports.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch


def condition3_matrix(cert) -> np.ndarray:
    """The block matrix of Condition 3 (DESIGN §5) in float64 from a certificate's tensors."""
    W, U, W_o, P = (np.asarray(x.detach().double().numpy()) for x in (cert.W, cert.U, cert.W_o, cert.P))
    Lam = np.diag(cert.lam.detach().double().numpy())
    n, m = U.shape
    alpha, gamma = cert.alpha, cert.gamma
    if gamma is None:
        return np.block([[-2 * (1 - alpha) * P, P + W.T @ Lam], [P + Lam @ W, -2 * Lam]])
    return np.block(
        [
            [-2 * (1 - alpha) * P + W_o.T @ W_o / gamma, P + W.T @ Lam, np.zeros((n, m))],
            [P + Lam @ W, -2 * Lam, Lam @ U],
            [np.zeros((m, n)), U.T @ Lam, -gamma * np.eye(m)],
        ]
    )


def largest_scaled_eigenvalue(M: np.ndarray) -> float:
    """Largest eigenvalue of ``D M D`` with ``D = diag(|M_ii|^{-1/2})``.

    A congruence keeps the signs of the eigenvalues (Sylvester's law of inertia), so this is
    negative exactly when M is negative definite; the scaling removes the spread of magnitudes
    (P, Λ and γ may differ by many orders) that would otherwise hide the sign in rounding.
    """
    d = 1.0 / np.sqrt(np.abs(np.diag(M)))
    return float(np.linalg.eigvalsh(d[:, None] * M * d[None, :])[-1])


def lben_conditions(cert) -> tuple[float, float | None]:
    """Smallest scaled eigenvalues of Condition 1 and Condition 2 of DESIGN §1 (positive: they hold)."""
    W, U, W_o = (x.detach().double().numpy() for x in (cert.W, cert.U, cert.W_o))
    Lam = np.diag(cert.lam.detach().double().numpy())
    A = 2 * Lam - Lam @ W - W.T @ Lam
    c1 = -largest_scaled_eigenvalue(-A)
    if cert.gamma is None:
        return c1, None
    g = cert.gamma
    B = np.block([[A - W_o.T @ W_o / g, -Lam @ U], [-U.T @ Lam, g * np.eye(U.shape[1])]])
    return c1, -largest_scaled_eigenvalue(-B)


def rk4_reference(
    cert,
    sigma: Callable[[np.ndarray], np.ndarray],
    u_of_t: Callable[[float], np.ndarray],
    times: np.ndarray,
    z0: torch.Tensor,
    max_step: float,
) -> torch.Tensor:
    """z at ``times`` for ``dz/dt = −z + σ(Wz + U u(t) + b_z)`` by classical RK4 in float64 numpy.

    ``u_of_t(t)`` gives the input ``(batch, m)``; each interval gets equal steps of at most
    ``max_step``, and each step's stages evaluate u inside the interval (a left-limit at its right
    end), so piecewise-constant inputs are integrated without stepping across a jump.
    """
    W, U, b = (x.detach().double().numpy() for x in (cert.W, cert.U, cert.b_z))
    z = z0.detach().double().numpy()
    out = [z]

    def f(t: float, z: np.ndarray) -> np.ndarray:
        return -z + sigma(z @ W.T + u_of_t(t) @ U.T + b)

    for k in range(len(times) - 1):
        t0, t1 = float(times[k]), float(times[k + 1])
        substeps = max(1, int(np.ceil((t1 - t0) / max_step)))
        h = (t1 - t0) / substeps
        for j in range(substeps):
            s = t0 + j * h
            inner = min(s + h, t1 - 1e-12 * max(1.0, abs(t1)))
            k1 = f(s, z)
            k2 = f(s + h / 2, z + h / 2 * k1)
            k3 = f(s + h / 2, z + h / 2 * k2)
            k4 = f(inner, z + h * k3)
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(z)
    return torch.from_numpy(np.stack(out, axis=1))


def randomize(model: torch.nn.Module, scale: float, generator: torch.Generator, log_lambda_scale: float = 1.0) -> None:
    """Overwrite every free parameter with Gaussian entries of the given scale (Λ's log separately)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
            if name == "log_lambda":
                p.copy_(noise * log_lambda_scale)
            elif name != "log_gamma":
                p.copy_(noise * scale)


@pytest.fixture
def ct_reference() -> SimpleNamespace:
    """The references above: ``condition3_matrix``, ``largest_scaled_eigenvalue``,
    ``lben_conditions``, ``rk4_reference`` and ``randomize``."""
    return SimpleNamespace(
        condition3_matrix=condition3_matrix,
        largest_scaled_eigenvalue=largest_scaled_eigenvalue,
        lben_conditions=lben_conditions,
        rk4_reference=rk4_reference,
        randomize=randomize,
    )
