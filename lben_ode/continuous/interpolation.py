"""Input signals given as samples on a time grid, evaluated at any time the integrator asks for."""

from __future__ import annotations

import torch

from ..errors import unknown_name

#: Ways to fill in a sampled signal between its samples.
INTERPOLATIONS: tuple[str, ...] = ("linear", "zoh")


def check_interpolation(kind: str) -> str:
    """Validate an interpolation name (``"linear"`` or ``"zoh"``, zero-order hold)."""
    if kind not in INTERPOLATIONS:
        raise unknown_name("interpolation", kind, INTERPOLATIONS)
    return kind


class SampledSignal:
    """A batch of signals known at times ``t_0 < … < t_{T−1}``, interpolated in between.

    ``"linear"``: ``s(t) = s_k + (t − t_k)/(t_{k+1} − t_k) · (s_{k+1} − s_k)`` on ``[t_k, t_{k+1}]``.
    ``"zoh"`` (zero-order hold): ``s(t) = s_k`` on ``[t_k, t_{k+1})``, right-continuous, so a time
    nudged just below ``t_k`` (how torchdiffeq evaluates the left limit at a jump) gets ``s_{k−1}``.
    Outside ``[t_0, t_{T−1}]`` the signal is held at its end values.

    Evaluation stays on the device: the interval is found by ``searchsorted``, with no host sync.

    Args:
        times: ``(T,)`` strictly increasing sample times (any floating dtype; float64 keeps long
            horizons exact).
        values: ``(batch, T, k)`` samples; the result has their dtype and carries their graph.
        kind: ``"linear"`` or ``"zoh"``.
    """

    def __init__(self, times: torch.Tensor, values: torch.Tensor, kind: str = "linear") -> None:
        self.kind = check_interpolation(kind)
        self.times = times
        self.values = values
        if kind == "linear" and times.numel() > 1:
            # Per interval: its start time and inverse length, and the increment of the samples, so
            # that one evaluation is two gathers and a multiply-add. The increments are computed
            # from ``values`` (with its graph), so ``values`` stays the one tensor that torchdiffeq's
            # adjoint differentiates by; gradients reach it through the increments too.
            self._starts = torch.stack([times[:-1], 1.0 / (times[1:] - times[:-1])], dim=1)
            self._increments = values[:, 1:] - values[:, :-1]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """The signal at time ``t`` (a 0-dim or 1-element tensor): ``(batch, k)``."""
        t = t.reshape(1)
        if t.dtype != self.times.dtype:
            t = t.to(self.times.dtype)
        last = self.times.numel() - 1
        index = torch.searchsorted(self.times, t, right=True) - 1
        if self.kind == "zoh" or last == 0:
            return self.values.index_select(1, index.clamp(0, last)).squeeze(1)
        index = index.clamp(0, last - 1)
        start, inverse_gap = self._starts.index_select(0, index).unbind(1)
        weight = ((t - start) * inverse_gap).clamp(0.0, 1.0).to(self.values.dtype)
        base = self.values.index_select(1, index).squeeze(1)
        return base + weight * self._increments.index_select(1, index).squeeze(1)
