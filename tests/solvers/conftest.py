"""Fixtures of the solver tests: every activation the library accepts, with its options."""

from __future__ import annotations

import pytest

#: (activation name, options) for every monotone, slope-restricted activation of the library.
ACTIVATIONS = [
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.1}),
    ("tanh", {}),
    ("sigmoid", {}),
    ("softplus", {}),
]


@pytest.fixture(params=ACTIVATIONS, ids=[name for name, _ in ACTIVATIONS])
def activation_case(request: pytest.FixtureRequest) -> tuple[str, dict]:
    """One (name, options) pair of :data:`ACTIVATIONS`; a test using it runs once per activation."""
    return request.param
