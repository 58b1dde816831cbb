"""Statistics of one simulation of a continuous-time model."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..solvers.ode_dynamics import CountingDynamics


@dataclass
class SimulationStats:
    """What the last simulation cost.

    Attributes:
        method: the torchdiffeq method.
        gradient: ``"backprop"`` or ``"adjoint"``.
        function_evaluations: evaluations of the vector field in the forward pass (each is one
            product with W for the whole batch).
        accepted_steps: steps accepted by an adaptive method's error control (every step of a
            fixed-step method).
        rejected_steps: steps an adaptive method rejected and retried (0 for fixed steps).
        time_s: wall time of the forward simulation in seconds (device synchronised).
    """

    method: str
    gradient: str
    function_evaluations: int
    accepted_steps: int
    rejected_steps: int
    time_s: float
    _counter: CountingDynamics | None = field(default=None, repr=False, compare=False)

    @property
    def backward_function_evaluations(self) -> int:
        """Evaluations of the vector field by the backward pass so far: those of the adjoint ODE
        with ``gradient="adjoint"``, 0 with ``"backprop"`` (it reuses the forward graph)."""
        if self._counter is None:
            return 0
        return self._counter.evaluations - self.function_evaluations

    def summary(self) -> dict[str, float]:
        """Scalars for logging: function evaluations (forward, backward), steps and time."""
        return {
            "function_evaluations": float(self.function_evaluations),
            "backward_function_evaluations": float(self.backward_function_evaluations),
            "accepted_steps": float(self.accepted_steps),
            "rejected_steps": float(self.rejected_steps),
            "time_s": self.time_s,
        }
