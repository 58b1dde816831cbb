"""Semismooth Newton for dense models with piecewise-linear activations, safeguarded by the
provably convergent forward-backward step (DESIGN §2), and the direct adjoint solve it gives.

For ``F(z) = z − σ(W z + b)`` with σ piecewise linear (relu, leaky_relu, and the linear
activation of the adjoint equilibrium), the generalised Jacobian at z is ``J = I − D W`` with
``D = diag σ'(W z + b)``, and the Newton step ``J Δ = −F(z)`` lands on the exact equilibrium of
the linear system of z's active set. When z's active set is z*'s, that is z* itself; the linear
adjoint equilibrium ``u = D(Wᵀu + g)`` has one piece, so one step solves it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..activations import Activation, LinearSlopes
from .base import IterativeSolver
from .forward_backward import FALLBACK_BUDGET, SafeStep, safe_step
from .options import COMMON_OPTIONS, Option, one_of, positive_float, positive_int
from .peaceman_rachford import PeacemanRachford
from .problem import DENSE_MATRIX, FixedPointProblem
from .registry import register
from .stats import SolverStats

#: Most matrix entries of ``I − D W`` held at once (2²⁵: 128 MiB in float32): larger batches are
#: solved in chunks of samples, so memory is ``min(batch·n², 2²⁵)`` entries twice (J and its LU).
SOLVE_CHUNK_ENTRIES = 2**25

#: Steps of a linear (adjoint) solve by default: the first is exact up to rounding, any further
#: ones are iterative refinement.
LINEAR_BUDGET = 10

#: The Peaceman-Rachford defaults used for the forward solve when ``forward="pr"``.
PR_CHECK_EVERY, PR_MAX_ITER = COMMON_OPTIONS["check_every"].default, 300


def _optional(check: Any) -> Any:
    return lambda v: v is None or check(v)


def dense_matrix(operator: Any) -> torch.Tensor:
    """The ``(n, n)`` matrix M with ``operator.apply(z) == z @ M.T`` (W, or Wᵀ for a transposed operator)."""
    return operator.W.T if getattr(operator, "transposed", False) else operator.W


def newton_direction(matrix: torch.Tensor, slopes: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Δ with ``(I − diag(d) M) Δ = −r`` for every sample, by batched LU.

    Args:
        matrix: M, ``(n, n)``.
        slopes: d = σ'(M z + b), ``(batch, n)``.
        residual: r = z − σ(M z + b), ``(batch, n)``.

    Returns:
        Δ, ``(batch, n)``. A singular system (possible only in rounding: ``I − D M`` is invertible
        for every D in [0, 1] when the model is well-posed) gives non-finite entries, never an error.
    """
    n = matrix.shape[0]
    eye = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    chunk = max(1, SOLVE_CHUNK_ENTRIES // (n * n))
    parts = []
    for start in range(0, slopes.shape[0], chunk):
        d, r = slopes[start : start + chunk], residual[start : start + chunk]
        jacobian = eye - d[:, :, None] * matrix
        # solve_ex: no check of the factorisation on the host (no sync, no error on singularity).
        delta, _ = torch.linalg.solve_ex(jacobian, -r[:, :, None])
        parts.append(delta[:, :, 0])
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class NewtonState:
    """The iteration's state; tensors are ``(batch, n)`` unless said.

    Attributes:
        z: the iterate.
        Wz: M z (kept so that no step applies M to the same z twice).
        fb_image: T(z), the safe forward-backward step from z.
        merit: ``(batch,)`` ``‖z − T(z)‖`` in the safe step's metric: it measures the distance to z*
            within the factors 1 ± ρ.
        bound: ``(batch,)`` the envelope ``κ ρᵏ m(z₀)`` after k steps, which the merit never exceeds.
        safeguarded: ``(batch,)`` steps each sample took with T instead of Newton.
        matrix: M, ``(n, n)``.
        step: the safe forward-backward step; None for a linear σ (:class:`LinearSlopes`), whose
            Newton step is a direct solve and needs no safeguard.
        rate: ρ, the factor the envelope shrinks by per step (1 without a proven rate: then a Newton
            step must reduce the merit itself).
    """

    z: torch.Tensor
    Wz: torch.Tensor
    fb_image: torch.Tensor
    merit: torch.Tensor
    bound: torch.Tensor
    safeguarded: torch.Tensor
    matrix: torch.Tensor
    step: SafeStep | None
    rate: float


@dataclass(repr=False)
class NewtonStats(SolverStats):
    """:class:`SolverStats` of a Newton solve, with ``safeguard_steps``: ``(batch,)`` steps each
    sample took with the safe forward-backward step because its Newton step did not reduce the merit
    enough (None for a forward solve delegated to Peaceman-Rachford)."""

    safeguard_steps: torch.Tensor | None = None


@register
class SemismoothNewton(IterativeSolver):
    """Semismooth Newton with a forward-backward safeguard, for dense models with a piecewise-linear σ.

    Each step, for every sample: ``v = W z + b``, ``r = z − σ(v)``, ``D = diag σ'(v)``, solve
    ``(I − D W) Δ = −r`` (a batched LU of ``(batch, n, n)``, O(batch·n³)) and propose ``z_N = z + Δ``.
    The safeguard is ``T``, the forward-backward step the model proves contracting
    (``‖T(z) − z*‖_Λ ≤ ρ‖z − z*‖_Λ``, :func:`~lben_ode.solvers.forward_backward.safe_step`), and its
    merit ``m(z) = ‖z − T(z)‖_Λ``, which T divides by at least 1/ρ and which measures the error:
    ``(1 − ρ)‖z − z*‖_Λ ≤ m(z) ≤ (1 + ρ)‖z − z*‖_Λ``. After k steps a sample takes its Newton
    proposal when ``m(z_N) ≤ κ ρᵏ⁺¹ m(z₀)`` (κ = ``slack``), and ``T(z)`` otherwise. By induction
    ``m(z_k) ≤ κ ρᵏ m(z₀)`` whichever is taken, so every sample converges at least at
    forward-backward's proven rate, wherever forward-backward does. The envelope, not the previous
    merit, is what a proposal must meet: from z = 0 Newton's first steps typically raise the merit
    a few times over (measured: at most 9× the envelope on random width-80 and 200 models) before
    falling fast, so a monotone test would reject them and leave the slow safe step to do the work.
    Near z* (and on z*'s active set at once) the Newton step is exact for piecewise-linear σ and
    is taken. The choice is a ``torch.where`` per sample: no host sync.

    Costs per step: one batched factorisation (about batch·n³/3 multiply-adds) and two products
    with W (and the loop's check); memory ``2·min(batch·n², 2²⁵)`` matrix entries (larger batches
    are solved in chunks). On a CPU one step costs about as much as 50 Peaceman-Rachford iterations
    at n = 80 and far more at n = 500, so despite 3–7 steps against 15–25 it is slower than PR there
    (``benchmarks/solvers.py``); it is for exact equilibria of small piecewise-linear models.

    **Backward.** The adjoint equilibrium ``u = D(Wᵀu + g)`` of implicit gradients has the linear
    activation :class:`~lben_ode.activations.LinearSlopes`: one Newton step from zero solves
    ``(I − D Wᵀ) u = D g`` directly (the matrix is invertible for every D in [0, 1] when the model is
    well-posed). It runs without the safeguard, so it needs no forward-backward step from the model;
    a further step, if the residual is not yet under ``tol``, is iterative refinement (at most
    ``max_iter``, by default 10). With ``forward="pr"`` the forward equilibrium is solved by
    Peaceman-Rachford instead (every activation, the ``alpha`` option), and only the adjoint by the
    direct solve: ``solver="newton", forward="pr"``.

    :attr:`NewtonStats.safeguard_steps` counts, per sample, the steps that took T.

    Needs the operator's explicit matrix (``"dense_matrix"``) and, for ``forward="newton"``, an
    activation that declares ``piecewise_linear``.
    """

    name = "newton"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "forward": Option(
            "newton",
            one_of("newton", "pr"),
            "'newton' or 'pr'",
            "how the forward equilibrium is solved: safeguarded Newton (piecewise-linear σ only) or "
            "Peaceman-Rachford (any σ); the linear adjoint equilibrium is always one direct solve",
        ),
        "slack": Option(
            100.0,
            lambda v: positive_float()(v) and v >= 1,
            "a float ≥ 1",
            "κ: a Newton step is taken while its merit stays under κ ρᵏ times the start's (see the class)",
        ),
        "alpha": Option(1.0, positive_float(), "a float > 0", "Peaceman-Rachford step size (forward='pr' only)"),
        "max_iter": Option(
            None,
            _optional(positive_int),
            "an int ≥ 1 or None",
            "iteration budget of one solve; None derives Newton's from the safeguard's proven rate "
            f"(enough for a start at zero) and gives Peaceman-Rachford {PR_MAX_ITER}",
        ),
        "check_every": Option(
            None,
            _optional(positive_int),
            "an int ≥ 1 or None",
            "iterations between convergence checks (each is a host sync); None: 1 for Newton, whose "
            f"steps are few and costly, {PR_CHECK_EVERY} for Peaceman-Rachford",
        ),
    }
    REQUIRES: ClassVar[frozenset[str]] = frozenset({DENSE_MATRIX})
    stats_type: ClassVar[type[SolverStats]] = NewtonStats

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._safeguarded: torch.Tensor | None = None

    # -- what it can solve --------------------------------------------------------------------------
    def _uses_newton(self, activation: Activation) -> bool:
        return self.options["forward"] == "newton" or isinstance(activation, LinearSlopes)

    def activation_unsupported(self, activation: Activation) -> str | None:
        """None for piecewise-linear σ (or any σ with ``forward="pr"``), else why not."""
        if not self._uses_newton(activation) or getattr(activation, "piecewise_linear", False):
            return None
        return (
            "semismooth Newton needs a piecewise-linear activation (relu or leaky_relu), whose Newton "
            "step is exact on each active set; use solver='pr', 'fb' or 'anderson' for smooth activations, "
            "or solver='newton' with forward='pr' (Peaceman-Rachford forward, direct adjoint solve)"
        )

    # -- the solve ----------------------------------------------------------------------------------
    def solve(
        self, problem: FixedPointProblem, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, SolverStats]:
        """Solve ``problem`` (injection ``(batch, n)``) from ``z0`` (zeros when None): by safeguarded
        Newton in the shared loop, or by Peaceman-Rachford for a nonlinear σ when ``forward="pr"``.
        Returns z ``(batch, n)`` and its :class:`NewtonStats` (or the Peaceman-Rachford statistics)."""
        if not self._uses_newton(problem.activation):
            return self._peaceman_rachford().solve(problem, z0)
        z, stats = super().solve(problem, z0)
        # Handed over by extra_stats, which the loop calls with the final state.
        stats.safeguard_steps, self._safeguarded = self._safeguarded, None
        return z, stats

    def _peaceman_rachford(self) -> PeacemanRachford:
        o = self.options
        return PeacemanRachford(
            tol=o["tol"],
            alpha=o["alpha"],
            on_nonconvergence=o["on_nonconvergence"],
            max_iter=PR_MAX_ITER if o["max_iter"] is None else o["max_iter"],
            check_every=PR_CHECK_EVERY if o["check_every"] is None else o["check_every"],
        )

    def check_interval(self) -> int:
        """``check_every``, 1 by default."""
        return 1 if self.options["check_every"] is None else self.options["check_every"]

    def step_budget(self, problem: FixedPointProblem) -> int:
        """``max_iter``, or (None) steps that provably bring a start at zero under ``tol``.

        The merit stays under ``κ ρᵏ`` times the first and bounds the error within (1 ± ρ), so the
        error after k steps is at most ``κ ρᵏ (1 + ρ)/(1 − ρ)`` times the first: the forward-backward
        budget with its growth constant multiplied by κ(1 + ρ)/(1 − ρ).
        """
        if self.options["max_iter"] is not None:
            return self.options["max_iter"]
        if isinstance(problem.activation, LinearSlopes):
            return LINEAR_BUDGET
        step = safe_step(problem)
        if step.rate is None or not step.rate < 1:
            return FALLBACK_BUDGET
        growth = step.growth * self.options["slack"] * (1 + step.rate) / (1 - step.rate)
        return dataclasses.replace(step, growth=growth).budget(self.tol)

    def _merit(self, step: SafeStep, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        gap = (z - image).flatten(1)
        if step.weights is None:
            return gap.norm(dim=1)
        return (gap.square() * step.weights.reshape(1, -1)).sum(dim=1).sqrt()

    def _fb_image(self, problem: FixedPointProblem, alpha: float, z: torch.Tensor, Wz: torch.Tensor) -> torch.Tensor:
        # The forward-backward map of forward_backward.py, with W z already computed.
        return problem.activation.prox((1 - alpha) * z + alpha * (Wz + problem.injection), alpha)

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> NewtonState:
        matrix = dense_matrix(problem.operator).to(z0.dtype)
        safeguarded = torch.zeros(z0.shape[0], dtype=torch.long, device=z0.device)
        if isinstance(problem.activation, LinearSlopes):
            none = torch.zeros_like(safeguarded, dtype=z0.dtype)
            Wz = problem.operator.apply(z0)
            return NewtonState(z0, Wz, z0, none, none, safeguarded, matrix, None, 1.0)
        step = safe_step(problem)
        Wz = problem.operator.apply(z0)
        image = self._fb_image(problem, step.alpha, z0, Wz)
        merit = self._merit(step, z0, image)
        return NewtonState(
            z=z0,
            Wz=Wz,
            fb_image=image,
            merit=merit,
            bound=self.options["slack"] * merit,
            safeguarded=safeguarded,
            matrix=matrix,
            step=step,
            rate=step.rate if step.rate is not None and step.rate < 1 else 1.0,
        )

    def step(self, problem: FixedPointProblem, state: NewtonState) -> NewtonState:
        z, v = state.z, state.Wz + problem.injection
        residual = z - problem.activation(v)
        slopes = problem.activation.derivative(v)
        # Newton's proposal and its merit.
        z_newton = z + newton_direction(state.matrix, slopes, residual)
        Wz_newton = problem.operator.apply(z_newton)
        if state.step is None:  # a linear σ: the direct solve (or its refinement), no safeguard
            return dataclasses.replace(state, z=z_newton, Wz=Wz_newton)
        alpha = state.step.alpha
        image_newton = self._fb_image(problem, alpha, z_newton, Wz_newton)
        merit_newton = self._merit(state.step, z_newton, image_newton)
        # The safe step T(z), already computed, and what the next step needs from it.
        z_safe = state.fb_image
        Wz_safe = problem.operator.apply(z_safe)
        image_safe = self._fb_image(problem, alpha, z_safe, Wz_safe)
        merit_safe = self._merit(state.step, z_safe, image_safe)
        # NaN merits are never accepted: such a sample takes the safe step.
        bound = state.rate * state.bound
        if state.rate < 1:
            take = merit_newton <= bound
        else:  # no proven rate, no envelope: require a strict decrease
            take = merit_newton < state.merit
        rows = take[:, None]
        return dataclasses.replace(
            state,
            z=torch.where(rows, z_newton, z_safe),
            Wz=torch.where(rows, Wz_newton, Wz_safe),
            fb_image=torch.where(rows, image_newton, image_safe),
            merit=torch.where(take, merit_newton, merit_safe),
            bound=bound,
            safeguarded=state.safeguarded + (~take).long(),
        )

    def current(self, state: NewtonState) -> torch.Tensor:
        return state.z

    def extra_stats(self, state: NewtonState, checks: int) -> dict[str, float]:
        """No host values (the per-sample safeguard counts go to :attr:`NewtonStats.safeguard_steps`)."""
        self._safeguarded = state.safeguarded
        return {}


__all__ = ["NewtonState", "NewtonStats", "SemismoothNewton", "dense_matrix", "newton_direction"]
