"""Equilibrium network models."""

from .base import EquilibriumModel, ExplicitWeights
from .feedforward import FeedforwardEquilibrium, from_mlp
from .lben import LBEN
from .mondeq import MonDEQ

__all__ = ["LBEN", "EquilibriumModel", "ExplicitWeights", "FeedforwardEquilibrium", "MonDEQ", "from_mlp"]
