"""Robustness evaluation: certificates, Lipschitz lower bounds and attacks."""

from .certificates import certified_accuracy, certified_correct, certified_radius, logit_margin

__all__ = ["certified_accuracy", "certified_correct", "certified_radius", "logit_margin"]
