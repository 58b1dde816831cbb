"""The contracting, gain-bounded LBEN-ODE driven by an input signal (DESIGN §5)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from ..activations import Activation, get_activation
from ..errors import ConfigurationError, NonFiniteInputError, ShapeError, StepSizeWarning, TimeGridError
from ..models.base import register_gamma
from ..models.dense import linear_init
from ..validation import all_finite, check_count
from .certificate import ContractionCertificate
from .integrator import IntegratorConfig, fixed_step_problem, largest_fixed_step, make_integrator_config
from .interpolation import check_interpolation
from .parameterization import ContractingWeights, contracting_weights
from .simulation import simulate
from .stats import SimulationStats
from .steady_state import SteadyStateLBEN


class ContractingLBEN(nn.Module):
    """``dz/dt = −z + σ(W z + U u(t) + b_z)``, ``y = W_o z + b_y``: contracting, with incremental gain ≤ γ.

    The weights come from the direct parameterization of Condition 3 (DESIGN §5, see
    :mod:`lben_ode.continuous.parameterization`), so for *every* value of the free parameters, with
    no constraint, projection or penalty:

    - **contraction at rate α**: two solutions with the same input approach each other,
      ``‖z₁(t) − z₂(t)‖_P ≤ e^{−αt} ‖z₁(0) − z₂(0)‖_P`` (the initial state is forgotten);
    - **incremental ℓ2 gain ≤ γ** (when γ is not None): ``∫‖y₁ − y₂‖² dt ≤ γ² ∫‖u₁ − u₂‖² dt +
      γ Δz(0)ᵀPΔz(0)``; in particular the map from input signals to output signals, from a shared
      initial state, is γ-Lipschitz in L2;
    - for a constant input the only steady state is the equilibrium of a well-posed, γ-Lipschitz
      LBEN (:meth:`steady_state`, :meth:`as_equilibrium_model`).

    The input is given as samples ``u`` ``(batch, T, m)`` at times ``t`` ``(T,)`` (regular or
    irregular, strictly increasing, shared by the batch) and interpolated in between (``"linear"``,
    or ``"zoh"``: zero-order hold); torchdiffeq integrates the state from ``z(t[0]) = z0``.

    Args:
        input_size: m, the size of u.
        output_size: p, the size of y.
        width: n, the size of the state z.
        gamma: the incremental ℓ2 gain bound γ > 0 (in the units of u and y), or None for a model
            that is contracting only (U and W_o are then free).
        contraction_rate: α in [0, 1), per unit of t. The vector field's own decay (the −z) has
            rate 1; a larger α forgets the initial state faster and leaves W less freedom. 0.1 by
            default: a guarantee that the past is forgotten on a time scale of 10 time units, at
            little cost in expressiveness.
        activation: a monotone activation with slope in [0, 1] (``relu``, ``leaky_relu``, ``tanh``,
            ``sigmoid``, ``softplus``, or an :class:`~lben_ode.activations.Activation`).
        learn_gamma: learn γ through log γ (the bound then changes during training).
        method: torchdiffeq method (adaptive ones such as ``dopri5``, or fixed-step ones such as
            ``rk4``); see :meth:`set_integrator`.
        gradient: ``"backprop"`` (through torchdiffeq's operations; memory grows with the steps)
            or ``"adjoint"`` (``odeint_adjoint``: memory independent of the steps, an extra
            backward integration).
        interpolation: ``"linear"`` or ``"zoh"``.
        metric_floor: ε > 0 in ``P = L_P L_Pᵀ + εI``.
        **integrator_options: options of the integration (``rtol``, ``atol``, ``step_size``,
            ``first_step``, ``max_step``, ``max_steps``, ``adjoint_rtol``, ``adjoint_atol``,
            ``step_check``), validated; see :data:`~lben_ode.continuous.integrator.INTEGRATOR_OPTIONS`.

    Attributes:
        input_size, output_size, width: m, p and n.
        simulation_stats: the :class:`SimulationStats` of the last simulation (None before one).

    Raises:
        ConfigurationError: γ ≤ 0, α outside [0, 1), a bad size, option or interpolation.
        ActivationError: an activation that is not monotone and slope-restricted in [0, 1].
        UnknownNameError: an unknown method, gradient method, option or interpolation name.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        width: int,
        gamma: float | None = 1.0,
        contraction_rate: float = 0.1,
        activation: str | Activation = "relu",
        learn_gamma: bool = False,
        method: str = "dopri5",
        gradient: str = "backprop",
        interpolation: str = "linear",
        metric_floor: float = 1e-3,
        **integrator_options: Any,
    ) -> None:
        super().__init__()
        self.input_size = check_count("input_size", input_size)
        self.output_size = check_count("output_size", output_size)
        self.width = check_count("width", width)
        self.activation = get_activation(activation)
        register_gamma(self, gamma, learn_gamma)
        self._alpha = _check_rate(contraction_rate)
        self.metric_floor = _check_floor(metric_floor)
        self.interpolation = check_interpolation(interpolation)
        self._integrator_overrides: dict[str, Any] = {}
        self.integrator: IntegratorConfig = IntegratorConfig()
        self.set_integrator(method, gradient, **integrator_options)
        n, m, p = width, input_size, output_size
        self.L_P = nn.Parameter(torch.eye(n))
        self.log_lambda = nn.Parameter(torch.zeros(n))
        self.G = nn.Parameter(linear_init(n, n))
        # With γ these are the free matrices of K(G_o) and K(G_u); without γ, W_o and U themselves.
        self.G_o = nn.Parameter(linear_init(p, n))
        self.G_u = nn.Parameter(linear_init(n, m))
        self.b_z = nn.Parameter(torch.zeros(n))
        self.b_y = nn.Parameter(torch.zeros(p))
        self.simulation_stats: SimulationStats | None = None

    # -- configuration ----------------------------------------------------------------------------
    def set_integrator(self, method: str | None = None, gradient: str | None = None, **options: Any) -> None:
        """Choose the torchdiffeq method, the gradient method and the integration options.

        The options given are merged over those set before while the method stays the same; a new
        method starts from the defaults plus the options given now. Everything is validated here.

        Raises:
            UnknownNameError: an unknown method, gradient method or option name (valid ones listed).
            ConfigurationError: a bad value, or an option that does not apply to the method.
        """
        new_method = self.integrator.method if method is None else method
        new_gradient = self.integrator.gradient if gradient is None else gradient
        overrides = dict(options) if new_method != self.integrator.method else {**self._integrator_overrides, **options}
        self.integrator = make_integrator_config(new_method, new_gradient, overrides)
        self._integrator_overrides = overrides

    # -- the explicit model -----------------------------------------------------------------------
    @property
    def gamma(self) -> torch.Tensor | None:
        """γ as a tensor (None when the model is contracting only)."""
        return None if self.log_gamma is None else self.log_gamma.exp()

    def weights(self) -> ContractingWeights:
        """W, U, b_z, W_o, b_y, P and diag Λ from the free parameters, with autograd graph."""
        return contracting_weights(
            self.L_P, self.log_lambda, self.G, self.G_o, self.G_u, self.b_z, self.b_y,
            self._alpha, self.gamma, self.metric_floor,
        )

    def certificate(self) -> ContractionCertificate:
        """The explicit model and the metrics P, Λ with α and γ (detached), for independent checks."""
        with torch.no_grad():
            w = self.weights()
        return ContractionCertificate(
            *(x.detach().clone() for x in w), alpha=self._alpha, gamma=self.gain_bound()
        )

    def gain_bound(self) -> float | None:
        """γ, the certified incremental ℓ2 gain (None when the model is contracting only)."""
        return None if self.log_gamma is None else float(self.log_gamma.detach().exp())

    def contraction_rate(self) -> float:
        """α, the certified contraction rate in the P-norm (per unit of time)."""
        return self._alpha

    # -- simulation -------------------------------------------------------------------------------
    def forward(self, u: torch.Tensor, t: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """The outputs y at the sample times.

        Args:
            u: input samples ``(batch, T, input_size)`` at the times ``t``.
            t: ``(T,)`` strictly increasing, finite sample times, shared by the batch (any floating
                dtype; integrated in float64; no gradient flows to t).
            z0: the state at ``t[0]``, ``(batch, width)`` or ``(width,)``; zeros when None.

        Returns:
            y, ``(batch, T, output_size)``; ``y[:, 0]`` is the output of z0.

        Raises:
            ShapeError: u or z0 of the wrong type, shape, dtype or device.
            TimeGridError: t not a 1-D floating tensor of len T, or not strictly increasing.
            NonFiniteInputError: NaN or infinity in u, t or z0.
            ConfigurationError: a fixed step that breaks the step rule with ``step_check="raise"``
                (with ``"warn"``, the default, a :class:`StepSizeWarning`).
            IntegrationError: the step budget ran out or torchdiffeq gave up.
        """
        weights = self.weights()
        # A warning names the caller's line: past _simulate, forward and nn.Module's two call frames.
        z = self._simulate(weights, u, t, z0, warning_stacklevel=5)
        return z @ weights.W_o.T + weights.b_y

    def states(self, u: torch.Tensor, t: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """The states z at the sample times, ``(batch, T, width)``; arguments as in :meth:`forward`."""
        return self._simulate(self.weights(), u, t, z0, warning_stacklevel=3)

    def _simulate(
        self,
        weights: ContractingWeights,
        u: torch.Tensor,
        t: torch.Tensor,
        z0: torch.Tensor | None,
        warning_stacklevel: int,
    ) -> torch.Tensor:
        dtype, device = weights.W.dtype, weights.W.device
        self._check_signal(u, dtype, device)
        times = self._check_times(t, u.shape[1], device)
        z0 = self._initial_state(z0, u.shape[0], dtype, device)
        config = self.integrator
        if not config.adaptive and config.options["step_check"] != "off":
            step = largest_fixed_step(times, config.options["step_size"])
            problem = fixed_step_problem(config.method, step, weights.W, self._alpha)
            if problem is not None:
                if config.options["step_check"] == "raise":
                    raise ConfigurationError(problem)
                warnings.warn(problem, StepSizeWarning, stacklevel=warning_stacklevel)
        z, stats = simulate(
            weights.W, weights.U, weights.b_z, u, times, z0, self.activation, config, self.interpolation
        )
        self.simulation_stats = stats
        return z

    def _check_signal(self, u: Any, dtype: torch.dtype, device: torch.device) -> None:
        name = type(self).__name__
        if not isinstance(u, torch.Tensor):
            raise ShapeError(f"{name} expects u as a torch.Tensor, got {type(u).__name__}")
        if u.dim() != 3 or u.shape[2] != self.input_size or u.shape[0] == 0 or u.shape[1] == 0:
            raise ShapeError(
                f"{name} expects u shaped (batch, time, {self.input_size}) with batch, time ≥ 1, got {tuple(u.shape)}"
            )
        if u.dtype != dtype or u.device != device:
            raise ShapeError(
                f"{name} has parameters of dtype {dtype} on {device}; u is {u.dtype} on {u.device} "
                "(convert u, or the model with .to())"
            )
        if not all_finite(u):
            raise NonFiniteInputError(f"{name} input u contains NaN or infinity")

    def _check_times(self, t: Any, length: int, device: torch.device) -> torch.Tensor:
        """t as float64 (long horizons stay exact), after checking it."""
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TimeGridError(f"t must be a floating-point torch.Tensor of sample times, got {kind}")
        if t.dim() != 1 or t.shape[0] != length:
            raise TimeGridError(f"t must be shaped ({length},), one time per sample of u, got {tuple(t.shape)}")
        if t.device != device:
            raise TimeGridError(f"t is on {t.device} but the model is on {device}")
        times = t.detach().to(torch.float64)
        if not all_finite(times):
            raise NonFiniteInputError("t contains NaN or infinity")
        if length > 1:
            gaps = times[1:] - times[:-1]
            if not bool((gaps > 0).all()):
                k = int(torch.nonzero(gaps <= 0)[0]) + 1
                raise TimeGridError(
                    f"t must be strictly increasing; t[{k}] = {float(times[k]):.6g} follows t[{k - 1}] = "
                    f"{float(times[k - 1]):.6g}"
                )
        return times

    def _initial_state(
        self, z0: Any, batch: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        if z0 is None:
            return torch.zeros(batch, self.width, dtype=dtype, device=device)
        if not isinstance(z0, torch.Tensor):
            raise ShapeError(f"z0 must be a torch.Tensor or None, got {type(z0).__name__}")
        if z0.shape == (self.width,):
            z0 = z0.expand(batch, self.width)
        if z0.shape != (batch, self.width):
            raise ShapeError(f"z0 must be shaped ({batch}, {self.width}) or ({self.width},), got {tuple(z0.shape)}")
        if z0.dtype != dtype or z0.device != device:
            raise ShapeError(f"z0 is {z0.dtype} on {z0.device}; the model is {dtype} on {device}")
        if not all_finite(z0):
            raise NonFiniteInputError("z0 contains NaN or infinity")
        return z0

    # -- the link to equilibrium models -----------------------------------------------------------
    def as_equilibrium_model(self, solver: str = "pr", **solver_options: Any) -> SteadyStateLBEN:
        """The steady-state map ``u ↦ y*`` as an equilibrium model sharing this model's parameters.

        Its ``lipschitz_bound()`` is γ; certificates, robustness tools and the Lightning classifier
        work on it. See :class:`~lben_ode.continuous.steady_state.SteadyStateLBEN`.
        """
        return SteadyStateLBEN(self, solver, **solver_options)

    def steady_state(self, u_const: torch.Tensor, solver: str = "pr", **solver_options: Any) -> torch.Tensor:
        """The steady state z* for constant inputs, by an equilibrium solver (default Peaceman-Rachford).

        Args:
            u_const: ``(batch, input_size)``.
            solver: registry name (``lben_ode.solvers.available()``).
            **solver_options: that solver's options (``tol``, ``max_iter``, …).

        Returns:
            z*, ``(batch, width)``, differentiable by implicit differentiation; the solve's
            statistics are reported (non-convergence warns or raises) as for every equilibrium model.
        """
        return self.as_equilibrium_model(solver, **solver_options).equilibrium(u_const)

    def extra_repr(self) -> str:
        g = self.gain_bound()
        opts = {k: v for k, v in self._integrator_overrides.items()}
        return (
            f"input_size={self.input_size}, output_size={self.output_size}, width={self.width}, "
            f"gamma={'None' if g is None else f'{g:.4g}'}, contraction_rate={self._alpha:g}, "
            f"activation={self.activation!r}, method={self.integrator.method!r}, "
            f"gradient={self.integrator.gradient!r}, interpolation={self.interpolation!r}"
            + (f", {opts}" if opts else "")
        )


def _check_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
        raise ConfigurationError(
            f"contraction_rate must be a float in [0, 1) (the vector field's own decay has rate 1), got {value!r}"
        )
    return float(value)


def _check_floor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"metric_floor must be a finite float > 0 (the floor of P's eigenvalues), got {value!r}"
        )
    return float(value)
