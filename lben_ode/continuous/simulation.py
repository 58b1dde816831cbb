"""Integrating ``dz/dt = −z + σ(W z + e(t))`` over a time grid with torchdiffeq, counting the work."""

from __future__ import annotations

import time
from typing import Any

import torch
from torchdiffeq import odeint, odeint_adjoint

from ..activations import Activation
from ..errors import IntegrationError
from ..solvers.ode_dynamics import CountingDynamics, StepBudgetExhausted
from .integrator import IntegratorConfig, sample_aligned_grid
from .interpolation import SampledSignal
from .stats import SimulationStats


class DrivenDynamics(CountingDynamics):
    """The vector field ``f(t, z) = −z + σ(z Wᵀ + e(t))`` with ``e(t) = U u(t) + b_z`` interpolated.

    It counts evaluations and steps as :class:`~lben_ode.solvers.ode_dynamics.CountingDynamics`
    does (the input makes it time-dependent, so ``forward`` is its own).

    Args:
        weight_t: Wᵀ, ``(n, n)``.
        injection: the signal ``e(t)``, ``(batch, n)`` at each time.
        activation: σ.
        adaptive: whether the method is adaptive (it then counts accepted steps separately).
    """

    def __init__(
        self, weight_t: torch.Tensor, injection: SampledSignal, activation: Activation, adaptive: bool
    ) -> None:
        super().__init__(fixed_point_map=None, adaptive=adaptive)  # type: ignore[arg-type]  (forward is overridden)
        self.weight_t = weight_t
        self.injection = injection
        self.activation = activation

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """dz/dt at time ``t`` and state ``z`` ``(batch, n)``."""
        self.evaluations += 1
        return self.activation(z @ self.weight_t + self.injection(t)) - z


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def method_options(config: IntegratorConfig, times: torch.Tensor, interpolation: str) -> dict[str, Any]:
    """torchdiffeq's ``options`` for this configuration and input grid.

    Every step ends on the sample times, where the interpolated input has a kink (linear) or a jump
    (zero-order hold): adaptive methods get them as ``step_t`` (linear) or ``jump_t`` (zoh: the
    method restarts there, evaluating the input as a limit from the right), fixed-step ones a grid
    through them (see :func:`~lben_ode.continuous.integrator.sample_aligned_grid`) and, with zoh,
    the last stage of each step evaluated as a left limit (``perturb``).
    """
    opts = config.options
    if config.adaptive:
        out: dict[str, Any] = {k: opts[k] for k in ("first_step", "max_step") if opts[k] is not None}
        if times.numel() > 2:
            # A step across a sample time sees a jump (zoh) or a kink (linear) of the input, which
            # the error control answers with rejected steps; steps that end there see neither.
            out["jump_t" if interpolation == "zoh" else "step_t"] = times[1:-1]
        return out
    return {"grid_constructor": sample_aligned_grid(opts["step_size"]), "perturb": interpolation == "zoh"}


def simulate(
    W: torch.Tensor,
    injection_samples: torch.Tensor,
    times: torch.Tensor,
    z0: torch.Tensor,
    activation: Activation,
    config: IntegratorConfig,
    interpolation: str,
) -> tuple[torch.Tensor, SimulationStats]:
    """The state at every sample time.

    Args:
        W: ``(n, n)``, with its graph.
        injection_samples: ``U u_k + b_z`` at the sample times, ``(batch, T, n)``, with its graph.
        times: ``(T,)`` strictly increasing, float64.
        z0: the state at ``times[0]``, ``(batch, n)``.
        activation: σ.
        config: the validated integrator configuration.
        interpolation: ``"linear"`` or ``"zoh"``.

    Returns:
        z at the sample times ``(batch, T, n)`` (z0 first) and the :class:`SimulationStats`.

    Raises:
        IntegrationError: the step budget ran out, or torchdiffeq gave up (step size underflow,
            non-finite state).
    """
    signal = SampledSignal(times, injection_samples, interpolation)
    weight_t = W.T
    dynamics = DrivenDynamics(weight_t, signal, activation, config.adaptive)
    dynamics.step_limit = config.options["max_steps"]
    options = method_options(config, times, interpolation)
    rtol, atol = config.tolerances
    _synchronize(z0.device)
    start = time.perf_counter()
    try:
        if times.numel() == 1:
            path = z0[None]
        elif config.gradient == "adjoint":
            adjoint_rtol, adjoint_atol = config.adjoint_tolerances
            adjoint_options = {**options, "norm": "seminorm"} if config.adaptive else dict(options)
            path = odeint_adjoint(
                dynamics,
                z0,
                times,
                rtol=rtol,
                atol=atol,
                method=config.method,
                options=options,
                adjoint_rtol=adjoint_rtol,
                adjoint_atol=adjoint_atol,
                adjoint_options=adjoint_options,
                adjoint_params=(weight_t, injection_samples),
            )
        else:
            path = odeint(dynamics, z0, times, rtol=rtol, atol=atol, method=config.method, options=options)
    except StepBudgetExhausted as stop:
        raise IntegrationError(
            f"the simulation used up its budget of max_steps={dynamics.step_limit} steps at t={stop.time:.4g} "
            f"(of {float(times[-1]):.4g}); raise max_steps, or loosen rtol/atol"
        ) from stop
    except AssertionError as exc:  # torchdiffeq reports its failures by assertions
        raise IntegrationError(f"torchdiffeq stopped: {str(exc)[:200]}") from exc
    _synchronize(z0.device)
    stats = SimulationStats(
        method=config.method,
        gradient=config.gradient,
        function_evaluations=dynamics.evaluations,
        accepted_steps=dynamics.accepted_steps(),
        rejected_steps=dynamics.rejected_steps(),
        time_s=time.perf_counter() - start,
        _counter=dynamics,
    )
    return path.permute(1, 0, 2), stats
