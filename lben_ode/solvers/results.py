"""How a solve ended (a result code), and the one place that turns an unconverged one into a warning or an error."""

from __future__ import annotations

import warnings
from enum import Enum
from typing import TYPE_CHECKING

from ..errors import ConvergenceError, ConvergenceWarning

if TYPE_CHECKING:
    from .stats import SolverStats


class Result(str, Enum):
    """Why a solve stopped. Every result but ``CONVERGED`` leaves some sample over the tolerance.

    The values are plain strings, so ``stats.result == "max_steps"`` works and they log as text.
    """

    #: Every sample's relative residual is finite and at most ``tol``.
    CONVERGED = "converged"
    #: The step budget (``max_iter``) ran out while the residual was still decreasing.
    MAX_STEPS = "max_steps"
    #: The step budget ran out and the residual had grown since the first check: the iteration diverges.
    DIVERGED = "diverged"
    #: Some sample's state or residual became NaN or infinite.
    NONFINITE = "nonfinite"
    #: The integration-time budget (``max_time``) of the ODE solver ran out.
    MAX_TIME = "max_time"
    #: The ODE integrator gave up (step-size underflow, a non-finite right-hand side).
    INTEGRATOR_FAILED = "integrator_failed"


#: What the user can do about each unconverged result (the message's last part).
REMEDIES: dict[Result, str] = {
    Result.MAX_STEPS: "raise max_iter",
    Result.DIVERGED: (
        "the iteration diverges, so more iterations will not help: use a smaller step alpha (fb's default "
        "is provably convergent) or another solver"
    ),
    Result.NONFINITE: (
        "the iterates became NaN or infinite, so more iterations will not help: use a smaller step alpha "
        "(the solver's default), or another solver"
    ),
    Result.MAX_TIME: "raise max_time",
    Result.INTEGRATOR_FAILED: "choose another method, or loosen rtol/atol",
}

#: The cause of each result when the solver gave none of its own.
CAUSES: dict[Result, str] = {
    Result.MAX_STEPS: "the step budget ran out",
    Result.DIVERGED: "the residual grew over the solve",
    Result.NONFINITE: "the state of some samples became non-finite",
    Result.MAX_TIME: "the integration-time budget ran out",
    Result.INTEGRATOR_FAILED: "the integrator failed",
}


def nonconvergence_message(stats: SolverStats, what: str) -> str:
    """The text of the warning or error for an unconverged solve: what, how bad, why, and the remedy."""
    n_bad = int((~stats.converged).sum())
    worst = float(stats.residual.nan_to_num(float("inf")).max())
    # Stats built by hand may lack a result; an unconverged solve is then treated as out of budget.
    result = Result.MAX_STEPS if stats.result is Result.CONVERGED else stats.result
    cause = stats.stop_reason or CAUSES.get(result, "")
    return (
        f"{stats.solver} {what} solve: {n_bad} of {stats.converged.numel()} samples did not reach "
        f"tol={stats.tol:g} in {stats.total_iterations} {stats.iteration_unit} (worst relative residual "
        f"{worst:.3g}): {cause} [{result.value}]; {REMEDIES.get(result, 'raise max_iter')}, or see "
        "model.solver_stats"
    )


def report_nonconvergence(stats: SolverStats, what: str, on_nonconvergence: str, stacklevel: int = 3) -> None:
    """Warn (``on_nonconvergence="warn"``) or raise (``"raise"``) when ``stats`` is not converged.

    Args:
        stats: the statistics of the solve.
        what: which solve (``"forward"``, ``"backward"``), named in the message.
        on_nonconvergence: ``"warn"`` or ``"raise"``.
        stacklevel: of the warning, counted from the caller of this function.

    Raises:
        ConvergenceError: with ``on_nonconvergence="raise"``, for an unconverged solve.
    """
    if stats.all_converged:
        return
    message = nonconvergence_message(stats, what)
    if on_nonconvergence == "raise":
        raise ConvergenceError(message)
    warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel + 1)
