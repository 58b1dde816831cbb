"""Statistics of one equilibrium solve."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
    """

    solver: str
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    tol: float
    time_s: float
    total_iterations: int
    function_evaluations: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def all_converged(self) -> bool:
        """True when every sample converged."""
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
