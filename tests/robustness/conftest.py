"""Shared models for the robustness tests: linear classifiers whose answers are known in closed form."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Run these tiny-matrix tests on one intra-op thread, restoring the setting afterwards.

    Matrices here are at most a few dozen wide: splitting them across threads costs more than it
    saves, and on a busy two-core machine the thread hand-offs slowed these tests about sixfold.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class LinearClassifier(nn.Module):
    """Logits ``A x + c`` with a stated Lipschitz bound (any bound ≥ ‖A‖₂ is valid)."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, bound: float | None = None) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.c = nn.Parameter(c.clone())
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.A.T + self.c

    def lipschitz_bound(self) -> float | None:
        return self.bound


@pytest.fixture
def linear_classifier() -> Callable[..., LinearClassifier]:
    """Factory ``(A, c, bound=None) -> LinearClassifier``."""
    return LinearClassifier


def distance_to_boundary(A: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For logits ``A x + c``: the predicted classes and each point's ℓ2 distance to the decision boundary.

    Class j overtakes the prediction y after a perturbation of length ``(f_y − f_j) / ‖a_y − a_j‖`` at
    the least; the distance is the smallest of these over j.
    """
    logits = x @ A.T + c
    labels = logits.argmax(dim=1)
    gaps = logits.gather(1, labels[:, None]) - logits  # (batch, classes)
    norms = (A[labels][:, None, :] - A[None, :, :]).norm(dim=2)
    dist = torch.where(gaps > 0, gaps / norms, torch.full_like(gaps, float("inf")))
    return labels, dist.min(dim=1).values


@pytest.fixture
def boundary_distance() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``(A, c, x) -> (labels, distance)`` for a linear classifier, see :func:`distance_to_boundary`."""
    return distance_to_boundary
