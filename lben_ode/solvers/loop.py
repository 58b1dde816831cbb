"""The one solve loop that runs every iterative solver, and what a convergence check measures.

A solver gives the loop its state and one step (``init_state``, ``step``, ``current``) and may
answer a few questions (the hooks of :class:`LoopSolver`); the loop owns everything the library
promises about a solve: the timer (device synchronised at both ends), the step budget, a
convergence check at most every ``check_every`` steps (the first two ⌈check_every/2⌉ apart, later
ones at the crossing of the tolerance that the measured decay predicts, see :func:`next_interval`)
with **one** host synchronisation, the per-sample first hit of the tolerance, the stop when every
sample has converged or become non-finite, a result code saying why it stopped, and the statistics.
Solvers never write their own loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from .problem import FixedPointProblem
from .results import Result
from .stats import SolverStats


def synchronize(device: torch.device) -> None:
    """Wait for the device (CUDA only), so wall times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Check:
    """What one convergence check found (its scalars were read with one host sync).

    Attributes:
        z: the state checked, ``(batch, *state_shape)``.
        steps: loop steps taken before the check.
        progress: the solver's iteration count at the check (``steps``, or e.g. the ODE's
            accepted integration steps).
        residual: ``(batch,)`` relative residual ``‖z − F(z)‖ / (‖z‖ + floor)`` (what ``tol`` applies to).
        absolute: ``(batch,)`` absolute residual ``‖z − F(z)‖``; it measures progress: it decays with
            the distance to z*, while the relative residual of a state running off to infinity stays
            bounded.
        done: ``(batch,)`` samples under ``tol`` now (NaN never is).
        first_hit: ``(batch,)`` the progress at the check where each sample last came under ``tol``
            (meaningful where ``done``).
        worst: largest relative residual among the finite samples not done (0 when none).
        worst_abs: largest absolute residual among them.
        settled: every sample is done or non-finite.
        non_finite: some sample's residual is not finite.
    """

    z: torch.Tensor
    steps: int
    progress: int
    residual: torch.Tensor
    absolute: torch.Tensor
    done: torch.Tensor
    first_hit: torch.Tensor
    worst: float
    worst_abs: float
    settled: bool
    non_finite: bool


def measure(
    problem: FixedPointProblem, z: torch.Tensor, tol: float, previous: Check | None, steps: int, progress: int
) -> Check:
    """Check ``z``: residuals and the per-sample first hit on the device, two scalars read with one sync.

    A check runs every few steps, so it is kept to a few batched operations: one reduction gives
    the largest relative and absolute residuals of the samples not done. Only when that finds a
    non-finite residual (a diverged solve) does a second reduction, with a second sync, find the
    largest residuals among the finite samples.
    """
    absolute, residual = problem.residuals(z)
    done = residual <= tol  # NaN is never done
    # The progress at which each sample last came under tol (meaningful where done).
    if previous is None:
        first_hit = torch.full_like(residual, progress, dtype=torch.long)
    else:
        first_hit = torch.where(previous.done, previous.first_hit, progress)
    open_rows = torch.where(done, 0.0, torch.stack([residual, absolute]))
    worst, worst_abs = open_rows.amax(dim=1).tolist()  # the check's one host sync
    non_finite = not math.isfinite(worst)
    if non_finite:
        worst, worst_abs = open_rows.nan_to_num(0.0, 0.0, 0.0).amax(dim=1).tolist()
    # An open finite sample has a residual over tol > 0, so none is left exactly when worst is 0.
    return Check(z, steps, progress, residual, absolute, done, first_hit, worst, worst_abs, worst == 0.0, non_finite)


class LoopSolver(Protocol):
    """What :func:`run` needs from a solver (:class:`~lben_ode.solvers.base.IterativeSolver` gives
    defaults for every hook but the first three)."""

    name: ClassVar[str]
    check_at_start: ClassVar[bool]
    stats_type: ClassVar[type[SolverStats]]

    @property
    def tol(self) -> float: ...

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> Any: ...

    def step(self, problem: FixedPointProblem, state: Any) -> Any: ...

    def current(self, state: Any) -> torch.Tensor: ...

    def check_supported(self, problem: FixedPointProblem) -> None: ...

    def check_interval(self) -> int: ...

    def step_budget(self, problem: FixedPointProblem) -> int | None: ...

    def progress(self, state: Any, steps: int) -> int: ...

    def review(
        self, problem: FixedPointProblem, state: Any, before: Check | None, after: Check
    ) -> tuple[Any, Check]: ...

    def terminate(self, state: Any, check: Check) -> tuple[Result, str] | None: ...

    def function_evaluations(self, state: Any) -> int | None: ...

    def extra_stats(self, state: Any, checks: int) -> dict[str, float]: ...


