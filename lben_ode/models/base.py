"""What every equilibrium model shares: input checks, the solver, caching and implicit gradients."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..activations import Activation, get_activation
from ..errors import ConfigurationError, NonFiniteInputError, ShapeError, UnsupportedSolverError
from ..gradients import EquilibriumGraph, GradientMethod, WarmStart, get_gradient_method
from ..solvers.base import Solver
from ..solvers.problem import EquilibriumOperator, describe_capability
from ..solvers.registry import available, get_solver, solver_class
from ..solvers.stats import SolverStats
from ..validation import all_finite, check_gamma, check_start


class ExplicitWeights(NamedTuple):
    """The explicit equilibrium network ``z = σ(W z + U x + b_z)``, ``y = W_o z + b_y``.

    Shapes for a dense model of width n, input n_x, output n_y: W ``(n, n)``, U ``(n, n_x)``, b_z
    ``(n,)``, W_o ``(n_y, n)``, b_y ``(n_y,)``, lam ``(n,)`` (the diagonal of the metric Λ, or None
    when the model has none). Inputs and states are flattened for convolutional models.
    """

    W: torch.Tensor
    U: torch.Tensor
    b_z: torch.Tensor
    W_o: torch.Tensor
    b_y: torch.Tensor
    lam: torch.Tensor | None


@dataclass
class ForwardParts:
    """One forward pass's pieces, built from the current parameters (with autograd graph).

    Attributes:
        apply_W: z ↦ W z.
        injection: x ↦ U x + b_z.
        output: z ↦ W_o z + b_y.
        operator: W for the solvers, without graph (cached while the parameters are unchanged).
    """

    apply_W: Callable[[torch.Tensor], torch.Tensor]
    injection: Callable[[torch.Tensor], torch.Tensor]
    output: Callable[[torch.Tensor], torch.Tensor]
    operator: EquilibriumOperator


class EquilibriumModel(nn.Module):
    """Base of the equilibrium networks ``z = σ(W z + U x + b_z)``, ``y = W_o z + b_y``.

    Subclasses build the explicit pieces from their free parameters in :meth:`forward_parts` and
    say what input shape they take in :attr:`input_shape`.

    Attributes:
        solver_stats: statistics of the last solves, keys ``"forward"`` and ``"backward"``.
        solver: the equilibrium solver.
        gradient: the gradient method attached to its equilibria (from the solver's options).
    """

    input_shape: tuple[int, ...]
    #: What the model's operator provides beyond W and Wᵀ (its ``PROVIDES``); solvers' ``REQUIRES``
    #: are checked against it when the solver is chosen.
    OPERATOR_PROVIDES: ClassVar[frozenset[str]] = frozenset()
    #: Why the operator lacks a capability, by capability name (for the refusal's message).
    MISSING_CAPABILITY_NOTES: ClassVar[dict[str, str]] = {}

    def __init__(
        self, activation: str | Activation, solver: str | Solver, solver_options: dict[str, Any]
    ) -> None:
        super().__init__()
        self.activation = get_activation(activation)
        self.solver_stats: dict[str, SolverStats] = {}
        self._operator_cache: tuple[Any, EquilibriumOperator, tuple[torch.Tensor, ...]] | None = None
        self.set_solver(solver, **solver_options)

    # -- solver -----------------------------------------------------------------------------------
    @classmethod
    def usable_solvers(cls) -> list[str]:
        """Names of the registered solvers whose requirements this model's operator meets."""
        return [name for name in available() if solver_class(name).REQUIRES <= cls.OPERATOR_PROVIDES]

    def set_solver(self, solver: str | Solver, **options: Any) -> Solver:
        """Choose the equilibrium solver: a registry name with its options (validated here), or a
        :class:`~lben_ode.solvers.base.Solver` instance (then without options). The gradient method
        follows from the solver's options (e.g. ``backward="adjoint"`` of the ODE solver).

        Raises:
            UnknownNameError, ConfigurationError: an unknown solver or option, or a bad value.
            UnsupportedSolverError: the solver needs what this model's operator does not provide
                or cannot use this model's activation (the message lists the solvers that would
                work); the model keeps its solver.
        """
        if isinstance(solver, Solver):
            if options:
                raise ConfigurationError(
                    f"set_solver got a Solver instance and options {sorted(options)}; give the options "
                    f"to the solver, or pass its name {solver.name!r} instead"
                )
        elif isinstance(solver, str):
            solver = get_solver(solver, **options)
        else:
            raise ConfigurationError(
                f"solver must be a registry name ({', '.join(available())}) or a Solver, got {solver!r}"
            )
        missing = solver.REQUIRES - self.OPERATOR_PROVIDES
        if missing:
            notes = self.MISSING_CAPABILITY_NOTES
            needs = ", ".join(
                describe_capability(c) + (f" ({notes[c]})" if c in notes else "") for c in sorted(missing)
            )
            usable = ", ".join(repr(name) for name in self.usable_solvers())
            raise UnsupportedSolverError(
                f"{type(self).__name__} cannot use solver {solver.name!r}: it needs {needs}, which this "
                f"model does not provide. Solvers that work with it: {usable} (solver='fb' is forward-backward)"
            )
        self._check_activation_supported(solver)
        self.gradient: GradientMethod = get_gradient_method(solver.gradient_method())
        self.solver = solver
        return solver

    def _check_activation_supported(self, solver: Solver) -> None:
        """Refuse a solver that cannot use this model's activation, naming the solvers that can."""
        reason = solver.activation_unsupported(self.activation)
        if reason is None:
            return
        act = self.activation
        usable = ", ".join(
            repr(name) for name in self.usable_solvers() if get_solver(name).activation_unsupported(act) is None
        )
        raise UnsupportedSolverError(
            f"{type(self).__name__} cannot use solver {solver.name!r} with activation {self.activation!r}: "
            f"{reason}. Solvers that work with it: {usable}"
        )

    # -- what subclasses provide ------------------------------------------------------------------
    @abstractmethod
    def forward_parts(self) -> ForwardParts:
        """The pieces of the network for the current parameters."""

    @abstractmethod
    def explicit_weights(self) -> ExplicitWeights:
        """The explicit W, U, b_z, W_o, b_y and diag(Λ), detached, for independent checks."""

    @abstractmethod
    def lipschitz_bound(self) -> float | None:
        """The certified ℓ2 Lipschitz constant γ of x ↦ y in the model's input units, or None."""

    # -- caching ----------------------------------------------------------------------------------
    def _parameter_key(self) -> tuple:
        # In-place updates (optimiser steps, load_state_dict) bump a tensor's version counter.
        return tuple((id(t), t._version, t.dtype, t.device) for t in (*self.parameters(), *self.buffers()))

    def cached_operator(
        self, build: Callable[[], EquilibriumOperator], values: tuple[torch.Tensor | None, ...] = ()
    ) -> EquilibriumOperator:
        """The solver operator, rebuilt only when what it is built from has changed.

        Args:
            build: makes the operator from the current parameters.
            values: the tensors the operator is built from (e.g. W and Λ). Besides the parameters'
                version counters (bumped by optimiser steps and ``load_state_dict``), the cache
                compares these by value: writes through ``.data`` (``torch.autograd.gradcheck``,
                weight clipping) and ``torch.func.functional_call`` leave the counters alone.
        """
        key = self._parameter_key()
        current = tuple(v.detach() for v in values if v is not None)
        cache = self._operator_cache
        if (
            cache is None
            or cache[0] != key
            or len(cache[2]) != len(current)
            or not all(torch.equal(a, b) for a, b in zip(cache[2], current, strict=True))
        ):
            self._operator_cache = (key, build(), tuple(v.clone() for v in current))
        return self._operator_cache[1]

    # -- checks -----------------------------------------------------------------------------------
    def solve_dtype(self) -> torch.dtype:
        """The dtype of the parameters, in which every solve runs: float32 or float64.

        Raises:
            ConfigurationError: for half-precision parameters (float16, bfloat16): the solvers'
                factorisations (``linalg.inv``, Cholesky) and tolerances need float32 or float64.
        """
        dtype = next((t.dtype for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()), None)
        if dtype in (torch.float16, torch.bfloat16):
            raise ConfigurationError(
                f"{type(self).__name__} has {dtype} parameters, but equilibrium solves and their factorisations "
                "need float32 or float64: train with precision '16-mixed' or 'bf16-mixed' (autocast; the "
                "solve runs in float32) instead of '16-true' or 'bf16-true', or call model.float()"
            )
        return torch.get_default_dtype() if dtype is None else dtype

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse inputs of the wrong type, dtype, shape or with non-finite entries.

        The input's dtype must be the parameters' (:meth:`solve_dtype`); under autocast,
        :meth:`forward` and :meth:`equilibrium` cast it first.
        """
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ShapeError(f"{type(self).__name__} expects a floating-point tensor, got {x.dtype}")
        dtype = self.solve_dtype()
        if x.dtype != dtype:
            model_cast = f" or the model (model.to({x.dtype}))" if x.dtype in (torch.float32, torch.float64) else ""
            raise ShapeError(
                f"{type(self).__name__} has {dtype} parameters but got a {x.dtype} input: cast the input "
                f"(x.to({dtype})){model_cast}"
            )
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(["batch", *map(str, self.input_shape)])
            raise ShapeError(
                f"{type(self).__name__} expects inputs shaped ({expected}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ShapeError(f"{type(self).__name__} got an empty batch")
        if not all_finite(x):
            raise NonFiniteInputError(f"{type(self).__name__} input contains NaN or infinity")

    # -- forward ----------------------------------------------------------------------------------
    def equilibrium(self, x: torch.Tensor, z0: torch.Tensor | None = None) -> torch.Tensor:
        """The equilibrium z* of ``z = σ(W z + U x + b_z)`` for each input.

        Runs in the parameters' dtype with autocast disabled (see :meth:`forward`).

        Args:
            x: inputs, ``(batch, *input_shape)``, in the parameters' dtype.
            z0: optional warm start, same shape and dtype as the state, finite.

        Returns:
            z*, ``(batch, *state_shape)``; differentiable by implicit differentiation.

        Raises:
            ShapeError: for inputs or a warm start of the wrong type, shape or dtype.
            NonFiniteInputError: for NaN or infinite entries in x or z0.
            ConfigurationError: for a model with half-precision parameters.
        """
        with _autocast_disabled(x) as autocast:
            x, z0 = self._cast_under_autocast(autocast, x, z0)
            return self._equilibrium(x, z0, self.forward_parts())

    def _cast_under_autocast(
        self, autocast: bool, x: torch.Tensor, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Under autocast, earlier layers hand over half-precision activations: the solve takes them
        # in the parameters' dtype. Outside autocast a mismatch is the caller's mistake (check_input).
        self.solve_dtype()  # refuse half-precision parameters before any factorisation runs
        if not autocast:
            return x, z0
        dtype = self.solve_dtype()

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

        return cast(x), cast(z0)

    def _equilibrium(
        self, x: torch.Tensor, z0: torch.Tensor | None, parts: ForwardParts, warm_start: WarmStart | None = None
    ) -> torch.Tensor:
        self.check_input(x)
        injection = parts.injection(x)
        if z0 is not None:
            check_start(z0, injection, "warm start z0")
        solver = self.solver

        def record(backward: SolverStats) -> None:
            self.solver_stats["backward"] = backward

        graph = EquilibriumGraph(parts.apply_W, injection, self.activation, parts.operator, warm_start)
        z, stats = self.gradient.equilibrium(solver, graph, z0, record)
        self.solver_stats = {"forward": stats}
        solver.report(stats, "forward", gradient=z.requires_grad)
        if warm_start is not None:
            warm_start.z = z.detach()
        return z

    def forward(self, x: torch.Tensor, warm_start: WarmStart | None = None) -> torch.Tensor:
        """Outputs (logits) ``y = W_o z* + b_y``, ``(batch, out_features)``, in the parameters' dtype.

        ``warm_start`` (a :class:`~lben_ode.gradients.WarmStart`) gives the starts of the forward
        and adjoint solves (validated like ``z0`` of :meth:`equilibrium`) and receives their
        solutions, ``(batch, *state_shape)`` each; the solves still run to the solver's tolerance.

        Mixed precision: under ``torch.autocast`` (Lightning's ``16-mixed`` and ``bf16-mixed``) the
        whole equilibrium network — building W, its factorisations, the solve and the output layer —
        runs with autocast disabled, in the parameters' dtype (float32), and half-precision inputs
        are cast to it; the logits come back in float32. Half-precision parameters (``16-true``,
        ``bf16-true``, ``model.half()``) are refused with a :class:`ConfigurationError`.
        """
        with _autocast_disabled(x) as autocast:
            if warm_start is None:
                x, z0 = self._cast_under_autocast(autocast, x)
            else:
                x, z0 = self._cast_under_autocast(autocast, x, warm_start.z0)
            parts = self.forward_parts()
            return parts.output(self._equilibrium(x, z0, parts, warm_start))


@contextmanager
def _autocast_disabled(x: Any) -> Iterator[bool]:
    """Disable autocast on ``x``'s device for the duration; yields whether it was enabled."""
    device_type = x.device.type if isinstance(x, torch.Tensor) else "cpu"
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        yield False
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield True


def register_gamma(module: nn.Module, gamma: Any, learn_gamma: bool) -> None:
    """Validate γ and store it on ``module`` as ``log_gamma``.

    ``log_gamma`` becomes a parameter (``learn_gamma``), a buffer (fixed γ), or None (``gamma=None``:
    the unconstrained model, well-posed but with no Lipschitz bound).

    Raises:
        ConfigurationError: γ is not a finite number > 0 (or None), or ``learn_gamma`` without a γ.
    """
    if gamma is None:
        if learn_gamma:
            raise ConfigurationError("learn_gamma=True needs a starting gamma > 0, got gamma=None")
        module.log_gamma = None
        return
    log_gamma = torch.tensor(math.log(check_gamma(gamma)))
    if learn_gamma:
        module.log_gamma = nn.Parameter(log_gamma)
    else:
        module.register_buffer("log_gamma", log_gamma)
