"""Statistics of one equilibrium solve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .results import Result


@dataclass
class SolverStats:
    """What one solve did, per sample and in total.

    Attributes:
        solver: registry name of the solver.
        iterations: ``(batch,)`` iterations each sample needed to reach the tolerance (the total
            for samples that did not converge). For the ODE solver, accepted integration steps.
        residual: ``(batch,)`` final relative fixed-point residual ``‖z − σ(Wz+b)‖ / ‖z‖``.
        converged: ``(batch,)`` whether the final residual is finite and under ``tol``.
        tol: the tolerance used.
        time_s: wall time of the solve in seconds (device synchronised).
        total_iterations: iterations (or steps) the loop ran for the whole batch.
        function_evaluations: evaluations of the fixed-point map or ODE right-hand side, if counted.
        extra: solver-specific values (e.g. the ODE's final integration time).
        result: why the solve stopped (:class:`~lben_ode.solvers.results.Result`); ``CONVERGED``
            exactly when every sample converged.
        stop_reason: the cause in words when the solve ended unconverged (empty otherwise), e.g.
            which budget ran out and when.
        checks: convergence checks the solve made (each one host synchronisation).
    """

    #: What ``iterations`` count, in words (for messages).
    iteration_unit: ClassVar[str] = "iterations"

    solver: str
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    tol: float
    time_s: float
    total_iterations: int
    function_evaluations: int | None = None
    extra: dict[str, float] = field(default_factory=dict)
    result: Result = Result.CONVERGED
    stop_reason: str = ""
    checks: int = 0

    @property
    def all_converged(self) -> bool:
        """True when every sample converged (one host sync)."""
        return bool(self.converged.all())

    def summary(self) -> dict[str, float]:
        """Scalars for logging: mean/max iterations, max residual, converged fraction, time."""
        out = {
            "iterations_mean": float(self.iterations.float().mean()),
            "iterations_max": float(self.iterations.max()),
            "residual_max": float(self.residual.max()),
            "converged_fraction": float(self.converged.float().mean()),
            "time_s": self.time_s,
        }
        if self.function_evaluations is not None:
            out["function_evaluations"] = float(self.function_evaluations)
        out.update(self.extra)
        return out

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"SolverStats({self.solver}: {s['converged_fraction']:.1%} converged, iterations mean "
            f"{s['iterations_mean']:.1f} max {s['iterations_max']:.0f}, residual max "
            f"{s['residual_max']:.2e}, {1000 * self.time_s:.2f} ms)"
        )
