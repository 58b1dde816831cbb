"""Implicit differentiation of an equilibrium: kept as an import path; it lives in
:mod:`lben_ode.gradients.implicit`."""

from .gradients.implicit import adjoint_solve, equilibrium_with_implicit_gradient

__all__ = ["adjoint_solve", "equilibrium_with_implicit_gradient"]
