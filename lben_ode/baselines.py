"""Unconstrained sequence models to compare the contracting LBEN-ODE with, on the same interface.

- :class:`NeuralODE`: ``dz/dt = f_θ(z, u(t))`` with an MLP ``f_θ``, ``y = C z + d``, integrated by
  torchdiffeq exactly as :class:`~lben_ode.ContractingLBEN` is (same methods, options, input
  interpolation and statistics), but with no stability or gain guarantee.
- :class:`RecurrentNetwork`: a discrete-time GRU or LSTM (``torch.nn``) reading one input sample
  per step, with a linear read-out; it ignores the sample times apart from their number.

Both take ``forward(u (batch, T, m), t (T,), z0=None) -> y (batch, T, p)`` and expose
``simulation_stats``, ``gain_bound()`` (None: no bound) and ``set_integrator``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .continuous.integrator import IntegratorConfig, make_integrator_config
from .continuous.interpolation import SampledSignal, check_interpolation
from .continuous.simulation import method_options
from .continuous.stats import SimulationStats
from .errors import ConfigurationError, IntegrationError, NonFiniteInputError, ShapeError
from .solvers.ode_dynamics import CountingDynamics, StepBudgetExhausted
from .validation import all_finite, check_count


def _check_inputs(model: nn.Module, u: Any, t: Any) -> torch.Tensor:
    name = type(model).__name__
    if not isinstance(u, torch.Tensor) or u.dim() != 3 or u.shape[2] != model.input_size:
        shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ShapeError(f"{name} expects u shaped (batch, time, {model.input_size}), got {shape}")
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.shape[0] != u.shape[1]:
        raise ShapeError(f"{name} expects t shaped ({u.shape[1]},), one time per sample of u")
    if not all_finite(u):
        raise NonFiniteInputError(f"{name} input u contains NaN or infinity")
    times = t.detach().to(torch.float64)
    if u.shape[1] > 1 and not bool((times[1:] > times[:-1]).all()):
        raise ShapeError(f"{name}: t must be strictly increasing")
    return times


class _MLPField(CountingDynamics):
    """``f(t, z) = MLP([z, u(t)])`` counting evaluations and steps like the LBEN's vector field."""

    def __init__(self, mlp: nn.Module, signal: SampledSignal, adaptive: bool) -> None:
        super().__init__(fixed_point_map=None, adaptive=adaptive)  # type: ignore[arg-type]
        self.mlp = mlp
        self.signal = signal

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        return self.mlp(torch.cat([z, self.signal(t)], dim=-1))


