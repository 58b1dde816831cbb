"""The solver interface and the shared iteration loop of the splitting methods."""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..errors import ConvergenceError, ConvergenceWarning
from ..warning_location import user_stacklevel
from .options import COMMON_OPTIONS, Option, validate_options
from .problem import FixedPointProblem
from .stats import SolverStats


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unreliable_gradient_note(what: str, gradient: bool) -> str:
    """What a non-converged solve means for gradients: the end of a non-convergence message."""
    if what == "backward":
        return "; the gradient computed from this adjoint solve is unreliable"
    if gradient:
        return "; gradients through this solve are unreliable (they assume an equilibrium)"
    return ""


class Solver(ABC):
    """An equilibrium solver: finds z with ``z = σ(W z + b)`` for every sample of a batch.

    Subclasses set ``name`` and ``OPTIONS`` (their own options, merged with
    :data:`~lben_ode.solvers.options.COMMON_OPTIONS`) and implement :meth:`solve`.

    Attributes:
        options: the validated option values.
        differentiable: True for solvers whose ``solve_differentiable`` gives gradients by
            differentiating through the solve itself instead of the implicit gradient.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]] = {}
    differentiable: bool = False

    def __init__(self, **options: Any) -> None:
        self.options = validate_options(self.name, self.all_options(), options)

    @classmethod
    def all_options(cls) -> dict[str, Option]:
        """Every option this solver accepts, with its default and meaning."""
        return {**COMMON_OPTIONS, **cls.OPTIONS}

    @property
    def tol(self) -> float:
        """Relative residual tolerance."""
        return self.options["tol"]

    @abstractmethod
    def solve(
        self, problem: FixedPointProblem, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, SolverStats]:
        """Solve ``problem`` from ``z0`` (zeros when None). Returns z and its statistics."""

    def check_supported(self, problem: FixedPointProblem) -> None:
        """Raise :class:`UnsupportedSolverError` if this solver cannot handle the problem's model."""
        return None

    def report(self, stats: SolverStats, what: str, gradient: bool = False) -> None:
        """Warn or raise (per ``on_nonconvergence``) when some sample did not converge.

        Args:
            stats: the solve's statistics.
            what: ``"forward"`` or ``"backward"`` (the adjoint solve of an implicit gradient).
            gradient: whether gradients will be computed from this forward solve; the message
                then says they are unreliable (a backward solve always says so).
        """
        if stats.all_converged:
            return
        n_bad = int((~stats.converged).sum())
        worst = float(stats.residual.nan_to_num(float("inf")).max())
        message = (
            f"{self.name} {what} solve: {n_bad} of {stats.converged.numel()} samples did not reach "
            f"tol={stats.tol:g} in {stats.total_iterations} iterations (worst relative residual "
            f"{worst:.3g}); raise max_iter, or see model.solver_stats"
        )
        self._raise_or_warn(message + unreliable_gradient_note(what, gradient))

    def _raise_or_warn(self, message: str) -> None:
        if self.options["on_nonconvergence"] == "raise":
            raise ConvergenceError(message)
        warnings.warn(message, ConvergenceWarning, stacklevel=user_stacklevel())

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class IterativeSolver(Solver):
    """A splitting method run by the shared loop: subclasses give the state and one step.

    The loop checks convergence every ``check_every`` iterations only, so the device is not
    synchronised with the host at every step. A sample has converged when its relative residual is
    finite and at most ``tol``; NaN or infinity never counts as converged.
    """

    @abstractmethod
    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> Any:
        """The iteration's state at the start (it may hold more than z)."""

    @abstractmethod
    def step(self, problem: FixedPointProblem, state: Any) -> Any:
        """One iteration."""

    @abstractmethod
    def current(self, state: Any) -> torch.Tensor:
        """The current estimate of z."""

    def solve(
        self, problem: FixedPointProblem, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, SolverStats]:
        self.check_supported(problem)
        tol, max_iter, every = self.tol, self.options["max_iter"], self.options["check_every"]
        inj = problem.injection
        device, batch = inj.device, problem.batch_size
        _synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            state = self.init_state(problem, torch.zeros_like(inj) if z0 is None else z0)
            first_hit = torch.full((batch,), max_iter, dtype=torch.long, device=device)
            done = torch.zeros(batch, dtype=torch.bool, device=device)
            k = 0
            for k in range(1, max_iter + 1):
                state = self.step(problem, state)
                if k % every and k != max_iter:
                    continue
                res = problem.relative_residual(self.current(state))
                hit = (res <= tol) & ~done
                first_hit = torch.where(hit, torch.full_like(first_hit, k), first_hit)
                done |= hit
                # One host sync per check: stop when every sample converged or blew up.
                if bool((done | ~torch.isfinite(res)).all()):
                    break
            z = self.current(state)
            residual = problem.relative_residual(z)
            converged = residual <= tol
            iterations = torch.where(converged, first_hit.clamp(max=k), torch.full_like(first_hit, k))
        _synchronize(device)
        stats = SolverStats(
            solver=self.name,
            iterations=iterations,
            residual=residual,
            converged=converged,
            tol=tol,
            time_s=time.perf_counter() - start,
            total_iterations=k,
        )
        return z, stats
