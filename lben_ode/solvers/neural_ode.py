"""The equilibrium as the steady state of the neural ODE ``dz/dt = −z + σ(W z + U x + b_z)`` (DESIGN §2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torchdiffeq import odeint

from ..errors import ConfigurationError
from .base import IterativeSolver
from .loop import Check
from .ode_dynamics import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    METHODS,
    CountingDynamics,
    StepBudgetExhausted,
    describe_integrator_failure,
)
from .options import Option, one_of, positive_float, positive_int
from .problem import FixedPointProblem
from .registry import register
from .results import Result
from .stats import SolverStats
from .steady_state_steps import AUTO, numerical_range_box, steady_state_step


@dataclass
class ODESolverStats(SolverStats):
    """:class:`SolverStats` of the ODE solver: ``iterations`` count accepted integration steps, and
    ``stop_reason`` says what ended an integration that stopped early (a time or step budget, or a
    failure of the integrator)."""

    iteration_unit: ClassVar[str] = "accepted steps"


@dataclass
class StepControl:
    """The integration settings of one solve, which a detected instability makes more careful."""

    method: str
    rtol: float
    atol: float
    max_step: float | None
    step_size: float | None
    reductions: int = 0

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps."""
        return self.method in ADAPTIVE_METHODS


@dataclass
class ODEState:
    """The loop state of the ODE solver: one loop step integrates one chunk of time.

    Attributes:
        z: the state at time ``t``.
        dynamics: the right-hand side, counting evaluations and steps (and enforcing ``max_iter``).
        control: the step control, made more careful after an instability.
        chunk: length of the next chunk of integration time.
        checked_t: time of the last check (the one the next chunk's decay rate is measured against).
        best: the check with the smallest absolute residual so far (None before the first chunk):
            where a stalled integration restarts; best_t: its time.
        stalled: chunks in a row that did not beat ``best``.
        stop: (result, cause) once the integration cannot go on (a budget, or a failure).
    """

    z: torch.Tensor
    t: float
    dynamics: CountingDynamics
    control: StepControl
    chunk: float
    checked_t: float = 0.0
    best: Check | None = None
    best_t: float = 0.0
    stalled: int = 0
    stop: tuple[Result, str] | None = None


def _at_least_one(v: Any) -> bool:
    """Check: a finite float ≥ 1."""
    return positive_float()(v) and v >= 1


