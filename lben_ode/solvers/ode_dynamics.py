"""The equilibrium ODE ``dz/dt = F(z) − z`` as torchdiffeq sees it, and torchdiffeq's methods.

Kept apart from the solver so that the counting of evaluations and steps, the step budget, and the
split of torchdiffeq's methods into adaptive and fixed-step ones live in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# torchdiffeq publishes no list of its methods; its method table is the one source of truth.
from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
from torchdiffeq._impl.solvers import FixedGridODESolver

#: torchdiffeq methods that choose their own step from an error estimate (rtol/atol).
ADAPTIVE_METHODS: tuple[str, ...] = tuple(
    sorted(m for m, cls in _TORCHDIFFEQ_SOLVERS.items() if issubclass(cls, RKAdaptiveStepsizeODESolver))
)
#: Left out: torchdiffeq 0.2.5's explicit Adams-Bashforth is wrong even on dy/dt = −y (its result
#: grows as the step shrinks); its implicit Adams-Moulton ('implicit_adams') is fine.
BROKEN_METHODS: tuple[str, ...] = ("explicit_adams",)
#: torchdiffeq methods that take a fixed ``step_size``.
FIXED_STEP_METHODS: tuple[str, ...] = tuple(
    sorted(
        m
        for m, cls in _TORCHDIFFEQ_SOLVERS.items()
        if issubclass(cls, FixedGridODESolver) and m not in BROKEN_METHODS
    )
)
#: Every torchdiffeq method the ODE solver accepts ('scipy_solver' is left out: it leaves torch).
METHODS: tuple[str, ...] = tuple(sorted(ADAPTIVE_METHODS + FIXED_STEP_METHODS))


class StepBudgetExhausted(Exception):
    """Raised from inside torchdiffeq's loop when the step budget is used up.

    Attributes:
        time: integration time reached (start of the step that was refused).
        state: the state at that time (an accepted state of the integration).
    """

    def __init__(self, time: float, state: torch.Tensor) -> None:
        super().__init__(f"step budget exhausted at t={time:g}")
        self.time = time
        self.state = state


class CountingDynamics(nn.Module):
    """The right-hand side ``f(t, z) = F(z) − z`` of the equilibrium ODE, counting its work.

    ``F`` is the fixed-point map ``z ↦ σ(W z + b)``, so the ODE's steady states are exactly the
    equilibria and ``‖f(z)‖`` is the fixed-point residual. The counters are plain Python ints
    incremented by torchdiffeq's calls, so counting never synchronises with the device.

    Args:
        fixed_point_map: F, acting on a batch of states.
        adaptive: whether the method is adaptive (it then reports accepted steps separately).

    Attributes:
        evaluations: calls of the right-hand side (each is one application of W and σ).
        steps: integration steps attempted (torchdiffeq's ``callback_step``).
        accepted: steps accepted by an adaptive method's error control.
        last_step: size of the last attempted step (0-dim tensor); it seeds the next chunk's step.
        last_start: (time, state) at the start of the last attempted step, an accepted state of
            the integration (tensors, read only when an integration fails).
        step_limit: when set, an attempt to take step number ``step_limit + 1`` raises
            :class:`StepBudgetExhausted` carrying the state reached.
    """

    def __init__(self, fixed_point_map: Callable[[torch.Tensor], torch.Tensor], adaptive: bool) -> None:
        super().__init__()
        self.fixed_point_map = fixed_point_map
        self.adaptive = adaptive
        self.evaluations = 0
        self.steps = 0
        self.accepted = 0
        self.last_step: torch.Tensor | None = None
        self.last_start: tuple[torch.Tensor, torch.Tensor] | None = None
        self.step_limit: int | None = None
        if adaptive:
            # Only adaptive methods call this; registering it for fixed-step methods would make
            # torchdiffeq warn that the method does not support it.
            self.callback_accept_step = self._on_accept

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """dz/dt at state ``z`` (the time ``t`` does not enter: the ODE is autonomous)."""
        self.evaluations += 1
        return self.fixed_point_map(z) - z

    def callback_step(self, t0: torch.Tensor, z0: torch.Tensor, dt: torch.Tensor) -> None:
        """Called by torchdiffeq before each attempted step; enforces the step budget."""
        if self.step_limit is not None and self.steps >= self.step_limit:
            raise StepBudgetExhausted(float(t0), z0)
        self.steps += 1
        self.last_step = dt
        self.last_start = (t0, z0)

    def _on_accept(self, t0: torch.Tensor, z0: torch.Tensor, dt: torch.Tensor) -> None:
        self.accepted += 1

    def accepted_steps(self) -> int:
        """Accepted steps: counted by the error control for adaptive methods, else every step."""
        return self.accepted if self.adaptive else self.steps

    def rejected_steps(self) -> int:
        """Steps an adaptive method rejected and retried with a smaller step (0 for fixed steps)."""
        return self.steps - self.accepted if self.adaptive else 0


def graph_leaves(output: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors requiring grad that ``output`` was computed from (walking its graph).

    ``output`` itself counts when it is such a leaf.
    """
    if output.grad_fn is None:
        return [output] if output.requires_grad else []
    leaves: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
            continue
        stack.extend(child for child, _ in node.next_functions)
    return leaves


def describe_integrator_failure(exc: AssertionError, t: float) -> str:
    """A one-line reason from torchdiffeq's assertion message (which may embed a whole tensor)."""
    message = str(exc)
    if message.startswith("underflow in dt"):
        return f"the step size underflowed near t={t:.4g} (torchdiffeq could not meet rtol/atol)"
    if message.startswith("non-finite values in state"):
        return f"the state became non-finite near t={t:.4g}"
    return f"torchdiffeq stopped near t={t:.4g}: {message[:200]}"
