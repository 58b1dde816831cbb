"""ℓ2 PGD against linear classifiers, whose smallest adversarial perturbation is known in closed form.

For logits ``A x + c`` and a point of class y, the smallest ℓ2 perturbation that makes class j win is
``(f_y − f_j) / ‖a_y − a_j‖``; the smallest over j is the distance to the decision boundary. The
attack must break every point at 1.01× that distance and none at 0.99× (there is no adversarial
point there, so a break would mean an infeasible perturbation).
"""

from __future__ import annotations

import pytest
import torch

from lben_ode import ConfigurationError, Normalization, ShapeError, UnknownNameError
from lben_ode.robustness import attack_accuracy, pgd_attack


def check_feasible(x_adv: torch.Tensor, x: torch.Tensor, eps: float, box: tuple[float, float] | None) -> None:
    assert bool(((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-12)).all())
    if box is not None:
        assert bool(((x_adv >= box[0]) & (x_adv <= box[1])).all())


@pytest.mark.parametrize("scaled", [False, True], ids=["model-units", "raw-units"])
def test_multiclass_linear_targeted_attack_is_exact(linear_classifier, boundary_distance, scaled: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    d, k, n = 6, 4, 12
    A = torch.randn(k, d, generator=gen, dtype=torch.float64)
    c = torch.randn(k, generator=gen, dtype=torch.float64)
    model = linear_classifier(A, c)
    if scaled:
        # The model sees (x_raw − 0.3) / 0.5, i.e. raw logits (A / 0.5) x_raw + (c − 0.3 A·1 / 0.5).
        norm = Normalization(mean=(0.3,), std=(0.5,), raw_min=-1e3, raw_max=1e3)
        A_raw, c_raw = A / 0.5, c - (A / 0.5) @ torch.full((d,), 0.3, dtype=torch.float64)
        box = (-1e3, 1e3)
    else:
        norm, A_raw, c_raw, box = None, A, c, None
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    labels, dist = boundary_distance(A_raw, c_raw, x)
    for i in range(n):
        xi, yi = x[i:i + 1], labels[i:i + 1]
        below = pgd_attack(model, xi, yi, 0.99 * float(dist[i]), norm, steps=40, restarts=2, targets=k - 1,
                           generator=gen)
        assert bool(below.robust[0]), f"point {i} broken below its boundary distance"
        check_feasible(below.x_adv, xi, 0.99 * float(dist[i]), box)
        above = pgd_attack(model, xi, yi, 1.01 * float(dist[i]), norm, steps=40, restarts=2, targets=k - 1,
                           generator=gen)
        assert not bool(above.robust[0]), f"point {i} not broken at 1.01× its boundary distance"
        check_feasible(above.x_adv, xi, 1.01 * float(dist[i]), box)
        # The reported adversarial point is misclassified by the exact float64 linear map.
        assert int((above.x_adv @ A_raw.T + c_raw).argmax(dim=1)) != int(yi)


@pytest.mark.parametrize("loss", ["margin", "ce"])
def test_binary_linear_untargeted_attack_is_exact(linear_classifier, boundary_distance, loss: str) -> None:
    gen = torch.Generator().manual_seed(1)
    d, n = 5, 16
    A = torch.randn(2, d, generator=gen, dtype=torch.float64)
    c = torch.randn(2, generator=gen, dtype=torch.float64)
    model = linear_classifier(A, c)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    labels, dist = boundary_distance(A, c, x)
    for i in range(n):
        xi, yi = x[i:i + 1], labels[i:i + 1]
        below = pgd_attack(model, xi, yi, 0.99 * float(dist[i]), steps=30, restarts=1, loss=loss, generator=gen)
        above = pgd_attack(model, xi, yi, 1.01 * float(dist[i]), steps=30, restarts=1, loss=loss, generator=gen)
        assert bool(below.robust[0]) and not bool(above.robust[0]), i


def test_attack_respects_the_input_box(linear_classifier) -> None:
    # Logits (0, x₁ − 2): class 1 needs x₁ > 2, which is outside the box [0, 1].
    A = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([0.0, -2.0], dtype=torch.float64)
    model = linear_classifier(A, c)
    x = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.zeros(3, dtype=torch.int32)  # any integer dtype of class indices
    box = Normalization(raw_min=0.0, raw_max=1.0)
    boxed = pgd_attack(model, x, labels, 5.0, box, steps=20, restarts=3)
    assert boxed.robust.all()
    check_feasible(boxed.x_adv, x, 5.0, (0.0, 1.0))
    # Without the box the boundary x₁ = 2 is 1.5, 1.1 and 2.0 away.
    unboxed = pgd_attack(model, x, labels, 1.6, None, steps=20, restarts=3)
    assert unboxed.robust.tolist() == [False, False, True]


def test_attack_accuracy_over_eps_and_chunks(linear_classifier, boundary_distance) -> None:
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    c = torch.zeros(2, dtype=torch.float64)
    model = linear_classifier(A, c)
    x = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    labels, dist = boundary_distance(A, c, x)
    labels[0] = 1 - labels[0]  # one misclassified point: never robust, not even at ε = 0
    # Radii well away from every boundary distance: the geometric middle of the widest gap, and beyond all.
    d_sorted = dist.sort().values
    i = int((d_sorted[1:] / d_sorted[:-1]).argmax())
    assert float(d_sorted[i + 1] / d_sorted[i]) > 1.05
    eps = [0.0, float((d_sorted[i] * d_sorted[i + 1]).sqrt()), float(d_sorted[-1]) * 1.01]
    acc = attack_accuracy(model, x, labels, eps, steps=30, restarts=1, batch_size=3, generator=gen)
    correct = torch.ones(10, dtype=torch.bool)
    correct[0] = False
    expected = [float((correct & (dist > e)).double().mean()) for e in eps]
    assert acc.tolist() == expected


def test_attack_rejects_bad_input(linear_classifier) -> None:
    model = linear_classifier(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    x = torch.full((2, 3), 0.5, dtype=torch.float64)
    y = torch.tensor([0, 1])
    with pytest.raises(UnknownNameError, match="margin"):
        pgd_attack(model, x, y, 0.1, loss="hinge")
    with pytest.raises(ConfigurationError, match="targets"):
        pgd_attack(model, x, y, 0.1, targets=3)
    with pytest.raises(ConfigurationError, match="steps"):
        pgd_attack(model, x, y, 0.1, steps=0)
    with pytest.raises(ConfigurationError, match="eps"):
        pgd_attack(model, x, y, float("nan"))
    with pytest.raises(ConfigurationError, match="outside the valid input box"):
        pgd_attack(model, x + 2.0, y, 0.1, Normalization())
    with pytest.raises(ShapeError, match="labels"):
        pgd_attack(model, x, y[:1], 0.1)
    with pytest.raises(ShapeError, match=r"class indices in \[0, 2\]"):
        pgd_attack(model, x, torch.tensor([0, 3]), 0.1)
    with pytest.raises(ShapeError, match="classes ≥ 2"):
        one_logit = linear_classifier(torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        pgd_attack(one_logit, x, torch.zeros(2, dtype=torch.long), 0.1)


def test_image_inputs_with_per_channel_normalization(linear_classifier, boundary_distance) -> None:
    # Inputs (batch, 3, 2, 2): the model sees (x − μ_c) / s_c per channel, so its raw-unit weight on
    # pixel (c, i, j) is A[:, c, i, j] / s_c.
    gen = torch.Generator().manual_seed(3)
    k, n = 3, 6
    norm = Normalization(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.5))
    A = torch.randn(k, 12, generator=gen, dtype=torch.float64)
    c = torch.randn(k, generator=gen, dtype=torch.float64)
    model = linear_classifier(A, c)
    std = torch.tensor(norm.std, dtype=torch.float64).repeat_interleave(4)
    mean = torch.tensor(norm.mean, dtype=torch.float64).repeat_interleave(4)
    A_raw, c_raw = A / std, c - (A / std) @ mean
    x = torch.rand(n, 3, 2, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.2
    labels, dist = boundary_distance(A_raw, c_raw, x.flatten(1))
    for i in range(n):
        xi, yi = x[i:i + 1], labels[i:i + 1]
        # Boundary points may lie outside the [0, 1] box, so only the lower side is exact here ...
        below = pgd_attack(model, xi, yi, 0.99 * float(dist[i]), norm, steps=30, restarts=1, targets=k - 1,
                           generator=gen)
        assert bool(below.robust[0])
        check_feasible(below.x_adv, xi, 0.99 * float(dist[i]), (0.0, 1.0))
        # ... and without a box both sides are.
        wide = Normalization(mean=norm.mean, std=norm.std, raw_min=-1e3, raw_max=1e3)
        above = pgd_attack(model, xi, yi, 1.01 * float(dist[i]), wide, steps=30, restarts=1, targets=k - 1,
                           generator=gen)
        assert not bool(above.robust[0])
        assert above.x_adv.shape == xi.shape
        assert int((above.x_adv.flatten(1) @ A_raw.T + c_raw).argmax(dim=1)) != int(yi)