def run(solver: LoopSolver, problem: FixedPointProblem, z0: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """Solve ``problem`` with ``solver`` from ``z0`` (zeros when None).

    The loop steps, and checks convergence after ``⌈every/2⌉`` and ``2⌈every/2⌉`` steps, then at
    most every ``every = solver.check_interval()`` steps (sooner where :func:`next_interval`
    predicts the crossing of tol) and when the step budget runs out: the solver may then revise the
    state and the check (``review``) or give a reason to stop (``terminate``). It stops when every
    sample has converged or become non-finite, when the budget is spent, or for the solver's reason.
    Nothing synchronises with the host between checks.

    Returns:
        The final state, ``(batch, *state_shape)``, and its statistics (``solver.stats_type``), whose
        ``result`` says why the loop stopped.
    """
    solver.check_supported(problem)
    tol, every = solver.tol, solver.check_interval()
    budget = solver.step_budget(problem)
    device = problem.injection.device
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        state = solver.init_state(problem, torch.zeros_like(problem.injection) if z0 is None else z0)
        check: Check | None = None
        first: Check | None = None
        stop: tuple[Result, str] | None = None
        steps = checks = 0
        # The first two checks come early (short solves are common), so that the decay rate is
        # known when the later, longer intervals are chosen.
        early = math.ceil(every / 2)
        next_check = early
        if solver.check_at_start:
            check = first = measure(problem, solver.current(state), tol, None, 0, solver.progress(state, 0))
            checks = 1
            stop = solver.terminate(state, check)
        while check is None or not (check.settled or stop):
            if budget is not None and steps >= budget:
                break
            state = solver.step(problem, state)
            steps += 1
            if steps < next_check and steps != budget:
                continue
            after = measure(problem, solver.current(state), tol, check, steps, solver.progress(state, steps))
            checks += 1
            next_check = steps + (early if check is None else next_interval(check, after, tol, every))
            state, check = solver.review(problem, state, check, after)
            first = check if first is None else first
            stop = solver.terminate(state, check)
        total = solver.progress(state, steps)
        converged = check.done
        iterations = torch.where(converged, check.first_hit, total)
        result, reason = _result(check, first, stop, budget)
        evaluations = solver.function_evaluations(state)
        extra = solver.extra_stats(state, checks)
    synchronize(device)
    stats = solver.stats_type(
        solver=solver.name,
        iterations=iterations,
        residual=check.residual,
        converged=converged,
        tol=tol,
        time_s=time.perf_counter() - start,
        total_iterations=total,
        function_evaluations=evaluations,
        extra=extra,
        result=result,
        stop_reason=reason,
        checks=checks,
    )
    return check.z, stats


def next_interval(before: Check | None, after: Check, tol: float, every: int) -> int:
    """Steps to the next check: ``every``, or fewer when the decay of the worst open residual over
    the last two checks predicts that it reaches ``tol`` sooner (host values only, no sync).

    With checks every ``every`` steps alone, a solve stops on average ``every / 2`` steps after
    its last sample converged; predicting the crossing from the measured rate (a linearly
    converging iteration's residual falls by a steady factor per step) moves the last checks onto
    it. A wrong prediction costs at most a few extra checks, never a missed tolerance: a sample
    only counts as converged when a check measured it.
    """
    if before is None or not (0 < after.worst < before.worst) or after.steps <= before.steps:
        return every
    rate = math.log(before.worst / after.worst) / (after.steps - before.steps)
    needed = math.ceil(math.log(after.worst / tol) / rate) if after.worst > tol else 1
    return max(1, min(every, needed))


def _result(check: Check, first: Check, stop: tuple[Result, str] | None, budget: int | None) -> tuple[Result, str]:
    """The result code and its cause in words, from the host values of the last checks."""
    if check.settled and not check.non_finite:
        return Result.CONVERGED, ""
    if stop is not None:
        return stop
    if check.non_finite:
        return Result.NONFINITE, "the state of some samples became non-finite"
    if check is not first and check.worst_abs > first.worst_abs:
        return Result.DIVERGED, (
            f"the largest residual grew from {first.worst_abs:.3g} (step {first.steps}) to "
            f"{check.worst_abs:.3g} (step {check.steps})"
        )
    return Result.MAX_STEPS, f"the budget max_iter={budget} ran out"
