"""How a solve ended: the result codes, with the cause and remedy of each unconverged one."""

from __future__ import annotations

from enum import Enum


class Result(str, Enum):
    """Why a solve stopped. Every result but ``CONVERGED`` leaves some sample over the tolerance.

    The values are plain strings, so ``stats.result == "max_steps"`` works and they log as text.
    """

    #: Every sample's relative residual is finite and at most ``tol``.
    CONVERGED = "converged"
    #: The step budget (``max_iter``) ran out while the residual was still decreasing.
    MAX_STEPS = "max_steps"
    #: The step budget ran out and the residual had grown since the first check: the iteration diverges.
    DIVERGED = "diverged"
    #: Some sample's state or residual became NaN or infinite.
    NONFINITE = "nonfinite"
    #: The integration-time budget (``max_time``) of the ODE solver ran out.
    MAX_TIME = "max_time"
    #: The ODE integrator gave up (step-size underflow, a non-finite right-hand side).
    INTEGRATOR_FAILED = "integrator_failed"


#: What the user can do about each unconverged result (the message's last part).
REMEDIES: dict[Result, str] = {
    Result.MAX_STEPS: "raise max_iter",
    Result.DIVERGED: (
        "the iteration diverges, so more iterations will not help: use a smaller step alpha (fb's default "
        "is provably convergent) or another solver"
    ),
    Result.NONFINITE: (
        "the iterates became NaN or infinite, so more iterations will not help: use a smaller step alpha "
        "(the solver's default), or another solver"
    ),
    Result.MAX_TIME: "raise max_time",
    Result.INTEGRATOR_FAILED: "choose another method, or loosen rtol/atol",
}

#: The cause of each result when the solver gave none of its own.
CAUSES: dict[Result, str] = {
    Result.MAX_STEPS: "the step budget ran out",
    Result.DIVERGED: "the residual grew over the solve",
    Result.NONFINITE: "the state of some samples became non-finite",
    Result.MAX_TIME: "the integration-time budget ran out",
    Result.INTEGRATOR_FAILED: "the integrator failed",
}
