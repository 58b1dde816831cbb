"""Anderson acceleration of the forward-backward map (DESIGN §2, accelerated options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import IterativeSolver
from .forward_backward import DERIVED_MAX_ITER, FALLBACK_BUDGET, SafeStep, resolve_step_size, safe_step
from .options import Option, positive_float, positive_int
from .problem import FixedPointProblem
from .registry import register


def _at_least_two(v: object) -> bool:
    return positive_int(v) and v >= 2  # type: ignore[operator]


def _mixing(v: object) -> bool:
    return positive_float()(v) and v <= 1  # type: ignore[operator]


@dataclass
class AndersonState:
    """The iteration's memory, per sample, with states flattened to ``d`` entries.

    Attributes:
        X: ``(batch, memory, d)`` the last evaluated points x_i (a ring buffer).
        G: ``(batch, memory, d)`` their images T(x_i) under the accelerated map.
        k: index of the next slot (evaluations so far).
        current: ``(batch, d)`` the last accepted point: what the solver returns.
        safe_image: ``(batch, d)`` the safe forward-backward step from ``current``.
        progress: ``(batch,)`` ``‖S(current) − current‖`` in the safe step's metric (S the safe
            step): it falls by at least the proven rate ρ at every accepted point.
        forced: ``(batch,)`` samples whose last candidate was rejected: their next point is
            ``safe_image``.
        shape: the shape of z, ``(batch, *state_shape)``.
    """

    X: torch.Tensor
    G: torch.Tensor
    k: int
    current: torch.Tensor
    safe_image: torch.Tensor
    progress: torch.Tensor
    initial_progress: torch.Tensor
    best_progress: torch.Tensor
    accelerated: torch.Tensor
    forced: torch.Tensor
    shape: torch.Size


@register
class Anderson(IterativeSolver):
    """Safeguarded Anderson acceleration (type II) of the forward-backward map.

    The accelerated map is ``T(z) = prox_{αf}((1−α)z + α(Wz + b))``. Each iteration combines the
    last ``memory`` images ``T(x_i)`` with weights ``c`` (summing to 1) that minimise
    ``‖Σ c_i (T(x_i) − x_i)‖`` per sample (a small regularised least-squares problem solved for the
    whole batch at once, without a host sync) into a candidate point. The fixed points of T are
    the equilibria ``z = σ(Wz + b)`` for every α > 0, and convergence is measured on the same
    relative fixed-point residual as the other solvers.

    **Safeguard.** With the default α = 1, T is the plain iteration ``z ↦ σ(Wz + b)``, which
    alone need not converge, and no convergence proof covers Anderson acceleration of a nonsmooth
    map: unguarded, it can wander far from the equilibrium. So every candidate is also mapped by
    the model's provably safe forward-backward step S (the same ``Wz`` serves both maps, so an
    iteration still costs one application of W): S contracts by a proven factor ρ < 1 in the
    model's metric, hence ``q(x) = ‖S(x) − x‖`` (in that metric) falls by ρ under S. A candidate is
    accepted when ``q(candidate) ≤ ρ·q(current)``, or (Anderson's progress is rarely monotone)
    when q stays under both ``SPREAD`` times the best accepted q and the decaying envelope
    ``ENVELOPE · q₀ · (n + 1)^{−1.01}`` (n: accelerated points accepted so far; the safeguard of
    Zhang, O'Donoghue & Boyd 2020). Otherwise the sample's next point is the safe step
    ``S(current)``, accepted as is. Every accepted point thus has q under the envelope or falls by
    ρ, so q → 0: the solver converges wherever forward-backward with its safe step does, and its
    default budget (``max_iter=None``) is twice forward-backward's derived one. On models that
    prove no rate, ρ is taken as 1. The solver returns the last accepted point. (The constants
    were chosen on badly scaled random dense models and perturbed convolutional ones: a strict
    ``ρ·q`` test alone made the convolutional solves 100× longer; a loose envelope alone let
    tanh models wander.)

    ``alpha=None`` accelerates the safe step itself. It needs only ``W`` and ``Wᵀ``, so it serves
    convolutional models too. Memory: ``2 · memory · batch · d`` extra entries (d = state size).
    """

    name = "anderson"
    #: Scale D of the safeguard's decaying envelope ``D · q₀ · (n + 1)^{−1.01}``.
    ENVELOPE: ClassVar[float] = 100.0
    #: A non-monotone accelerated point may have at most this many times the best accepted q.
    SPREAD: ClassVar[float] = 10.0
    OPTIONS: ClassVar[dict[str, Option]] = {
        "alpha": Option(
            1.0,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "step of the accelerated forward-backward map; None takes the model's provably safe step",
        ),
        "memory": Option(5, _at_least_two, "an int ≥ 2", "number of past iterates combined"),
        "regularization": Option(
            1e-10,
            positive_float(),
            "a float > 0",
            "Tikhonov term of the least-squares weights, relative to the largest squared step",
        ),
        "mixing": Option(
            1.0, _mixing, "a float in (0, 1]", "β: the update is β·Σc_i T(x_i) + (1 − β)·Σc_i x_i"
        ),
        "max_iter": DERIVED_MAX_ITER,
    }

    def step_budget(self, problem: FixedPointProblem) -> int:
        """``max_iter``, or (None) twice the budget forward-backward's proven rate gives."""
        if self.options["max_iter"] is not None:
            return self.options["max_iter"]
        budget = safe_step(problem).budget(self.tol)
        return max(300, 2 * budget) if budget != FALLBACK_BUDGET else FALLBACK_BUDGET

    def _evaluate(
        self, problem: FixedPointProblem, alpha: float, safe: SafeStep, weights: torch.Tensor | None, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T(x), S(x) and q(x) = ‖S(x) − x‖ (metric norm) for flat states ``(batch, d)``."""
        z = x.view(problem.injection.shape)
        wz = problem.operator.apply(z) + problem.injection
        image = problem.activation.prox((1 - alpha) * z + alpha * wz, alpha)
        safe_image = image if safe.alpha == alpha else problem.activation.prox(
            (1 - safe.alpha) * z + safe.alpha * wz, safe.alpha
        )
        step = (safe_image - z).flatten(1)
        if weights is not None:
            step = step * weights
        return image.flatten(1), safe_image.flatten(1), step.norm(dim=1)

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> tuple[AndersonState, float, SafeStep, Any]:
        alpha = resolve_step_size(self.options["alpha"], problem)
        safe = safe_step(problem)
        weights = None
        if safe.weights is not None:
            # q is measured in the metric's norm: scale each entry by √(weight).
            weights = safe.weights.sqrt().to(z0.dtype).expand(z0.shape[1:]).flatten()
        x = z0.flatten(1)
        batch, d = x.shape
        m = self.options["memory"]
        X = x.new_zeros(batch, m, d)
        G = x.new_zeros(batch, m, d)
        image, safe_image, q = self._evaluate(problem, alpha, safe, weights, x)
        X[:, 0] = x
        G[:, 0] = image
        forced = torch.zeros(batch, dtype=torch.bool, device=x.device)
        state = AndersonState(
            X, G, 1, x.clone(), safe_image, q, q.clone(), q.clone(), torch.zeros_like(q), forced, z0.shape
        )
        return state, alpha, safe, weights

    def _mix(self, s: AndersonState) -> torch.Tensor:
        """The Anderson candidate from the memory, per sample (NaN where the system is singular)."""
        m = s.X.shape[1]
        n = min(s.k, m)
        X, G = s.X[:, :n], s.G[:, :n]
        F = G - X
        FF = torch.bmm(F, F.transpose(1, 2))
        scale = FF.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(torch.finfo(FF.dtype).tiny)
        eye = torch.eye(n, dtype=FF.dtype, device=FF.device)
        FF = FF + self.options["regularization"] * scale[:, None, None] * eye
        # Minimise cᵀ FF c subject to Σc = 1: c ∝ FF⁻¹ 1. solve_ex does not sync with the host.
        ones = torch.ones(FF.shape[0], n, 1, dtype=FF.dtype, device=FF.device)
        c = torch.linalg.solve_ex(FF, ones)[0]
        c = c / c.sum(dim=1, keepdim=True)
        beta = self.options["mixing"]
        x_new = (c.transpose(1, 2) @ G)[:, 0]
        if beta != 1.0:
            x_new = beta * x_new + (1 - beta) * (c.transpose(1, 2) @ X)[:, 0]
        return x_new

    def step(
        self, problem: FixedPointProblem, state: tuple[AndersonState, float, SafeStep, Any]
    ) -> tuple[AndersonState, float, SafeStep, Any]:
        s, alpha, safe, weights = state
        mixed = self._mix(s)
        # A singular system (e.g. a sample already at its fixed point) also takes the safe step.
        use_safe = s.forced | ~torch.isfinite(mixed).all(dim=1)
        candidate = torch.where(use_safe[:, None], s.safe_image, mixed)
        image, safe_image, q = self._evaluate(problem, alpha, safe, weights, candidate)
        rate = 1.0 if safe.rate is None else safe.rate
        envelope = self.ENVELOPE * s.initial_progress * (s.accelerated + 1.0) ** -1.01
        bounded = (q <= envelope) & (q <= self.SPREAD * s.best_progress)
        accelerated = ~use_safe & torch.isfinite(q) & ((q <= rate * s.progress) | bounded)
        accept = use_safe | accelerated
        s.current = torch.where(accept[:, None], candidate, s.current)
        s.safe_image = torch.where(accept[:, None], safe_image, s.safe_image)
        s.progress = torch.where(accept, q, s.progress)
        s.best_progress = torch.minimum(s.best_progress, s.progress)
        s.accelerated = s.accelerated + accelerated.to(s.accelerated.dtype)
        s.forced = ~accept
        # A rejected candidate still tells the memory how T acts there.
        slot = s.k % s.X.shape[1]
        s.X[:, slot] = candidate
        s.G[:, slot] = image
        s.k += 1
        return s, alpha, safe, weights

    def current(self, state: tuple[AndersonState, float, SafeStep, Any]) -> torch.Tensor:
        s = state[0]
        return s.current.view(s.shape)
