"""Robustness evaluation: certificates, Lipschitz lower bounds and attacks (DESIGN §1).

Certified accuracy (from the Lipschitz bound γ and the logit margin) is a lower bound on robust
accuracy; attack accuracy (ℓ2 PGD) is an upper bound. The empirical Lipschitz lower bound and the
local Jacobian norm must never exceed γ beyond the solver's tolerance. Every function says which
units its radii are in: raw-input units through a :class:`~lben_ode.Normalization`, else the
model's input units. A sample whose equilibrium solve did not converge is never certified, never
robust and never part of a lower bound; every function refuses such samples unless called with
``allow_unconverged=True``, and reports the converged fraction.
"""

from .attacks import AttackEvaluation, AttackResult, attack_accuracy, evaluate_attack, pgd_attack
from .certificates import (
    CertificationResult,
    certified_accuracy,
    certified_correct,
    certified_radius,
    certify,
    logit_margin,
)
from .evaluation import ModelOutput, run_model
from .lipschitz import LipschitzEstimate, empirical_lipschitz, jacobian_norm
from .report import format_table, plot_accuracy_vs_eps, robustness_report

__all__ = [
    "AttackEvaluation",
    "AttackResult",
    "CertificationResult",
    "LipschitzEstimate",
    "ModelOutput",
    "attack_accuracy",
    "certified_accuracy",
    "certified_correct",
    "certified_radius",
    "certify",
    "empirical_lipschitz",
    "evaluate_attack",
    "format_table",
    "jacobian_norm",
    "logit_margin",
    "pgd_attack",
    "plot_accuracy_vs_eps",
    "robustness_report",
    "run_model",
]
