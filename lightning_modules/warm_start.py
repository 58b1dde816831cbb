"""Warm starts in training: each sample's last forward equilibrium and adjoint solution, kept by dataset index."""

from __future__ import annotations

from typing import Any

import torch

from lben_ode.errors import ConfigurationError, ShapeError
from lben_ode.gradients import WarmStart

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def batch_indices(batch: Any, datamodule: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a training batch ``(x, y, idx)`` and check ``idx``: ``(batch,)`` integer, all ≥ 0.

    Raises:
        ConfigurationError: the batch carries no indices (it is not a 3-tuple); the message says how
            to get them.
        ShapeError: ``idx`` is not an integer tensor shaped ``(batch,)``, or has a negative entry.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 3:
        parts = f"{len(batch)} parts" if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}"
        source = type(datamodule).__name__ if datamodule is not None else "the training dataloader"
        raise ConfigurationError(
            f"warm_start=True keeps each sample's solution by its dataset index, but the training batches of "
            f"{source} carry no indices (got {parts}, expected (x, y, idx)). The lben_ode.datasets image data "
            "modules give them when asked (the classifier sets their train_indices attribute); for other data, "
            "yield training batches (x, y, idx) with idx the samples' dataset indices, shaped (batch,) int64, "
            "and give a data module a train_indices attribute; or set warm_start=False"
        )
    x, y, idx = batch
    if not isinstance(idx, torch.Tensor) or idx.dtype not in _INDEX_DTYPES or idx.dim() != 1:
        got = f"a {idx.dtype} tensor shaped {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ShapeError(f"training batch indices must be an integer tensor shaped (batch,), got {got}")
    if idx.shape[0] != x.shape[0]:
        raise ShapeError(f"training batch has {x.shape[0]} inputs but {idx.shape[0]} indices")
    return x, y, idx.long()


class WarmStartCache:
    """Each training sample's last forward equilibrium z* and adjoint solution, by dataset index.

    The next solve of a sample starts from what its last one found (a start only: every solve still
    runs to the solver's per-sample tolerance on the true residual). Entries are zero until a
    sample is first seen, and a zero start is the solvers' cold start. Entries are not updated
    when the parameters change, so a sample starts from its solution for the weights of its last
    visit; they are not part of the module's state dict (not saved in checkpoints).

    The adjoint solution is kept per unit of the incoming gradient's norm (see
    :class:`lben_ode.gradients.WarmStart`), so that the next start is rescaled to the next gradient.

    Memory: two tensors ``(N, *state_shape)`` in the model's dtype on the model's device, i.e.
    2 × N × n × dtype size for N training samples and state size n: 60,000 × 80 × 4 B × 2 ≈ 38 MB
    for MNIST at width 80 in float32. They are allocated at the first training batch, sized
    ``size`` or the largest index seen + 1 (growing when a larger index comes). Under DDP every
    process keeps its own cache of the full size and fills in the samples its sampler gives it;
    processes never exchange entries, so a sample that moves to another process starts there from
    that process's older entry, or zeros.

    Args:
        size: number of training samples N, when known (e.g. ``len(train_dataset)``).
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.z: torch.Tensor | None = None
        self.adjoint: torch.Tensor | None = None
        # The last index tensor checked and its largest entry: a step reads, then writes, the same
        # indices, and one range check (one host read) per step is enough.
        self._checked: tuple[torch.Tensor, int] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held (0 before the first batch)."""
        return sum(t.numel() * t.element_size() for t in (self.z, self.adjoint) if t is not None)

    def clear(self) -> None:
        """Forget every entry (the next visit of each sample starts from zeros)."""
        self.z = self.adjoint = None
        self._checked = None

    def starts(self, idx: torch.Tensor) -> WarmStart:
        """The starts for the samples ``idx`` ``(batch,)`` on the cache's device: None before the first batch."""
        if self.z is None or self.adjoint is None:
            return WarmStart()
        self._check_range(idx)
        idx = idx.to(self.z.device)
        return WarmStart(z0=self.z[idx], adjoint_start=self.adjoint[idx])

    def store_forward(self, idx: torch.Tensor, z: torch.Tensor) -> None:
        """Keep z* ``(batch, *state_shape)`` of the samples ``idx``."""
        self._allocate(idx, z)
        assert self.z is not None
        self.z[idx.to(self.z.device)] = z.detach()

    def store_adjoint(self, idx: torch.Tensor, adjoint: torch.Tensor) -> None:
        """Keep the adjoint solution per unit ‖g‖ ``(batch, *state_shape)`` of the samples ``idx``."""
        self._allocate(idx, adjoint)
        assert self.adjoint is not None
        self.adjoint[idx.to(self.adjoint.device)] = adjoint.detach()

    def _check_range(self, idx: torch.Tensor) -> int:
        # One host read per training step (not per solver iteration): the smallest and largest index.
        if self._checked is not None and self._checked[0] is idx:
            return self._checked[1]
        low, high = torch.stack(torch.aminmax(idx)).tolist() if idx.numel() else (0, -1)
        if low < 0:
            raise ShapeError(f"training batch indices must be ≥ 0 (dataset indices), got {low}")
        if self.size is not None and high >= self.size:
            raise ShapeError(
                f"training batch index {high} is out of range for the {self.size} training samples"
            )
        self._checked = (idx, high)
        return high

    def _allocate(self, idx: torch.Tensor, like: torch.Tensor) -> None:
        high = self._check_range(idx)
        shape, dtype, device = tuple(like.shape[1:]), like.dtype, like.device
        current = self.z
        if current is not None and (
            tuple(current.shape[1:]) != shape or current.dtype != dtype or current.device != device
        ):
            self.clear()  # the model's state changed shape, dtype or device: the entries are of no use
            current = None
        needed = max(high + 1, self.size or 0)
        if current is not None and current.shape[0] >= needed:
            return
        rows = needed if current is None or self.size is not None else max(needed, 2 * current.shape[0])
        grown = []
        for old in (self.z, self.adjoint):
            new = torch.zeros((rows, *shape), dtype=dtype, device=device)
            if old is not None:
                new[: old.shape[0]] = old
            grown.append(new)
        self.z, self.adjoint = grown