@register
class SteadyStateODE(IterativeSolver):
    """Integrates ``dz/dt = −z + σ(W z + b)`` with torchdiffeq until the state is an equilibrium.

    The ODE's only steady state is the equilibrium z*, and it is exponentially stable for a
    well-posed model (DESIGN §2), but no fixed horizon is known to reach it, so steady state is
    *measured*: the integration runs in chunks of time, and after each chunk every sample's relative
    residual ``‖z − σ(Wz+b)‖ / ‖z‖`` is computed; the solve stops when all samples are under ``tol``
    (a sample that reached it is left to integrate with the others; it stays at its equilibrium).

    **Why chunks, not torchdiffeq's event handling.** An event function would be evaluated at every
    step (one extra application of W per step, and a host sync per step to compare its sign), and
    torchdiffeq then root-finds the crossing time by bisection on the interpolant, which a steady
    state does not need. Chunks cost one residual evaluation and one host sync per chunk. The chunk
    lengths adapt: the first is ``chunk_time``; afterwards the measured exponential decay of the
    worst unconverged residual predicts the time still needed, capped at ``chunk_growth`` times the
    previous chunk (residuals decay like ``e^{−μ t}``, so the prediction is good once the transient
    has passed). Each chunk starts with the last step size of the previous one. (Inside a chunk,
    torchdiffeq's adaptive methods themselves compare the step error with the tolerance on the host
    at every step, and its fixed-step loop compares each step's end time with the output times, on the
    state's device; that is torchdiffeq's design, costs nothing extra on a CPU, and is one host
    synchronisation per step on a GPU.)

    **Step control.** A Runge-Kutta method's fixed points are exactly the ODE's steady states, so
    the trajectory need not be accurate for the end point to be exact; what matters near the end
    is stability. An adaptive method's error control lets its step grow to the edge of the method's
    stability region, where the state jitters at some tens of times rtol instead of settling, so
    ``rtol`` and ``atol`` default to ``tol / 10``. Growth of the absolute residual ``‖dz/dt‖`` over
    one chunk is not taken as instability: on a stable problem whose linearisation is not normal
    it rises before it decays (and would rise again on every retry). When ``patience`` chunks in a
    row fail to lower the best absolute residual seen (the jitter, or a fixed step outside the
    stability region), or the state becomes non-finite, the integration resumes from the best
    state with smaller steps: an adaptive method's steps are capped at 0.7 times the last one, a
    fixed step is halved (``step_size`` is thus the initial step). ``extra`` reports the number of
    such reductions and the final ``max_step`` or ``step_size``.

    **Budgets.** ``max_time`` bounds the integration time and ``max_iter`` the number of attempted
    steps (accepted and rejected). When either runs out, or torchdiffeq gives up (step size
    underflow, non-finite state), the last state is returned and the unconverged samples are
    reported through :meth:`report` (a :class:`ConvergenceWarning`, or a :class:`ConvergenceError`
    with ``on_nonconvergence="raise"``) with the reason.

    **Statistics** (:class:`ODESolverStats`): ``iterations`` are accepted steps (per sample: those
    taken up to the check at which it first converged); ``function_evaluations`` counts calls of
    the ODE right-hand side (the initial-step estimate of adaptive methods included, the residual
    checks between chunks not included: each chunk of an adaptive method costs one evaluation to
    start, then each attempted step its stages, e.g. 6 for dopri5); ``extra`` holds
    ``integration_time`` (the final time), ``accepted_steps``, ``rejected_steps`` (adaptive
    methods; counted through torchdiffeq's step-acceptance callback), ``checks`` (residual
    evaluations, the one at the start included) and ``step_reductions``.

    **The loop.** The solve runs in the shared loop (:func:`~lben_ode.solvers.loop.run`): one loop
    step is one chunk, each chunk is followed by a check (the starting state is checked too, so a
    warm start at z* takes no step), and the hooks carry what is particular to integration: the
    step control (:meth:`review`), the budgets and integrator failures (:meth:`terminate`) and the
    counters (:meth:`extra_stats`).

    **Gradients** are not this solver's business: the ``backward`` option names the gradient
    method (:meth:`gradient_method`) that the model attaches, from :mod:`lben_ode.gradients`. With
    ``"implicit"`` (default) the adjoint equilibrium ``u = D(Wᵀu + g)`` is solved by this solver:
    the ODE ``du/dt = −u + D(Wᵀu + g)``. With ``"adjoint"``, torchdiffeq's adjoint method
    differentiates the integration over the horizon this solver found
    (:class:`~lben_ode.gradients.adjoint.ODEAdjoint`).
    """

    name = "ode"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "method": Option(
            AUTO,
            one_of(AUTO, *METHODS),
            f"'auto' or one of torchdiffeq's methods: {', '.join(METHODS)}",
            "integration method; 'auto': the fixed-step method (euler, midpoint, heun3 or rk4) and step with "
            "the fastest decay to steady state that the model's numerical range predicts (dopri5 for a "
            "model without monotonicity constants); adaptive: " + ", ".join(ADAPTIVE_METHODS)
            + "; fixed-step (need step_size): " + ", ".join(FIXED_STEP_METHODS),
        ),
        "step_size": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "initial time step of the fixed-step methods (required by them, refused by adaptive "
            "methods); halved whenever the residual grows over a chunk",
        ),
        "first_step": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "first step of an adaptive method (None: 0.5, the scale of the −z decay)",
        ),
        "max_step": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "largest step of an adaptive method (None: no limit)",
        ),
        "rtol": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "torchdiffeq's relative error tolerance per step (None: derived from tol)",
        ),
        "atol": Option(
            None,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "torchdiffeq's absolute error tolerance per step (None: derived from tol)",
        ),
        "chunk_time": Option(
            2.0, positive_float(), "a float > 0", "integration time before the first residual check"
        ),
        "chunk_growth": Option(
            2.0, _at_least_one, "a float ≥ 1", "largest ratio of a chunk's length to the previous one's"
        ),
        "patience": Option(
            3,
            positive_int,
            "an int ≥ 1",
            "chunks in a row that may fail to lower the best absolute residual ‖dz/dt‖ before the "
            "steps are made smaller (‖dz/dt‖ may rise before it decays on a stable problem)",
        ),
        "max_time": Option(
            1000.0, positive_float(), "a float > 0", "integration-time budget of one solve (ODE time units)"
        ),
        "max_iter": Option(
            2000, positive_int, "an int ≥ 1", "budget of integration steps (accepted and rejected) of one solve"
        ),
        "check_every": Option(
            5,
            positive_int,
            "an int ≥ 1",
            "not used: the ODE solver checks convergence between chunks of time (see chunk_time)",
        ),
        "adjoint_interval": Option(
            2.0,
            positive_float(),
            "a float > 0",
            "with backward='adjoint': integration time between the stored states from which the "
            "backward pass restarts its reconstruction of z",
        ),
        "backward": Option(
            "implicit",
            one_of("implicit", "adjoint"),
            "'implicit' or 'adjoint'",
            "gradient: implicit differentiation at the equilibrium, or torchdiffeq's adjoint method "
            "through the integration",
        ),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        method, step = self.options["method"], self.options["step_size"]
        if method == AUTO:
            given = [name for name in ("step_size", "first_step", "max_step") if self.options[name] is not None]
            if given:
                raise ConfigurationError(
                    f"solver 'ode' with method='auto' chooses its own steps; {', '.join(given)} needs an explicit "
                    f"method (fixed-step: {', '.join(FIXED_STEP_METHODS)}; adaptive: {', '.join(ADAPTIVE_METHODS)})"
                )
        self._chosen: tuple[tuple[float, float, float] | None, tuple[str, float | None]] | None = None
        if method in FIXED_STEP_METHODS and step is None:
            raise ConfigurationError(
                f"solver 'ode' with the fixed-step method {method!r} needs step_size (e.g. step_size=0.5); "
                f"or choose an adaptive method: {', '.join(ADAPTIVE_METHODS)}"
            )
        if method in ADAPTIVE_METHODS and step is not None:
            raise ConfigurationError(
                f"solver 'ode' option step_size is for fixed-step methods ({', '.join(FIXED_STEP_METHODS)}); "
                f"the adaptive method {method!r} chooses its own steps (its first one is first_step)"
            )
        for adaptive_only in ("first_step", "max_step"):
            if method in FIXED_STEP_METHODS and self.options[adaptive_only] is not None:
                raise ConfigurationError(
                    f"solver 'ode' option {adaptive_only} is for adaptive methods; {method!r} uses step_size"
                )

    #: A warm start at the equilibrium takes no step.
    check_at_start: ClassVar[bool] = True
    stats_type: ClassVar[type[SolverStats]] = ODESolverStats

    def gradient_method(self) -> str:
        """The ``backward`` option: ``"implicit"`` (default) or ``"adjoint"`` (see :mod:`lben_ode.gradients`)."""
        return self.options["backward"]

    # -- configuration ----------------------------------------------------------------------------

    @property
    def adaptive(self) -> bool:
        """Whether the configured method chooses its own steps (``'auto'`` picks a fixed-step one)."""
        return self.options["method"] in ADAPTIVE_METHODS

    def integration_method(self, problem: FixedPointProblem) -> tuple[str, float | None]:
        """(method, initial step_size) of a solve of ``problem``: the options, or for ``'auto'`` the
        choice of :func:`~lben_ode.solvers.steady_state_steps.steady_state_step` from the operator's
        numerical-range box (``dopri5`` without constants). The choice is kept while the box is the same."""
        method = self.options["method"]
        if method != AUTO:
            return method, self.options["step_size"]
        box = numerical_range_box(problem.operator)
        if self._chosen is None or self._chosen[0] != box:
            choice = None if box is None else steady_state_step(*box)
            self._chosen = (box, ("dopri5", None) if choice is None else (choice.method, choice.step_size))
        return self._chosen[1]

    def tolerances(self) -> tuple[float, float]:
        """(rtol, atol) handed to torchdiffeq: the options, or ``tol / 10`` (see "Step control")."""
        derived = self.tol / 10
        rtol, atol = self.options["rtol"], self.options["atol"]
        return (derived if rtol is None else rtol), (derived if atol is None else atol)

    # -- the loop's hooks: one loop step is one chunk of integration ------------------------------
    def check_interval(self) -> int:
        """Every chunk ends with a check (``check_every`` is not used)."""
        return 1

    def step_budget(self, problem: FixedPointProblem) -> None:
        """No budget of chunks: ``max_iter`` bounds the integration steps inside them, ``max_time`` the time."""
        return None

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> ODEState:
        """The state at t = 0, with fresh counters and step control."""
        method, step_size = self.integration_method(problem)
        control = StepControl(method, *self.tolerances(), self.options["max_step"], step_size)
        dynamics = CountingDynamics(problem.fixed_point_map, control.adaptive)
        dynamics.step_limit = self.options["max_iter"]
        return ODEState(z0, 0.0, dynamics, control, self.options["chunk_time"])

    def step(self, problem: FixedPointProblem, state: ODEState) -> ODEState:
        """Integrate one chunk. A budget running out or a failure of torchdiffeq is not raised: it
        ends the solve (:meth:`terminate`) with the last state reached."""
        z, t = state.z, state.t
        t1 = min(t + state.chunk, self.options["max_time"])
        try:
            z, t = self._integrate_chunk(state.dynamics, z, t, t1, state.control)
        except StepBudgetExhausted as stop:
            z, t = stop.state, stop.time
            budget = self.options["max_iter"]
            state.stop = (Result.MAX_STEPS, f"the step budget max_iter={budget} ran out at t={t:.4g}")
        except AssertionError as exc:  # torchdiffeq signals its failures by assertions
            state.stop = (Result.INTEGRATOR_FAILED, describe_integrator_failure(exc, t))
            z, t = _last_good_state(state.dynamics, z, t)
        state.z, state.t = z, t
        return state

    def current(self, state: ODEState) -> torch.Tensor:
        return state.z

    def progress(self, state: ODEState, steps: int) -> int:
        """Accepted integration steps."""
        return state.dynamics.accepted_steps()

    def review(
        self, problem: FixedPointProblem, state: ODEState, before: Check | None, after: Check
    ) -> tuple[ODEState, Check]:
        """Judge progress over a window of chunks: a non-finite state, or ``patience`` chunks in a
        row that do not beat the best absolute residual, make the steps more careful
        (:meth:`_stabilise`) and restart from the best state; otherwise size the next chunk."""
        assert before is not None  # the ODE solver checks its starting state
        best = before if state.best is None else state.best
        elapsed, state.checked_t = state.t - state.checked_t, state.t
        if state.stop is not None:  # the solve ends here, with the state reached
            return state, after
        if after.non_finite:
            if best.non_finite:  # non-finite already at the best state (e.g. a NaN input): smaller steps cannot help
                state.stop = (Result.NONFINITE, "the residual of some samples was non-finite from the start")
                return state, after
            return self._restart_from_best(state, best), best
        if after.worst_abs < best.worst_abs or after.settled:
            state.chunk = self._next_chunk(state.chunk, before, after, elapsed)
            state.best, state.best_t, state.stalled = after, state.t, 0
            return state, after
        # ‖dz/dt‖ may rise before it decays (a stable but non-normal linearisation), so growth over
        # one chunk is not instability: only `patience` chunks in a row that do not beat the best
        # residual are.
        state.best, state.stalled = best, state.stalled + 1
        if state.stalled >= self.options["patience"]:
            return self._restart_from_best(state, best), best
        return state, after

    def _restart_from_best(self, state: ODEState, best: Check) -> ODEState:
        """Smaller steps (:meth:`_stabilise`) from the best state checked so far, with a short chunk."""
        self._stabilise(state.control, state.dynamics)
        state.z, state.t = best.z, state.best_t
        state.checked_t, state.stalled = state.t, 0
        state.chunk = min(state.chunk, self.options["chunk_time"])
        return state

    def terminate(self, state: ODEState, check: Check) -> tuple[Result, str] | None:
        """Stop when a budget ran out or the integrator failed inside a chunk, or at ``max_time``."""
        if state.stop is not None:
            return state.stop
        if state.t >= self.options["max_time"]:
            return Result.MAX_TIME, f"the integration reached max_time={self.options['max_time']:g}"
        return None

    def function_evaluations(self, state: ODEState) -> int:
        return state.dynamics.evaluations

    def extra_stats(self, state: ODEState, checks: int) -> dict[str, float]:
        """``integration_time``, ``accepted_steps``, ``rejected_steps``, ``checks``,
        ``step_reductions``, and the final ``max_step`` or ``step_size`` when set."""
        control = state.control
        extra = {
            "integration_time": state.t,
            "accepted_steps": float(state.dynamics.accepted_steps()),
            "rejected_steps": float(state.dynamics.rejected_steps()),
            "checks": float(checks),
            "step_reductions": float(control.reductions),
        }
        if control.max_step is not None:
            extra["max_step"] = control.max_step
        if control.step_size is not None:
            extra["step_size"] = control.step_size
        return extra

    def _stabilise(self, control: StepControl, dynamics: CountingDynamics) -> None:
        """React to a non-finite state or a stalled residual: take smaller steps.

        An adaptive method whose steps sit at its stability limit makes the state jitter at about
        the rtol/atol level instead of settling: its steps are capped at 0.7 times the last one. A
        fixed step outside the method's stability region makes the state grow: it is halved. In
        both cases the integration goes on from the best state checked so far.
        """
        control.reductions += 1
        if control.adaptive:
            if dynamics.last_step is not None:
                control.max_step = 0.7 * float(dynamics.last_step)
        else:
            control.step_size = control.step_size / 2

    def _next_chunk(self, chunk: float, before: Check, after: Check, elapsed: float) -> float:
        """Length of the next chunk from the last two checks: the time that the measured decay rate
        of the absolute residual predicts the worst relative residual still needs to reach ``tol``
        (10% margin), at most ``chunk_growth`` times the last chunk, at least a quarter of
        ``chunk_time``."""
        longest = self.options["chunk_growth"] * chunk
        if not (0 < after.worst_abs < before.worst_abs and after.worst > 0) or elapsed <= 0:
            return longest
        rate = math.log(before.worst_abs / after.worst_abs) / elapsed
        needed = 1.1 * math.log(after.worst / self.tol) / rate
        return min(longest, max(needed, self.options["chunk_time"] / 4))

    def _integrate_chunk(
        self, dynamics: CountingDynamics, z: torch.Tensor, t0: float, t1: float, control: StepControl
    ) -> tuple[torch.Tensor, float]:
        """z(t1) from z(t0); fixed-step methods round t1 up to whole steps. Returns (z, t1)."""
        times, options = self.time_grid(dynamics, z, t0, t1, control)
        if not control.adaptive:
            # The grid from host values: uniform_grid would read the device tensor t at every chunk.
            end = self.grid_end(t0, t1, control)
            n_steps = max(1, round((end - t0) / control.step_size))
            grid = torch.linspace(t0, end, n_steps + 1, dtype=torch.float64, device=z.device)
            options = {**options, "grid_constructor": lambda func, y0, t: grid}
        path = odeint(
            dynamics,
            z,
            times,
            rtol=control.rtol,
            atol=control.atol,
            method=control.method,
            options=options,
        )
        return path[-1], self.grid_end(t0, t1, control)

    def grid_end(self, t0: float, t1: float, control: StepControl) -> float:
        """Where an integration over [t0, t1] ends: t1, or for a fixed step the next whole step
        (computed on the host, so that no device value is read)."""
        if control.adaptive:
            return t1
        return t0 + max(1, math.ceil((t1 - t0) / control.step_size - 1e-9)) * control.step_size

    def time_grid(
        self, dynamics: CountingDynamics, z: torch.Tensor, t0: float, t1: float, control: StepControl
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The ``t`` argument of odeint over [t0, t1] and the method's options (``dynamics`` seeds an
        adaptive method's first step with its last one)."""
        if control.adaptive:
            first = dynamics.last_step
            if first is None:
                first = self.options["first_step"] or 0.5
            options: dict[str, Any] = {"first_step": first}
            if control.max_step is not None:
                options["max_step"] = control.max_step
            return torch.tensor([t0, t1], dtype=torch.float64, device=z.device), options
        times = torch.tensor([t0, self.grid_end(t0, t1, control)], dtype=torch.float64, device=z.device)
        return times, {"grid_constructor": uniform_grid(control.step_size)}


def uniform_grid(step: float) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A torchdiffeq ``grid_constructor``: equal steps of about ``step`` from t[0] to t[-1].

    torchdiffeq's own ``step_size`` grid can end with a sliver of a step from rounding; this one
    hits both ends exactly, in either direction (the adjoint pass integrates backwards, interval by
    interval).
    """

    def grid(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n_steps = max(1, round(abs(float(t[-1] - t[0])) / step))
        fractions = torch.arange(n_steps + 1, dtype=t.dtype, device=t.device) / n_steps
        points = t[0] + (t[-1] - t[0]) * fractions
        points[-1] = t[-1]
        return points

    return grid


def _last_good_state(dynamics: CountingDynamics, z: torch.Tensor, t: float) -> tuple[torch.Tensor, float]:
    """After a failed chunk: the start of its last attempted step if finite (progress is kept),
    else ``(z, t)``, the state the chunk started from."""
    if dynamics.last_start is not None:
        t_last, z_last = dynamics.last_start
        if float(t_last) > t and bool(torch.isfinite(z_last).all()):
            return z_last, float(t_last)
    return z, t
