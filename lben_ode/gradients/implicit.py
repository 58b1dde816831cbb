"""Implicit differentiation of an equilibrium (DESIGN §3).

The forward solve runs without an autograd graph. One extra step ``f = σ(W z* + U x + b_z)`` is
taken with autograd on, and the gradient arriving at it is replaced by the solution w of the adjoint
equilibrium ``w = g + Wᵀ D w`` (D = diag σ'(W z* + U x + b_z)), which turns the one-step gradient
into the implicit-function-theorem gradient. Memory does not depend on the number of iterations.

The value handed on is the solver's z* itself, not the extra step: ``z* + (f − f.detach())`` equals
z* exactly and has f's gradient. The extra step would move the state by about ``‖DW‖`` times the
residual, so the returned state would no longer be the one ``solver_stats`` describes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from ..activations import Activation, LinearSlopes
from ..solvers.base import Solver
from ..solvers.problem import EquilibriumOperator, FixedPointProblem
from ..solvers.stats import SolverStats
from ..validation import check_start
from .base import BackwardStatsSink, EquilibriumGraph, GradientMethod, WarmStart


def adjoint_solve(
    grad: torch.Tensor,
    slopes: torch.Tensor,
    operator: EquilibriumOperator,
    solver: Solver,
    u0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``(I − D W)ᵀ w = g`` for w with the same solver as the forward pass.

    With ``u = D w`` the equation is the equilibrium ``u = D(Wᵀ u + g)``: the same monotone
    structure (Wᵀ is well-posed in the metric Λ⁻¹) with the linear activation v ↦ D v, so every
    splitting method applies unchanged. Then ``w = g + Wᵀ u``; conversely ``u = D w`` recovers the
    adjoint's state from w (to within the solve's residual), which is how a solution is kept as
    the next start (:class:`~lben_ode.gradients.base.WarmStart`).

    Args:
        grad: incoming gradient g, shape ``(batch, *state_shape)``.
        slopes: σ'(W z* + U x + b_z), same shape, entries in [0, 1].
        operator: the forward operator W; its transpose is used.
        solver: the solver that computed the forward equilibrium.
        u0: optional start of the solve in the variable u, same shape and dtype as g, finite;
            None starts from zeros. It changes only where the iteration starts: the solve still runs
            to the solver's per-sample tolerance.

    Raises:
        ShapeError, NonFiniteInputError: for a start of the wrong shape, dtype or device, or not finite.
    """
    if u0 is not None:
        check_start(u0, grad, "adjoint start u0")
    transposed = operator.transpose()
    problem = FixedPointProblem(transposed, grad, LinearSlopes(slopes))
    u, stats = solver.solve(problem, u0)
    return grad + transposed.apply(u), stats


def _per_unit_gradient(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ‖g_i‖ shaped to broadcast over g, and 1/‖g_i‖ (0 where g_i = 0)."""
    norm = grad.flatten(1).norm(dim=1).reshape(-1, *([1] * (grad.dim() - 1)))
    return norm, torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))


def equilibrium_with_implicit_gradient(
    z_star: torch.Tensor,
    apply_W: Callable[[torch.Tensor], torch.Tensor],
    injection: torch.Tensor,
    activation: Activation,
    operator: EquilibriumOperator,
    solver: Solver,
    on_backward_stats: Callable[[SolverStats], None],
    warm_start: WarmStart | None = None,
) -> torch.Tensor:
    """Re-attach a solved equilibrium to the autograd graph with the implicit gradient.

    Args:
        z_star: the equilibrium from the solver (no graph), ``(batch, *state_shape)``.
        apply_W: z ↦ W z built from the parameters, so gradients reach them.
        injection: ``U x + b_z`` with its graph to x and the parameters.
        activation: σ.
        operator: W without graph, for the adjoint solve.
        solver: the solver used for the adjoint equilibrium.
        on_backward_stats: called with the statistics of each backward solve.
        warm_start: the adjoint solve starts from ``‖g_i‖ · warm_start.adjoint_start[i]`` when that
            is set, and the solution per unit ‖g_i‖ (``D w_i / ‖g_i‖``) is written to
            ``warm_start.adjoint``; None starts from zeros and keeps nothing.

    Returns:
        z* itself (the state the solver's statistics describe), carrying the implicit gradient when
        autograd is recording and the parameters or inputs require it.
    """
    if not torch.is_grad_enabled():
        return z_star
    pre_activation = apply_W(z_star) + injection
    step = activation(pre_activation)
    if not step.requires_grad:
        return z_star
    slopes = activation.derivative(pre_activation.detach())
    start = None if warm_start is None else warm_start.adjoint_start
    if start is not None:
        check_start(start, z_star, "adjoint start")

    def replace_gradient(grad: torch.Tensor | None) -> torch.Tensor | None:
        if grad is None:  # an undefined incoming gradient (no output used z) stays undefined
            return None
        if warm_start is None:
            w, stats = adjoint_solve(grad, slopes, operator, solver)
        else:
            norm, inverse_norm = _per_unit_gradient(grad)
            w, stats = adjoint_solve(grad, slopes, operator, solver, None if start is None else norm * start)
            warm_start.adjoint = (slopes * w * inverse_norm).detach()
        on_backward_stats(stats)
        solver.report(stats, "backward")
        return w

    step.register_hook(replace_gradient)
    # Exactly z* in value (f − f.detach() is exactly zero), with the gradient of the step.
    return z_star + (step - step.detach())


class ImplicitGradient(GradientMethod):
    """The implicit-function-theorem gradient at the equilibrium, for every solver: the forward
    solve runs without graph and the backward pass solves the adjoint equilibrium with the same
    solver (:func:`equilibrium_with_implicit_gradient`)."""

    name: ClassVar[str] = "implicit"

    def equilibrium(
        self,
        solver: Solver,
        graph: EquilibriumGraph,
        z0: torch.Tensor | None,
        on_backward_stats: BackwardStatsSink,
    ) -> tuple[torch.Tensor, SolverStats]:
        z_star, stats = solver.solve(graph.problem(), None if z0 is None else z0.detach())
        z = equilibrium_with_implicit_gradient(
            z_star,
            graph.apply_W,
            graph.injection,
            graph.activation,
            graph.operator,
            solver,
            on_backward_stats,
            graph.warm_start,
        )
        return z, stats
