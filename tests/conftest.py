"""Independent float64 references shared by the core-library tests.

Nothing here calls lben_ode: the equilibria, residuals and error bounds are computed from the
explicit matrices with plain torch in float64, so they can check the library's solvers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

Elementwise = Callable[[torch.Tensor], torch.Tensor]


def reference_activation(name: str, negative_slope: float = 0.01) -> tuple[Elementwise, Elementwise]:
    """σ and σ' written directly with torch, for the activations an LBEN accepts."""
    if name == "relu":
        return (lambda v: v.clamp_min(0.0), lambda v: (v > 0).to(v.dtype))
    if name == "leaky_relu":
        s = negative_slope
        return (
            lambda v: torch.where(v > 0, v, s * v),
            lambda v: torch.where(v > 0, torch.ones_like(v), torch.full_like(v, s)),
        )
    if name == "tanh":
        return (torch.tanh, lambda v: 1.0 / torch.cosh(v) ** 2)
    if name == "sigmoid":
        return (lambda v: 1.0 / (1.0 + torch.exp(-v)), lambda v: torch.exp(-v) / (1.0 + torch.exp(-v)) ** 2)
    if name == "softplus":
        return (F.softplus, torch.sigmoid)
    raise ValueError(f"no reference for activation {name!r}")


@dataclass
class Reference:
    """Float64 reference computations on explicit weights (``z`` and injections are ``(batch, n)``)."""

    def residual(self, W: torch.Tensor, injection: torch.Tensor, z: torch.Tensor, sigma: Elementwise) -> torch.Tensor:
        """Per-sample relative residual ‖z − σ(Wz + b)‖ / ‖z‖ in float64."""
        W, injection, z = W.double(), injection.double(), z.double()
        r = (z - sigma(z @ W.T + injection)).norm(dim=1)
        return r / z.norm(dim=1).clamp_min(1e-300)

    def equilibrium(
        self,
        W: torch.Tensor,
        injection: torch.Tensor,
        activation: tuple[Elementwise, Elementwise],
        tol: float = 1e-12,
        max_iter: int = 200,
    ) -> torch.Tensor:
        """z* of ``z = σ(Wz + b)`` by (semismooth) Newton with a backtracking line search on ‖F‖.

        Uses ``F(z) = z − σ(Wz + b)`` and ``J = I − diag(σ'(Wz + b)) W`` (invertible for every
        slope in [0, 1] when the model is well-posed). Fails the calling test if it does not reach
        ``tol`` (absolute-plus-relative), so a bad reference can never pass silently.
        """
        sigma, dsigma = activation
        W, b = W.double(), injection.double()
        n = W.shape[0]
        eye = torch.eye(n, dtype=W.dtype)

        def fmap(z: torch.Tensor) -> torch.Tensor:
            return z - sigma(z @ W.T + b)

        z = torch.zeros_like(b)
        f = fmap(z)
        for _ in range(max_iter):
            fnorm = f.norm(dim=1)
            if bool((fnorm <= tol * (1.0 + z.norm(dim=1))).all()):
                return z
            jac = eye - dsigma(z @ W.T + b)[:, :, None] * W
            step = torch.linalg.solve(jac, -f)
            t = torch.ones(z.shape[0], dtype=z.dtype)
            accepted = torch.zeros(z.shape[0], dtype=torch.bool)
            z_new, f_new = z, f
            for _ in range(60):
                cand = z + t[:, None] * step
                f_cand = fmap(cand)
                ok = (f_cand.norm(dim=1) <= (1 - 1e-4 * t) * fnorm) & ~accepted
                z_new = torch.where(ok[:, None], cand, z_new)
                f_new = torch.where(ok[:, None], f_cand, f_new)
                accepted |= ok
                if bool(accepted.all()):
                    break
                t = torch.where(accepted, t, t / 2)
            # A sample whose line search failed is at the limit of float64: keep the best point.
            z, f = z_new, f_new
        fnorm = f.norm(dim=1)
        assert bool((fnorm <= tol * (1.0 + z.norm(dim=1))).all()), f"reference Newton stalled at {fnorm.max():.3g}"
        return z

    def error_constant(self, W: torch.Tensor, lam: torch.Tensor | None) -> float:
        """C with ‖z − z*‖₂ ≤ C ‖z − σ(Wz + b)‖₂ for every z (σ monotone, slope in [0, 1]).

        With e = z − z*, r the residual and s = e − r = σ(Wz+b) − σ(Wz*+b) = D W e (D diagonal in
        [0, 1]), slope restriction gives sᵀΛ(We − s) ≥ 0, hence sᵀΛ(I − W)s ≤ sᵀΛWr and
        ‖s‖_Λ ≤ (‖W̃‖/μ)‖r‖_Λ with W̃ = Λ^{½}WΛ^{-½} and μ = λ_min(sym(I − W̃)) > 0 (Condition 1).
        Then ‖e‖_Λ ≤ (1 + ‖W̃‖/μ)‖r‖_Λ and the Λ-norms cost √(λ_max/λ_min).
        """
        W = W.double()
        lam = torch.ones(W.shape[0], dtype=W.dtype) if lam is None else lam.double()
        s = lam.sqrt()
        Wt = W * s[:, None] / s[None, :]
        A = torch.eye(W.shape[0], dtype=W.dtype) - Wt
        mu = float(torch.linalg.eigvalsh((A + A.T) / 2)[0])
        assert mu > 0, "Condition 1 fails in the model's own metric"
        norm_w = float(torch.linalg.matrix_norm(Wt, ord=2))
        return (1.0 + norm_w / mu) * float((lam.max() / lam.min()).sqrt())

    def check_model(
        self, model: torch.nn.Module, x: torch.Tensor, tol: float, slack: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve with ``model`` and check it against the reference; returns (z flattened, error bound).

        Checks: the solver reports convergence with residual ≤ tol; the float64 residual of the
        returned z is ≤ tol + slack (slack only for float32 rounding of the solver's own residual);
        and ‖z − z*‖ ≤ C·‖residual‖ with C from :meth:`error_constant`, z* from Newton.
        """
        with torch.no_grad():
            z = model.equilibrium(x)
        stats = model.solver_stats["forward"]
        assert stats.converged.shape == (x.shape[0],)
        assert bool(stats.converged.all()), stats
        assert bool((stats.residual <= tol).all()), stats
        weights = model.explicit_weights()
        # Convolutional models' explicit weights act on inputs and states flattened in (C, H, W) order.
        z = z.flatten(1)
        injection = x.double().flatten(1) @ weights.U.double().T + weights.b_z.double()
        act = activation_of(model)
        residual = self.residual(weights.W, injection, z, act[0])
        assert bool((residual <= tol + slack).all()), (residual.max(), tol, slack)
        z_ref = self.equilibrium(weights.W, injection, act)
        C = self.error_constant(weights.W, weights.lam)
        bound = C * residual * z.double().norm(dim=1) + 1e-10 * (1 + z_ref.norm(dim=1))
        error = (z.double() - z_ref).norm(dim=1)
        assert bool((error <= bound).all()), (error, bound)
        return z, bound

    def check_float32_model(self, model: torch.nn.Module, x: torch.Tensor, tol: float) -> None:
        """:meth:`check_model` for a float32 model at its own settings: no ConvergenceWarning may be
        raised, and the float64 residual may exceed ``tol`` only by float32 rounding of the solver's
        own residual, about n·eps₃₂·(‖W‖‖z‖ + ‖b‖)/‖z‖."""
        from lben_ode import ConvergenceWarning

        W = model.explicit_weights().W.double()
        slack = W.shape[0] * torch.finfo(torch.float32).eps * (float(torch.linalg.matrix_norm(W, ord=2)) + 10.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            self.check_model(model, x, tol, slack)


def activation_of(model: torch.nn.Module) -> tuple[Elementwise, Elementwise]:
    """The reference σ, σ' for a model's activation (read from its name and slope only)."""
    act = model.activation
    return reference_activation(act.name, getattr(act, "negative_slope", 0.01))


def small_model(
    kind: str,
    activation: str,
    kwargs: dict,
    seed: int,
    solver: str,
    *,
    sizes: tuple[int, int, int] = (5, 3, 12),
    bias_mean: float = 0.0,
    **options,
) -> torch.nn.Module:
    """A float64 model (``sizes``: inputs, outputs, width) with random biases ``b_z`` of mean
    ``bias_mean`` and, for LBENs, a random Λ.

    ``kind`` is ``lben_gamma`` (γ = 1), ``lben_unconstrained`` (γ = None) or ``mondeq``. The margin
    is 1 so that forward-backward's provably safe step keeps the tests fast. ``options`` go to the
    solver.
    """
    from lben_ode import LBEN, MonDEQ
    from lben_ode.activations import get_activation

    torch.manual_seed(seed)
    act = get_activation(activation, **kwargs)
    if kind == "mondeq":
        model = MonDEQ(*sizes, activation=act, margin=1.0, solver=solver, **options)
    else:
        gamma = 1.0 if kind == "lben_gamma" else None
        model = LBEN(*sizes, gamma=gamma, activation=act, margin=1.0, solver=solver, **options)
        with torch.no_grad():
            model.log_lambda.uniform_(-1.0, 1.0)
    with torch.no_grad():
        model.b_z.normal_(mean=bias_mean)
    return model.double()


@pytest.fixture
def small_model_factory() -> Callable[..., torch.nn.Module]:
    """:func:`small_model`."""
    return small_model


def write_synthetic_mnist(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Four gzipped MNIST IDX files of random images and labels in ``folder``; returns ``folder``."""
    from lben_ode.datasets import write_idx

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


@pytest.fixture
def synthetic_mnist() -> Callable[..., Path]:
    """:func:`write_synthetic_mnist`."""
    return write_synthetic_mnist


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run a test on one CPU thread, restoring the setting after.

    The core-library tests solve tiny problems, for which one thread is fastest; with two, each
    small matmul pays for thread hand-offs, which gets very slow when the machine is busy.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def reference() -> Reference:
    """Float64 reference equilibria, residuals and error bounds."""
    return Reference()


@pytest.fixture
def activation_reference() -> Callable[..., tuple[Elementwise, Elementwise]]:
    """``reference_activation(name, negative_slope=...)``: σ and σ' written with plain torch."""
    return reference_activation
