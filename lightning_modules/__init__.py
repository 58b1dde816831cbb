"""Lightning integration: the :class:`LBENClassifier` module and the ``lben-ode`` command."""

from .classifier import DEFAULT_CERTIFY_EPS, LBENClassifier
from .cli import LBENCLI, main
from .metrics import CertificationMetrics, ClassificationMetrics, SolverMetrics

__all__ = [
    "DEFAULT_CERTIFY_EPS",
    "LBENCLI",
    "CertificationMetrics",
    "ClassificationMetrics",
    "LBENClassifier",
    "SolverMetrics",
    "main",
]