class NeuralODE(nn.Module):
    """Unconstrained neural ODE ``dz/dt = f_θ(z, u(t))``, ``y = C z + d`` (a baseline: no guarantees).

    ``f_θ`` is an MLP with ``hidden_layers`` tanh layers of ``hidden`` units on the concatenation of
    state and input. Integration is configured as for :class:`~lben_ode.ContractingLBEN`
    (``method``, ``gradient``, ``interpolation`` and the validated ``**integrator_options``).

    Args:
        input_size: m.
        output_size: p.
        width: n, the size of the state z.
        hidden: units per hidden layer of the MLP.
        hidden_layers: number of hidden layers (≥ 1).
        method, gradient, interpolation, **integrator_options: as for ContractingLBEN.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        width: int = 8,
        hidden: int = 64,
        hidden_layers: int = 1,
        method: str = "dopri5",
        gradient: str = "backprop",
        interpolation: str = "linear",
        **integrator_options: Any,
    ) -> None:
        super().__init__()
        self.input_size = check_count("input_size", input_size)
        self.output_size = check_count("output_size", output_size)
        self.width = check_count("width", width)
        check_count("hidden", hidden)
        check_count("hidden_layers", hidden_layers)
        self.interpolation = check_interpolation(interpolation)
        layers: list[nn.Module] = []
        size = width + input_size
        for _ in range(hidden_layers):
            layers += [nn.Linear(size, hidden), nn.Tanh()]
            size = hidden
        layers.append(nn.Linear(size, width))
        self.field = nn.Sequential(*layers)
        self.readout = nn.Linear(width, output_size)
        self.integrator = IntegratorConfig()
        self._overrides: dict[str, Any] = {}
        self.set_integrator(method, gradient, **integrator_options)
        self.simulation_stats: SimulationStats | None = None

    def set_integrator(self, method: str | None = None, gradient: str | None = None, **options: Any) -> None:
        """Choose the torchdiffeq method, gradient method and options (validated as for ContractingLBEN)."""
        new_method = self.integrator.method if method is None else method
        overrides = dict(options) if new_method != self.integrator.method else {**self._overrides, **options}
        self.integrator = make_integrator_config(
            new_method, self.integrator.gradient if gradient is None else gradient, overrides
        )
        self._overrides = overrides

    def gain_bound(self) -> None:
        """No bound: the network is unconstrained."""
        return None

    def states(self, u: torch.Tensor, t: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """States ``(batch, T, width)`` at the sample times."""
        times = _check_inputs(self, u, t)
        z0 = torch.zeros(u.shape[0], self.width, dtype=u.dtype, device=u.device) if z0 is None else z0
        config = self.integrator
        field = _MLPField(self.field, SampledSignal(times, u, self.interpolation), config.adaptive)
        field.step_limit = config.options["max_steps"]
        rtol, atol = config.tolerances
        options = method_options(config, times, self.interpolation)
        start = time.perf_counter()
        try:
            if config.gradient == "adjoint":
                path = odeint_adjoint(
                    field,
                    z0,
                    times,
                    rtol=rtol,
                    atol=atol,
                    method=config.method,
                    options=options,
                    adjoint_params=(*self.field.parameters(), u),
                )
            else:
                path = odeint(field, z0, times, rtol=rtol, atol=atol, method=config.method, options=options)
        except StepBudgetExhausted as stop:
            raise IntegrationError(
                f"the simulation used up max_steps={field.step_limit} steps at t={stop.time:.4g}"
            ) from stop
        except AssertionError as exc:  # torchdiffeq reports failures by assertions
            raise IntegrationError(f"torchdiffeq stopped: {str(exc)[:200]}") from exc
        self.simulation_stats = SimulationStats(
            config.method,
            config.gradient,
            field.evaluations,
            field.accepted_steps(),
            field.rejected_steps(),
            time.perf_counter() - start,
            _counter=field,
        )
        return path.permute(1, 0, 2)

    def forward(self, u: torch.Tensor, t: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs ``(batch, T, output_size)`` at the sample times."""
        return self.readout(self.states(u, t, z0))


#: Recurrent cells of :class:`RecurrentNetwork`.
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentNetwork(nn.Module):
    """Discrete-time GRU or LSTM with a linear read-out: ``y_k = C h_k + d`` (a baseline: no guarantees).

    One recurrent step per input sample, so it assumes the sampling of its training data (``t`` only
    fixes the number of samples). ``simulation_stats.function_evaluations`` counts cell steps.

    Args:
        input_size: m.
        output_size: p.
        width: hidden size of the cell.
        cell: ``"gru"`` or ``"lstm"``.
        layers: stacked recurrent layers.
    """

    def __init__(self, input_size: int, output_size: int, width: int = 32, cell: str = "gru", layers: int = 1) -> None:
        super().__init__()
        if cell not in CELLS:
            from .errors import unknown_name

            raise unknown_name("cell", cell, list(CELLS))
        self.input_size = check_count("input_size", input_size)
        self.output_size = check_count("output_size", output_size)
        self.width = check_count("width", width)
        self.rnn = CELLS[cell](input_size, width, num_layers=check_count("layers", layers), batch_first=True)
        self.readout = nn.Linear(width, output_size)
        self.simulation_stats: SimulationStats | None = None

    def set_integrator(self, method: str | None = None, gradient: str | None = None, **options: Any) -> None:
        """A discrete-time model has no integrator: any setting is an error."""
        raise ConfigurationError(
            f"{type(self).__name__} is discrete-time: it has no ODE method, step or gradient method"
        )

    def gain_bound(self) -> None:
        """No bound: the network is unconstrained."""
        return None

    def forward(self, u: torch.Tensor, t: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs ``(batch, T, output_size)``; ``z0`` (if given) is the initial hidden state ``(batch, width)``."""
        _check_inputs(self, u, t)
        start = time.perf_counter()
        hidden = None
        if z0 is not None:
            h = z0[None].expand(self.rnn.num_layers, -1, -1).contiguous()
            hidden = (h, torch.zeros_like(h)) if isinstance(self.rnn, nn.LSTM) else h
        out, _ = self.rnn(u, hidden)
        steps = u.shape[1]
        self.simulation_stats = SimulationStats("recurrent", "backprop", steps, steps, 0, time.perf_counter() - start)
        return self.readout(out)
