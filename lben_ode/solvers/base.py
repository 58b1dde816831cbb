"""The solver interface, and the iterative solver that :func:`~lben_ode.solvers.loop.run` drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..activations import Activation
from ..errors import UnsupportedSolverError
from .loop import Check, run
from .loop import synchronize as _synchronize  # noqa: F401  (kept for code that imported it from here)
from .options import COMMON_OPTIONS, Option, validate_options
from .problem import FixedPointProblem, describe_capability, operator_capabilities
from .reporting import report_nonconvergence
from .results import Result
from .stats import SolverStats


class Solver(ABC):
    """An equilibrium solver: finds z with ``z = σ(W z + b)`` for every sample of a batch.

    Subclasses set ``name`` and ``OPTIONS`` (their own options, merged with
    :data:`~lben_ode.solvers.options.COMMON_OPTIONS`), declare in ``REQUIRES`` what they need from
    the model's operator beyond W and Wᵀ (e.g. ``"resolvent"``), and implement :meth:`solve`.

    Attributes:
        options: the validated option values.
        differentiable: True when the gradient method this solver's options choose
            (:meth:`gradient_method`) differentiates through the solve instead of using the
            implicit gradient.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]] = {}
    #: Capabilities (see :func:`~lben_ode.solvers.problem.operator_capabilities`) the solver needs.
    REQUIRES: ClassVar[frozenset[str]] = frozenset()
    differentiable: bool = False

    def __init__(self, **options: Any) -> None:
        self.options = validate_options(self.name, self.all_options(), options)
        self.differentiable = self.gradient_method() != "implicit"

    def gradient_method(self) -> str:
        """Name of the gradient method (in :mod:`lben_ode.gradients`) the model should attach to
        this solver's equilibria: ``"implicit"`` unless an option of the solver chooses another."""
        return "implicit"

    @classmethod
    def all_options(cls) -> dict[str, Option]:
        """Every option this solver accepts, with its default and meaning."""
        return {**COMMON_OPTIONS, **cls.OPTIONS}

    @property
    def tol(self) -> float:
        """Relative residual tolerance."""
        return self.options["tol"]

    @abstractmethod
    def solve(
        self, problem: FixedPointProblem, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, SolverStats]:
        """Solve ``problem`` from ``z0`` (zeros when None). Returns z and its statistics."""

    def activation_unsupported(self, activation: Activation) -> str | None:
        """Why this solver (with its options) cannot solve equilibria with ``activation``, or None
        when it can. The default takes every activation; a solver that needs more of σ (e.g.
        piecewise linearity) overrides it."""
        return None

    def check_supported(self, problem: FixedPointProblem) -> None:
        """Raise :class:`UnsupportedSolverError` if the problem's operator lacks a capability in
        ``REQUIRES`` or the solver cannot use the problem's activation (:meth:`activation_unsupported`)."""
        reason = self.activation_unsupported(problem.activation)
        if reason is not None:
            raise UnsupportedSolverError(f"solver {self.name!r} cannot use activation {problem.activation!r}: {reason}")
        missing = self.REQUIRES - operator_capabilities(problem.operator)
        if missing:
            needs = ", ".join(describe_capability(c) for c in sorted(missing))
            raise UnsupportedSolverError(
                f"solver {self.name!r} needs {needs}, which {type(problem.operator).__name__} does not "
                "provide; use solver='fb' (or another solver that only applies W and Wᵀ)"
            )

    def report(self, stats: SolverStats, what: str, gradient: bool = False) -> None:
        """Warn or raise (per ``on_nonconvergence``) when some sample did not converge, saying why
        (see :func:`~lben_ode.solvers.reporting.report_nonconvergence`).

        Args:
            stats: the solve's statistics.
            what: ``"forward"`` or ``"backward"`` (the adjoint solve of an implicit gradient).
            gradient: whether gradients will be computed from this forward solve; the message
                then says they are unreliable (a backward solve always says so).
        """
        report_nonconvergence(stats, what, self.options["on_nonconvergence"], gradient, stacklevel=4)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class IterativeSolver(Solver):
    """A solver run by the shared loop (:func:`~lben_ode.solvers.loop.run`): it gives the state and one step.

    Subclasses implement :meth:`init_state`, :meth:`step` and :meth:`current`; the other methods are
    hooks with defaults that most solvers keep. The loop checks convergence at most every ``check_every``
    steps only, so the device is not synchronised with the host at every step. A sample has
    converged when its relative residual is finite and at most ``tol``; NaN or infinity never counts.
    """

    #: Check the starting state before the first step (a warm start at z* then takes no step).
    check_at_start: ClassVar[bool] = False
    #: The statistics class the loop fills in.
    stats_type: ClassVar[type[SolverStats]] = SolverStats

    @abstractmethod
    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> Any:
        """The iteration's state at the start (it may hold more than z)."""

    @abstractmethod
    def step(self, problem: FixedPointProblem, state: Any) -> Any:
        """One iteration (no host synchronisation)."""

    @abstractmethod
    def current(self, state: Any) -> torch.Tensor:
        """The current estimate of z."""

    # -- hooks with defaults ----------------------------------------------------------------------
    def check_interval(self) -> int:
        """Most steps between convergence checks: the ``check_every`` option."""
        return self.options["check_every"]

    def step_budget(self, problem: FixedPointProblem) -> int | None:
        """Most steps of one solve (None: the solver stops itself, see :meth:`terminate`): ``max_iter``."""
        return self.options["max_iter"]

    def progress(self, state: Any, steps: int) -> int:
        """The iteration count the statistics report after ``steps`` loop steps (default: ``steps``)."""
        return steps

    def review(
        self, problem: FixedPointProblem, state: Any, before: Check | None, after: Check
    ) -> tuple[Any, Check]:
        """Look at a check (``before`` is the previous one, None at the first) and return the state
        and check to go on from; the default keeps both."""
        return state, after

    def terminate(self, state: Any, check: Check) -> tuple[Result, str] | None:
        """A reason of the solver's own to stop after ``check`` (result code, cause), or None."""
        return None

    def function_evaluations(self, state: Any) -> int | None:
        """Evaluations of the fixed-point map or right-hand side, if the solver counts them."""
        return None

    def extra_stats(self, state: Any, checks: int) -> dict[str, float]:
        """Solver-specific values for :attr:`SolverStats.extra`."""
        return {}

    def solve(
        self, problem: FixedPointProblem, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, SolverStats]:
        """Solve ``problem`` from ``z0`` (zeros when None) with the shared loop. Returns z and its statistics."""
        return run(self, problem, z0)
