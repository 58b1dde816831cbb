"""Typed exceptions and warnings raised by lben-ode.

Every error a user can trigger with bad input is a subclass of :class:`LBENError` (and of the
matching built-in, so ``except ValueError`` keeps working).
"""

from __future__ import annotations


class LBENError(Exception):
    """Base class of every lben-ode error."""


class ConfigurationError(LBENError, ValueError):
    """A constructor argument or option has a wrong value (e.g. γ ≤ 0, a width of 0)."""


class UnknownNameError(ConfigurationError, KeyError):
    """An unknown solver, activation, metric or option name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ActivationError(ConfigurationError):
    """The activation is not monotone and slope-restricted in [0, 1], or is unknown."""


class CheckpointError(ConfigurationError):
    """A checkpoint file is missing, unreadable, damaged, or not one of an lben-ode Lightning module."""


class ShapeError(LBENError, ValueError):
    """An input tensor has the wrong shape for the model."""


class NonFiniteInputError(LBENError, ValueError):
    """An input tensor contains NaN or infinity."""


class UnsupportedSolverError(ConfigurationError):
    """The chosen solver cannot be used with this model (e.g. Peaceman-Rachford on a conv model)."""


class ConvergenceError(LBENError, RuntimeError):
    """The equilibrium solver did not converge and the user asked for an error."""


class TimeGridError(LBENError, ValueError):
    """A time grid is not a 1-D floating tensor of finite, strictly increasing times."""


class IntegrationError(LBENError, RuntimeError):
    """The ODE integrator gave up (step budget used up, step size underflow, non-finite state)."""


class StepSizeWarning(UserWarning):
    """A fixed integration step is too coarse for the step rule of a continuous-time model."""


class ConvergenceWarning(UserWarning):
    """The equilibrium solver did not converge for some samples; see ``model.solver_stats``."""


def unknown_name(kind: str, name: object, valid: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build the standard 'unknown X' error, listing the valid names."""
    return UnknownNameError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(valid))}")
