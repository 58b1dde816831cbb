"""The equilibrium as the steady state of the neural ODE ``dz/dt = −z + σ(W z + U x + b_z)`` (DESIGN §2)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torchdiffeq import odeint, odeint_adjoint

from ..activations import Activation
from ..errors import ConfigurationError, ConvergenceError
from .base import Solver, _synchronize, unreliable_gradient_note
from .ode_dynamics import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    METHODS,
    CountingDynamics,
    StepBudgetExhausted,
    graph_leaves,
)
from .options import Option, one_of, positive_float, positive_int
from .problem import RESIDUAL_FLOOR, FixedPointProblem
from .registry import register
from .stats import SolverStats

if TYPE_CHECKING:
    from ..models.base import ForwardParts


@dataclass
class ODESolverStats(SolverStats):
    """:class:`SolverStats` of the ODE solver, with why the integration stopped early, if it did.

    Attributes:
        stop_reason: empty when the integration ran until every sample converged (or diverged);
            otherwise what ended it (time or step budget, or a failure of the integrator).
    """

    stop_reason: str = ""


@dataclass
class _StepControl:
    """The integration settings of one solve, which a detected instability makes more careful."""

    rtol: float
    atol: float
    max_step: float | None
    step_size: float | None
    reductions: int = 0


@dataclass
class _Check:
    """The state at a residual check and what the check found.

    Attributes:
        z: the state; t: its integration time.
        residual: per-sample relative residual ``‖z − F(z)‖ / ‖z‖`` (what ``tol`` applies to).
        done: samples now under ``tol``; first_hit: accepted steps when each last came under it.
        worst: largest relative residual among the finite samples not done.
        worst_abs: largest absolute residual ``‖z − F(z)‖`` (= ‖dz/dt‖) among them; it measures
            progress: it decays with the state's distance to z*, while the relative residual of a
            state running off to infinity stays bounded.
        settled: every sample is done or non-finite. non_finite: some sample is not finite.
    """

    z: torch.Tensor
    t: float
    residual: torch.Tensor
    done: torch.Tensor
    first_hit: torch.Tensor
    worst: float
    worst_abs: float
    settled: bool
    non_finite: bool

    @classmethod
    def measure(
        cls,
        problem: FixedPointProblem,
        z: torch.Tensor,
        t: float,
        tol: float,
        previous: _Check | None,
        accepted_steps: int,
    ) -> _Check:
        """Compute the residuals of ``z``, with one host sync for the scalars."""
        absolute = (z - problem.fixed_point_map(z)).flatten(1).norm(dim=1)
        residual = absolute / (z.flatten(1).norm(dim=1) + RESIDUAL_FLOOR)
        finite = torch.isfinite(residual)
        done = residual <= tol
        if previous is None:
            first_hit = torch.zeros_like(residual, dtype=torch.long)
        else:
            first_hit = torch.where(done & ~previous.done, accepted_steps, previous.first_hit)
        open_samples = ~done & finite
        zero = torch.zeros_like(residual)
        scalars = torch.stack(
            [
                torch.where(open_samples, residual, zero).max(),
                torch.where(open_samples, absolute, zero).max(),
                (done | ~finite).all().to(residual.dtype),
                (~finite).any().to(residual.dtype),
            ]
        )
        worst, worst_abs, settled, non_finite = scalars.tolist()
        return cls(z, t, residual, done, first_hit, worst, worst_abs, bool(settled), bool(non_finite))


class _BackwardIsAdjoint:
    """``differentiable`` of the ODE solver: read from an instance's ``backward`` option.

    On the class it is False, the default (``backward="implicit"``), as for the other solvers.
    """

    def __get__(self, solver: Solver | None, owner: type | None = None) -> bool:
        return solver is not None and solver.options["backward"] == "adjoint"


def _at_least_one(v: Any) -> bool:
    """Check: a finite float ≥ 1."""
    return positive_float()(v) and v >= 1


@register
class SteadyStateODE(Solver):
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
    at every step; that is torchdiffeq's design and costs nothing extra on a CPU.)

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

    **Gradients.** With ``backward="implicit"`` (default) the model attaches the implicit gradient
    and solves the adjoint equilibrium ``u = D(Wᵀu + g)`` with this solver: the ODE
    ``du/dt = −u + D(Wᵀu + g)``. With ``backward="adjoint"``, the solver is :attr:`differentiable`:
    it finds the horizon T by the chunked solve without a graph, then integrates again over
    [0, T] with ``torchdiffeq.odeint_adjoint``, which differentiates the integrated map
    ``z0 ↦ z(T)``, storing the state every ``adjoint_interval`` (see :meth:`_checkpoints`). That
    gradient tends to the implicit one as T grows; with a warm start near z*, T is short and the
    gradient is that of the short integration, not the implicit one.
    """

    name = "ode"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "method": Option(
            "dopri5",
            one_of(*METHODS),
            f"one of torchdiffeq's methods: {', '.join(METHODS)}",
            "integration method; adaptive: " + ", ".join(ADAPTIVE_METHODS) + "; fixed-step (need "
            "step_size): " + ", ".join(FIXED_STEP_METHODS),
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

    #: True with ``backward="adjoint"``: the model then calls :meth:`solve_differentiable`.
    differentiable = _BackwardIsAdjoint()

    # -- configuration ----------------------------------------------------------------------------

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps."""
        return self.options["method"] in ADAPTIVE_METHODS

    def tolerances(self) -> tuple[float, float]:
        """(rtol, atol) handed to torchdiffeq: the options, or ``tol / 10`` (see "Step control")."""
        derived = self.tol / 10
        rtol, atol = self.options["rtol"], self.options["atol"]
        return (derived if rtol is None else rtol), (derived if atol is None else atol)

    # -- the forward solve ------------------------------------------------------------------------
    def solve(
        self, problem: FixedPointProblem, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ODESolverStats]:
        """Integrate from ``z0`` (zeros when None) until every sample's residual is under ``tol``.

        Args:
            problem: the equilibrium ``z = σ(W z + b)`` of a batch (also the adjoint equilibrium
                of implicit gradients, whose ODE is ``du/dt = −u + D(Wᵀu + g)``).
            z0: warm start, shaped like ``problem.injection``.

        Returns:
            The state reached, ``(batch, *state_shape)``, and its :class:`ODESolverStats`.
        """
        inj = problem.injection
        _synchronize(inj.device)
        start = time.perf_counter()
        with torch.no_grad():
            z = torch.zeros_like(inj) if z0 is None else z0
            dynamics = CountingDynamics(problem.fixed_point_map, self.adaptive)
            z, stats = self._integrate_to_steady_state(problem, dynamics, z)
        _synchronize(inj.device)
        stats.time_s = time.perf_counter() - start
        return z, stats

    def _integrate_to_steady_state(
        self, problem: FixedPointProblem, dynamics: CountingDynamics, z: torch.Tensor
    ) -> tuple[torch.Tensor, ODESolverStats]:
        tol, max_time, budget = self.tol, self.options["max_time"], self.options["max_iter"]
        dynamics.step_limit = budget
        control = _StepControl(*self.tolerances(), self.options["max_step"], self.options["step_size"])
        check = _Check.measure(problem, z, 0.0, tol, None, 0)
        # The best check so far (smallest absolute residual): where a stalled integration restarts.
        best, stalled = check, 0
        chunk, checks, reason = self.options["chunk_time"], 1, ""
        while not (check.settled or reason):
            if check.t >= max_time:
                reason = f"the integration reached max_time={max_time:g}"
                break
            z, t = check.z, check.t
            try:
                z, t = self._integrate_chunk(dynamics, z, t, min(t + chunk, max_time), control)
            except StepBudgetExhausted as stop:
                z, t = stop.state, stop.time
                reason = f"the step budget max_iter={budget} ran out at t={t:.4g}"
            except AssertionError as exc:  # torchdiffeq signals its failures by assertions
                reason = _describe_integrator_failure(exc, t)
                z, t = _last_good_state(dynamics, z, t)
            new = _Check.measure(problem, z, t, tol, check, dynamics.accepted_steps())
            checks += 1
            if reason:
                check = new
                break
            if new.non_finite:
                new, stalled = self._stabilise(control, dynamics, best), 0
                chunk = min(chunk, self.options["chunk_time"])
            elif new.worst_abs < best.worst_abs or new.settled:
                chunk = self._next_chunk(chunk, check, new)
                best, stalled = new, 0
            else:
                # ‖dz/dt‖ may rise before it decays (a stable but non-normal linearisation), so
                # growth over one chunk is not instability: only `patience` chunks in a row that
                # do not beat the best residual are, and then the steps shrink and the
                # integration resumes from the best state.
                stalled += 1
                if stalled >= self.options["patience"]:
                    new, stalled = self._stabilise(control, dynamics, best), 0
                    chunk = min(chunk, self.options["chunk_time"])
            check = new
        z, residual = check.z, check.residual
        converged = torch.isfinite(residual) & (residual <= tol)
        if not reason and not bool(converged.all()):
            reason = "the state of some samples became non-finite"
        total = dynamics.accepted_steps()
        extra = {
            "integration_time": check.t,
            "accepted_steps": float(total),
            "rejected_steps": float(dynamics.rejected_steps()),
            "checks": float(checks),
            "step_reductions": float(control.reductions),
        }
        if control.max_step is not None:
            extra["max_step"] = control.max_step
        if control.step_size is not None:
            extra["step_size"] = control.step_size
        stats = ODESolverStats(
            solver=self.name,
            iterations=torch.where(converged, check.first_hit, torch.full_like(check.first_hit, total)),
            residual=residual,
            converged=converged,
            tol=tol,
            time_s=0.0,
            total_iterations=total,
            function_evaluations=dynamics.evaluations,
            extra=extra,
            stop_reason=reason,
        )
        return z, stats

    def _stabilise(self, control: _StepControl, dynamics: CountingDynamics, best: _Check) -> _Check:
        """React to a non-finite state or a stalled residual: take smaller steps from the best state.

        An adaptive method whose steps sit at its stability limit makes the state jitter at about
        the rtol/atol level instead of settling: its steps are capped at 0.7 times the last one. A
        fixed step outside the method's stability region makes the state grow: it is halved. In
        both cases the integration goes on from the best state checked so far.
        """
        control.reductions += 1
        if self.adaptive:
            if dynamics.last_step is not None:
                control.max_step = 0.7 * float(dynamics.last_step)
        else:
            control.step_size = control.step_size / 2
        return best

    def _next_chunk(self, chunk: float, before: _Check, after: _Check) -> float:
        """Length of the next chunk from the last two checks: the time that the measured decay rate
        of the absolute residual predicts the worst relative residual still needs to reach ``tol``
        (10% margin), at most ``chunk_growth`` times the last chunk, at least a quarter of
        ``chunk_time``."""
        longest = self.options["chunk_growth"] * chunk
        if not (0 < after.worst_abs < before.worst_abs and after.worst > 0) or after.t <= before.t:
            return longest
        rate = math.log(before.worst_abs / after.worst_abs) / (after.t - before.t)
        needed = 1.1 * math.log(after.worst / self.tol) / rate
        return min(longest, max(needed, self.options["chunk_time"] / 4))

    def _integrate_chunk(
        self, dynamics: CountingDynamics, z: torch.Tensor, t0: float, t1: float, control: _StepControl
    ) -> tuple[torch.Tensor, float]:
        """z(t1) from z(t0); fixed-step methods round t1 up to whole steps. Returns (z, t1)."""
        times, options = self._time_grid(dynamics, z, t0, t1, control)
        path = odeint(
            dynamics,
            z,
            times,
            rtol=control.rtol,
            atol=control.atol,
            method=self.options["method"],
            options=options,
        )
        return path[-1], float(times[-1])

    def _time_grid(
        self, dynamics: CountingDynamics, z: torch.Tensor, t0: float, t1: float, control: _StepControl
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The ``t`` argument of odeint over [t0, t1] and the method's options."""
        if self.adaptive:
            first = dynamics.last_step
            if first is None:
                first = self.options["first_step"] or 0.5
            options: dict[str, Any] = {"first_step": first}
            if control.max_step is not None:
                options["max_step"] = control.max_step
            return torch.tensor([t0, t1], dtype=torch.float64, device=z.device), options
        n_steps = max(1, math.ceil((t1 - t0) / control.step_size - 1e-9))
        times = torch.tensor([t0, t0 + n_steps * control.step_size], dtype=torch.float64, device=z.device)
        return times, {"grid_constructor": _uniform_grid(control.step_size)}

    # -- differentiating through the integration --------------------------------------------------
    def _checkpoints(self, horizon: float, control: _StepControl, device: torch.device) -> torch.Tensor:
        """Output times of the adjoint integration: 0, then every ``adjoint_interval`` up to T.

        The adjoint pass rebuilds z by integrating the ODE backwards, which is unstable for this
        contracting flow (errors grow like e^{‖λ‖ t}); torchdiffeq restarts that reconstruction from
        the stored forward state at every output time, so close output times keep it accurate.
        Fixed-step methods get output times on their grid (whole numbers of steps).
        """
        interval = self.options["adjoint_interval"]
        if control.step_size is not None:
            per = max(1, round(interval / control.step_size))
            n_points = math.ceil(round(horizon / control.step_size) / per)
            return torch.arange(n_points + 1, dtype=torch.float64, device=device) * (per * control.step_size)
        n_points = max(1, math.ceil(horizon / interval))
        return torch.linspace(0.0, horizon, n_points + 1, dtype=torch.float64, device=device)

    def solve_differentiable(
        self,
        parts: ForwardParts,
        injection: torch.Tensor,
        activation: Activation,
        z0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ODESolverStats]:
        """z(T) with gradients by torchdiffeq's adjoint method (``backward="adjoint"``).

        The horizon T is found first by :meth:`solve` without a graph; then ``odeint_adjoint``
        integrates again over [0, T]. For a flat state the right-hand side uses Wᵀ materialised as
        ``apply_W(I)`` (one n×n product with its graph), so the adjoint pass differentiates through
        W's construction once rather than at every evaluation; other states use ``apply_W`` with the
        leaf tensors behind it as adjoint parameters.

        Args:
            parts: the model's pieces; ``apply_W`` and ``operator`` are used.
            injection: ``U x + b_z`` with its graph, ``(batch, *state_shape)``.
            activation: σ.
            z0: optional warm start (gradients reach it too).

        Returns:
            z(T), differentiable, and the statistics (residual measured on the returned state;
            time and function evaluations include the horizon search).
        """
        problem = FixedPointProblem(parts.operator, injection.detach(), activation)
        _, stats = self.solve(problem, None if z0 is None else z0.detach())
        start = time.perf_counter()
        horizon = max(stats.extra["integration_time"], self.options["chunk_time"])
        fixed_point_map, params = _differentiable_map(parts.apply_W, injection, activation)
        dynamics = CountingDynamics(fixed_point_map, self.adaptive)
        z_start = torch.zeros_like(injection) if z0 is None else z0
        # The same step control as the search ended with (a cap or halving it needed still holds).
        control = _StepControl(
            *self.tolerances(), stats.extra.get("max_step"), stats.extra.get("step_size")
        )
        times, options = self._time_grid(dynamics, z_start, 0.0, horizon, control)
        times = self._checkpoints(float(times[-1]), control, z_start.device)
        adjoint_options = {**options, "norm": "seminorm"}
        try:
            path = odeint_adjoint(
                dynamics,
                z_start,
                times,
                rtol=control.rtol,
                atol=control.atol,
                method=self.options["method"],
                options=options,
                adjoint_params=params,
                adjoint_options=adjoint_options,
            )
        except AssertionError as exc:
            raise ConvergenceError(
                f"solver 'ode' (backward='adjoint'): {_describe_integrator_failure(exc, 0.0)} while "
                f"integrating over the horizon T={horizon:.4g} that the search had reached"
            ) from exc
        z = path[-1]
        with torch.no_grad():
            residual = problem.relative_residual(z.detach())
        stats.residual = residual
        stats.converged = torch.isfinite(residual) & (residual <= self.tol)
        stats.function_evaluations = (stats.function_evaluations or 0) + dynamics.evaluations
        stats.time_s += time.perf_counter() - start
        stats.extra["integration_time"] = float(times[-1])
        return z, stats

    # -- reporting --------------------------------------------------------------------------------
    def report(self, stats: SolverStats, what: str, gradient: bool = False) -> None:
        """Warn or raise (per ``on_nonconvergence``) when some sample did not converge, saying why."""
        if stats.all_converged:
            return
        n_bad = int((~stats.converged).sum())
        worst = float(stats.residual.nan_to_num(float("inf")).max())
        reason = getattr(stats, "stop_reason", "") or "the residual stopped decreasing"
        message = (
            f"ode {what} solve: {n_bad} of {stats.converged.numel()} samples did not reach "
            f"tol={stats.tol:g} (worst relative residual {worst:.3g}) after "
            f"{stats.total_iterations} accepted steps and integration time "
            f"{stats.extra.get('integration_time', float('nan')):.4g}: {reason}; raise max_iter or "
            "max_time, or see model.solver_stats"
        )
        self._raise_or_warn(message + unreliable_gradient_note(what, gradient))


def _differentiable_map(
    apply_W: Callable[[torch.Tensor], torch.Tensor], injection: torch.Tensor, activation: Activation
) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[torch.Tensor, ...]]:
    """F(z) = σ(W z + injection) and the tensors odeint_adjoint must differentiate it by.

    A flat state gets Wᵀ materialised (with its graph): the adjoint parameters are then Wᵀ and the
    injection, whose own graphs carry the gradients on once. Otherwise the parameters are the leaf
    tensors behind ``apply_W`` and the injection together: each path to a leaf is then counted
    once (a leaf that also fed the injection would be counted twice if the injection were an
    adjoint parameter as well).
    """
    if injection.dim() == 2:
        eye = torch.eye(injection.shape[1], dtype=injection.dtype, device=injection.device)
        weight_t = apply_W(eye)  # a linear map on rows is z ↦ z @ apply_W(I)
        return (lambda z: activation(z @ weight_t + injection)), (weight_t, injection)
    leaves: dict[int, torch.Tensor] = {}
    for output in (apply_W(torch.zeros_like(injection[:1])), injection):
        leaves.update((id(leaf), leaf) for leaf in graph_leaves(output))
    return (lambda z: activation(apply_W(z) + injection)), tuple(leaves.values())


def _uniform_grid(step: float) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
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


def _describe_integrator_failure(exc: AssertionError, t: float) -> str:
    """A one-line reason from torchdiffeq's assertion message (which may embed a whole tensor)."""
    message = str(exc)
    if message.startswith("underflow in dt"):
        return f"the step size underflowed near t={t:.4g} (torchdiffeq could not meet rtol/atol)"
    if message.startswith("non-finite values in state"):
        return f"the state became non-finite near t={t:.4g}"
    return f"torchdiffeq stopped near t={t:.4g}: {message[:200]}"
