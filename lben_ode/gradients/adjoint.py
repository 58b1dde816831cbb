"""Gradients by differentiating the ODE integration with torchdiffeq's adjoint method.

The ODE solver finds the horizon T at which the state is an equilibrium (without a graph); then
``torchdiffeq.odeint_adjoint`` integrates again over [0, T] and differentiates the integrated map
``z0 ↦ z(T)``. That gradient tends to the implicit one as T grows; with a warm start near z*, T is
short and the gradient is that of the short integration, not the implicit one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import ClassVar

import torch
from torchdiffeq import odeint_adjoint

from ..activations import Activation
from ..errors import ConfigurationError, ConvergenceError
from ..solvers.base import Solver
from ..solvers.neural_ode import SteadyStateODE, StepControl
from ..solvers.ode_dynamics import CountingDynamics, describe_integrator_failure, graph_leaves
from ..solvers.results import Result
from ..solvers.stats import SolverStats
from .base import BackwardStatsSink, EquilibriumGraph, GradientMethod
from .implicit import ImplicitGradient


def checkpoints(solver: SteadyStateODE, horizon: float, control: StepControl, device: torch.device) -> torch.Tensor:
    """Output times of the adjoint integration: 0, then every ``adjoint_interval`` up to T.

    The adjoint pass rebuilds z by integrating the ODE backwards, which is unstable for this
    contracting flow (errors grow like e^{‖λ‖ t}); torchdiffeq restarts that reconstruction from
    the stored forward state at every output time, so close output times keep it accurate.
    Fixed-step methods get output times on their grid (whole numbers of steps).
    """
    interval = solver.options["adjoint_interval"]
    if control.step_size is not None:
        per = max(1, round(interval / control.step_size))
        n_points = math.ceil(round(horizon / control.step_size) / per)
        return torch.arange(n_points + 1, dtype=torch.float64, device=device) * (per * control.step_size)
    n_points = max(1, math.ceil(horizon / interval))
    return torch.linspace(0.0, horizon, n_points + 1, dtype=torch.float64, device=device)


def differentiable_map(
    apply_W: Callable[[torch.Tensor], torch.Tensor], injection: torch.Tensor, activation: Activation
) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[torch.Tensor, ...]]:
    """F(z) = σ(W z + injection) and the tensors odeint_adjoint must differentiate it by.

    A flat state gets Wᵀ materialised (with its graph) as ``apply_W(I)`` (one n×n product), so the
    adjoint pass differentiates through W's construction once rather than at every evaluation: the
    adjoint parameters are then Wᵀ and the injection, whose own graphs carry the gradients on.
    Otherwise the parameters are the leaf tensors behind ``apply_W`` and the injection together:
    each path to a leaf is then counted once (a leaf that also fed the injection would be counted
    twice if the injection were an adjoint parameter as well).
    """
    if injection.dim() == 2:
        eye = torch.eye(injection.shape[1], dtype=injection.dtype, device=injection.device)
        weight_t = apply_W(eye)  # a linear map on rows is z ↦ z @ apply_W(I)
        return (lambda z: activation(z @ weight_t + injection)), (weight_t, injection)
    leaves: dict[int, torch.Tensor] = {}
    for output in (apply_W(torch.zeros_like(injection[:1])), injection):
        leaves.update((id(leaf), leaf) for leaf in graph_leaves(output))
    return (lambda z: activation(apply_W(z) + injection)), tuple(leaves.values())


def adjoint_equilibrium(
    solver: SteadyStateODE, graph: EquilibriumGraph, z0: torch.Tensor | None
) -> tuple[torch.Tensor, SolverStats]:
    """z(T) with gradients by torchdiffeq's adjoint method.

    The horizon T is found first by ``solver.solve`` without a graph; then ``odeint_adjoint``
    integrates again over [0, T] with the step control the search ended with, storing the state
    every ``adjoint_interval`` (:func:`checkpoints`).

    Args:
        solver: the ODE solver (its method, tolerances and ``adjoint_interval`` are used).
        graph: the equilibrium with its graph (``apply_W``, ``injection``, ``activation``, ``operator``).
        z0: optional warm start (gradients reach it too).

    Returns:
        z(T), differentiable, and the statistics (residual measured on the returned state; time and
        function evaluations include the horizon search).

    Raises:
        ConvergenceError: torchdiffeq fails during the re-integration.
    """
    problem = graph.problem()
    _, stats = solver.solve(problem, None if z0 is None else z0.detach())
    start = time.perf_counter()
    horizon = max(stats.extra["integration_time"], solver.options["chunk_time"])
    fixed_point_map, params = differentiable_map(graph.apply_W, graph.injection, graph.activation)
    z_start = torch.zeros_like(graph.injection) if z0 is None else z0
    # The same method and step control as the search ended with (a cap or halving it needed still holds).
    method, _ = solver.integration_method(problem)
    control = StepControl(method, *solver.tolerances(), stats.extra.get("max_step"), stats.extra.get("step_size"))
    dynamics = CountingDynamics(fixed_point_map, control.adaptive)
    _, options = solver.time_grid(dynamics, z_start, 0.0, horizon, control)
    times = checkpoints(solver, solver.grid_end(0.0, horizon, control), control, z_start.device)
    adjoint_options = {**options, "norm": "seminorm"}
    try:
        path = odeint_adjoint(
            dynamics,
            z_start,
            times,
            rtol=control.rtol,
            atol=control.atol,
            method=control.method,
            options=options,
            adjoint_params=params,
            adjoint_options=adjoint_options,
        )
    except AssertionError as exc:
        raise ConvergenceError(
            f"solver 'ode' (backward='adjoint'): {describe_integrator_failure(exc, 0.0)} while "
            f"integrating over the horizon T={horizon:.4g} that the search had reached"
        ) from exc
    z = path[-1]
    with torch.no_grad():
        residual = problem.relative_residual(z.detach())
    stats.residual = residual
    stats.converged = torch.isfinite(residual) & (residual <= solver.tol)
    if stats.result is Result.CONVERGED and not stats.all_converged:
        stats.result = Result.INTEGRATOR_FAILED
        stats.stop_reason = f"the re-integration over [0, T={horizon:.4g}] ended away from the equilibrium"
    stats.function_evaluations = (stats.function_evaluations or 0) + dynamics.evaluations
    stats.time_s += time.perf_counter() - start
    stats.extra["integration_time"] = float(times[-1])
    return z, stats


class ODEAdjoint(GradientMethod):
    """torchdiffeq's adjoint method through the ODE solver's integration (:func:`adjoint_equilibrium`);
    chosen with ``set_solver("ode", backward="adjoint")``. Without autograd it is a plain solve."""

    name: ClassVar[str] = "adjoint"

    def equilibrium(
        self,
        solver: Solver,
        graph: EquilibriumGraph,
        z0: torch.Tensor | None,
        on_backward_stats: BackwardStatsSink,
    ) -> tuple[torch.Tensor, SolverStats]:
        if not isinstance(solver, SteadyStateODE):
            raise ConfigurationError(
                f"the adjoint gradient integrates the neural ODE: it needs solver 'ode', got {solver.name!r}"
            )
        if not torch.is_grad_enabled():
            return ImplicitGradient().equilibrium(solver, graph, z0, on_backward_stats)
        if graph.warm_start is not None:
            raise ConfigurationError(
                "the adjoint gradient (solver 'ode', backward='adjoint') differentiates the integration from "
                "its start, which a kept warm start would shorten, and has no adjoint solve to start: use "
                "backward='implicit' with warm starts"
            )
        return adjoint_equilibrium(solver, graph, z0)
