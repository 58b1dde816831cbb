"""What a gradient method is given, and what it gives back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..activations import Activation
from ..solvers.base import Solver
from ..solvers.problem import EquilibriumOperator, FixedPointProblem
from ..solvers.stats import SolverStats

#: Called with the statistics of each backward solve (the model stores them).
BackwardStatsSink = Callable[[SolverStats], None]


@dataclass
class WarmStart:
    """Starts of one forward pass's two solves and, once they ran, their solutions.

    Pass one to ``model(x, warm_start=...)``: the forward solve starts from ``z0``, the backward
    (adjoint) solve of the implicit gradient from ``adjoint_start``; the model then fills in ``z``
    and the backward pass fills in ``adjoint``, so the solutions can be kept for the next visit of
    the same samples. Every tensor is ``(batch, *state_shape)`` in the model's dtype, detached.

    The adjoint equilibrium is solved in u = D w (:func:`~lben_ode.gradients.implicit.adjoint_solve`).
    It is linear in the incoming gradient g, whose size changes a lot between visits (the loss of a
    sample falls as it is learned; the last batch is smaller), so the adjoint start and solution are
    kept per unit of ‖g‖: sample i's backward solve starts from ``‖g_i‖ · adjoint_start[i]``, and
    ``adjoint[i]`` is its solution ``u_i = D w_i`` divided by ``‖g_i‖`` (zero where g_i = 0).

    Attributes:
        z0: start of the forward solve, or None for zeros.
        adjoint_start: start of the adjoint solve per unit ‖g‖, or None for zeros.
        z: the forward equilibrium z* (None until the forward solve ran).
        adjoint: the adjoint solution per unit ‖g‖ (None until a backward pass reached the equilibrium).
    """

    z0: torch.Tensor | None = None
    adjoint_start: torch.Tensor | None = None
    z: torch.Tensor | None = field(default=None, repr=False)
    adjoint: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class EquilibriumGraph:
    """One forward pass's equilibrium ``z = σ(W z + injection)`` with its autograd graph.

    Attributes:
        apply_W: z ↦ W z built from the parameters, so gradients reach them.
        injection: ``U x + b_z`` with its graph to x and the parameters, ``(batch, *state_shape)``.
        activation: σ.
        operator: W for the solvers, without graph.
        warm_start: where the adjoint solve starts and its solution goes (:class:`WarmStart`), or
            None (start from zeros, keep nothing).
    """

    apply_W: Callable[[torch.Tensor], torch.Tensor]
    injection: torch.Tensor
    activation: Activation
    operator: EquilibriumOperator
    warm_start: WarmStart | None = None

    def problem(self) -> FixedPointProblem:
        """The same equilibrium without graph, for a solver."""
        return FixedPointProblem(self.operator, self.injection.detach(), self.activation)


class GradientMethod(ABC):
    """How the gradient of an equilibrium is computed: solves with a solver and returns a z that
    autograd can differentiate. Chosen by the model from the solver's
    :meth:`~lben_ode.solvers.base.Solver.gradient_method`."""

    name: ClassVar[str] = ""

    @abstractmethod
    def equilibrium(
        self,
        solver: Solver,
        graph: EquilibriumGraph,
        z0: torch.Tensor | None,
        on_backward_stats: BackwardStatsSink,
    ) -> tuple[torch.Tensor, SolverStats]:
        """The equilibrium with its gradient, and the statistics of the forward solve.

        Args:
            solver: the equilibrium solver.
            graph: the equilibrium with its autograd graph.
            z0: optional warm start, shaped like ``graph.injection``.
            on_backward_stats: receives the statistics of backward solves, if the method makes any.

        Returns:
            z, ``(batch, *state_shape)``, differentiable when autograd is on; the forward statistics.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
