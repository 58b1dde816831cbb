"""Equilibrium network models."""

from .base import EquilibriumModel, ExplicitWeights
from .conv import ConvLBEN
from .feedforward import FeedforwardEquilibrium, from_mlp
from .lben import LBEN
from .mondeq import MonDEQ

__all__ = ["LBEN", "ConvLBEN", "EquilibriumModel", "ExplicitWeights", "FeedforwardEquilibrium", "MonDEQ", "from_mlp"]
