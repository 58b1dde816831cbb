"""Anderson acceleration of the forward-backward map (DESIGN §2, accelerated options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import IterativeSolver
from .forward_backward import forward_backward_map, resolve_step_size
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
        X: ``(batch, memory, d)`` the last iterates x_k (a ring buffer).
        G: ``(batch, memory, d)`` their images T(x_k) under the forward-backward map.
        k: index of the next slot (iterations so far + 1).
        best: ``(batch, d)`` per sample, the image T(x) of the iterate with the smallest step
            ``‖T(x) − x‖`` so far: what the solver returns.
        best_step: ``(batch,)`` that smallest step.
        shape: the shape of z, ``(batch, *state_shape)``.
    """

    X: torch.Tensor
    G: torch.Tensor
    k: int
    best: torch.Tensor
    best_step: torch.Tensor
    shape: torch.Size


@register
class Anderson(IterativeSolver):
    """Anderson acceleration (type II) of the forward-backward map ``T(z) = prox_{αf}((1−α)z + α(Wz + b))``.

    Each iteration combines the last ``memory`` images ``T(x_i)`` with weights ``c`` (summing to 1)
    that minimise ``‖Σ c_i (T(x_i) − x_i)‖`` per sample (a small regularised least-squares problem
    solved for the whole batch at once, without a host sync), then evaluates T at the result. The
    fixed points are those of T, i.e. the equilibria ``z = σ(Wz + b)`` for every α > 0, and
    convergence is measured on the same relative fixed-point residual as the other solvers.

    With the default α = 1, T is the plain iteration ``z ↦ σ(Wz + b)``, which alone need not
    converge; acceleration typically makes it converge in tens of iterations where forward-backward
    with its provably safe step needs thousands (``benchmarks/solvers.py``). No convergence proof
    covers Anderson acceleration of a nonsmooth map: the solver returns, per sample, the image of
    the iterate with the smallest step ``‖T(x) − x‖`` seen, and non-convergence is reported as for
    every solver. ``alpha=None`` takes forward-backward's provably safe step instead (slower, but
    then the unaccelerated map is a contraction). It needs only ``W`` and ``Wᵀ``, so it serves
    convolutional models too.

    Memory: ``2 · memory · batch · d`` extra entries (d = state size).
    """

    name = "anderson"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "alpha": Option(
            1.0,
            positive_float(allow_none=True),
            "a float > 0 or None",
            "step of the forward-backward map; None takes the model's provably safe step",
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
    }

    def _map(self, problem: FixedPointProblem, alpha: float, x: torch.Tensor) -> torch.Tensor:
        """T on flat states ``(batch, d)``."""
        return forward_backward_map(problem, alpha, x.view(problem.injection.shape)).flatten(1)

    def init_state(self, problem: FixedPointProblem, z0: torch.Tensor) -> tuple[AndersonState, float]:
        alpha = resolve_step_size(self.options["alpha"], problem)
        x = z0.flatten(1)
        batch, d = x.shape
        m = self.options["memory"]
        X = x.new_zeros(batch, m, d)
        G = x.new_zeros(batch, m, d)
        X[:, 0] = x
        G[:, 0] = self._map(problem, alpha, x)
        step = (G[:, 0] - X[:, 0]).norm(dim=1)
        return AndersonState(X, G, 1, G[:, 0].clone(), step, z0.shape), alpha

    def step(
        self, problem: FixedPointProblem, state: tuple[AndersonState, float]
    ) -> tuple[AndersonState, float]:
        s, alpha = state
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
        # A singular system (a sample already at its fixed point) falls back to the plain step.
        usable = torch.isfinite(x_new).all(dim=1, keepdim=True)
        x_new = torch.where(usable, x_new, s.G[:, (s.k - 1) % m])
        g_new = self._map(problem, alpha, x_new)
        slot = s.k % m
        s.X[:, slot] = x_new
        s.G[:, slot] = g_new
        step = (g_new - x_new).norm(dim=1)
        better = step < s.best_step
        s.best = torch.where(better[:, None], g_new, s.best)
        s.best_step = torch.where(better, step, s.best_step)
        s.k += 1
        return s, alpha

    def current(self, state: tuple[AndersonState, float]) -> torch.Tensor:
        s, _ = state
        return s.best.view(s.shape)
