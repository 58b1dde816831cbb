"""What a gradient method is given, and what it gives back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..activations import Activation
from ..solvers.base import Solver
from ..solvers.problem import EquilibriumOperator, FixedPointProblem
from ..solvers.stats import SolverStats

#: Called with the statistics of each backward solve (the model stores them).
BackwardStatsSink = Callable[[SolverStats], None]


@dataclass
class EquilibriumGraph:
    """One forward pass's equilibrium ``z = σ(W z + injection)`` with its autograd graph.

    Attributes:
        apply_W: z ↦ W z built from the parameters, so gradients reach them.
        injection: ``U x + b_z`` with its graph to x and the parameters, ``(batch, *state_shape)``.
        activation: σ.
        operator: W for the solvers, without graph.
    """

    apply_W: Callable[[torch.Tensor], torch.Tensor]
    injection: torch.Tensor
    activation: Activation
    operator: EquilibriumOperator

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
