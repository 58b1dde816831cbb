"""The one place that turns an unconverged solve into a warning or an error, worded by its result code."""

from __future__ import annotations

import warnings

from ..errors import ConvergenceError, ConvergenceWarning
from ..warning_location import user_stacklevel
from .results import CAUSES, REMEDIES, Result
from .stats import SolverStats


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


def unreliable_gradient_note(what: str, gradient: bool) -> str:
    """What a non-converged solve means for gradients: the end of a non-convergence message."""
    if what == "backward":
        return "; the gradient computed from this adjoint solve is unreliable"
    if gradient:
        return "; gradients through this solve are unreliable (they assume an equilibrium)"
    return ""


def report_nonconvergence(
    stats: SolverStats, what: str, on_nonconvergence: str, gradient: bool = False, stacklevel: int = 3
) -> None:
    """Warn (``on_nonconvergence="warn"``) or raise (``"raise"``) when ``stats`` is not converged.

    Args:
        stats: the statistics of the solve.
        what: which solve (``"forward"``, or ``"backward"``: the adjoint solve of an implicit
            gradient), named in the message.
        on_nonconvergence: ``"warn"`` or ``"raise"``.
        gradient: whether gradients will be computed from this forward solve; the message then
            says they are unreliable (a backward solve always says so).
        stacklevel: of the warning, counted from the caller of this function.

    Raises:
        ConvergenceError: with ``on_nonconvergence="raise"``, for an unconverged solve.
    """
    if stats.all_converged:
        return
    message = nonconvergence_message(stats, what) + unreliable_gradient_note(what, gradient)
    if on_nonconvergence == "raise":
        raise ConvergenceError(message)
    warnings.warn(message, ConvergenceWarning, stacklevel=user_stacklevel())
