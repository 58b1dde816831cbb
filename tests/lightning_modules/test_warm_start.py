"""Warm starts in training: each sample's last equilibrium and adjoint solution, kept by dataset index."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from lben_ode.datasets.base import TensorBatches, pass_batch
from lben_ode.lightning_modules import LBENCLI, LBENClassifier
from lben_ode.lightning_modules.warm_start import WarmStartCache
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

import lben_ode
from lben_ode.errors import ConfigurationError, ShapeError

WIDTH = 16
TOL = 1e-6


def quick_trainer(tmp_path, callbacks=(), **kwargs) -> Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    options.update(kwargs)
    return Trainer(**options)


class EpochStats(Callback):
    """Per epoch: the per-sample mean iterations of each direction over the epoch's batches, and
    the largest residual and smallest converged fraction."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append({"batches": 0})

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        row = self.epochs[-1]
        row["batches"] += 1
        for direction, stats in pl_module.model.solver_stats.items():
            row[direction] = row.get(direction, 0.0) + float(stats.iterations.float().mean())
            row[f"{direction}_min"] = min(row.get(f"{direction}_min", 1e9), float(stats.iterations.min()))
            row[f"{direction}_residual"] = max(row.get(f"{direction}_residual", 0.0), float(stats.residual.max()))
            converged = float(stats.converged.float().mean())
            row[f"{direction}_converged"] = min(row.get(f"{direction}_converged", 1.0), converged)

    def mean(self, epoch: int, direction: str) -> float:
        return self.epochs[epoch][direction] / self.epochs[epoch]["batches"]


@pytest.fixture
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    return dm


def fit(tmp_path, digits, warm_start: bool, epochs: int, lr: float, seed: int = 0, solver: str = "pr"):
    torch.manual_seed(seed)
    model = lben_ode.LBEN(64, 10, WIDTH, gamma=2.0)
    module = LBENClassifier(model, solver=solver, solver_options={"tol": TOL}, lr=lr, warm_start=warm_start)
    stats = EpochStats()
    torch.manual_seed(seed)
    quick_trainer(tmp_path, [stats], max_epochs=epochs).fit(module, digits)
    assert digits.train_indices is warm_start  # the classifier asked for indices only with warm starts
    digits.train_indices = False
    return module, stats


def reference_equilibria(model: lben_ode.LBEN, x: torch.Tensor) -> torch.Tensor:
    """z* of every input by a float64 copy of the model solved to 1e-12."""
    reference = lben_ode.LBEN(64, 10, WIDTH, gamma=2.0).double()
    reference.load_state_dict(model.state_dict())
    reference.set_solver("pr", tol=1e-12, max_iter=10000)
    with torch.no_grad():
        return reference.equilibrium(x.double())


def test_the_cache_holds_each_samples_equilibrium_and_restarts_both_solves(tmp_path, digits):
    # A learning rate so small that the weights stay put: the kept solutions are then the solutions
    # of the next visit, so every sample of the second epoch converges at the first check (with
    # forward-backward, whose state is z alone; Peaceman-Rachford's u starts at z0, not at its own u*).
    _, cold_stats = fit(tmp_path, digits, False, 1, lr=1e-9, solver="fb")
    warm, stats = fit(tmp_path, digits, True, 2, lr=1e-9, solver="fb")
    train = digits.dataset("train")
    every = math.ceil(warm.model.solver.options["check_every"] / 2)  # the loop's first check
    # First visits start from zeros: the first epoch is the cold one, step for step.
    assert stats.epochs[0] == cold_stats.epochs[0]
    assert stats.epochs[0]["forward_min"] > every and stats.epochs[0]["backward_min"] > every
    for direction in ("forward", "backward"):
        assert stats.mean(1, direction) == every, direction
        assert stats.epochs[1][f"{direction}_converged"] == 1.0
        assert stats.epochs[1][f"{direction}_residual"] <= TOL
    # Every sample's entry is its own equilibrium (not a neighbour's), to the solver's tolerance.
    cache = warm.warm_starts
    assert cache.z.shape == (len(train), WIDTH) and cache.nbytes == 2 * len(train) * WIDTH * 4
    reference = reference_equilibria(warm.model, train.inputs)
    error = (cache.z.double() - reference).norm(dim=1) / reference.norm(dim=1)
    assert error.max() <= 1e-4
    shifted = (cache.z.double().roll(1, dims=0) - reference).norm(dim=1) / reference.norm(dim=1)
    assert shifted.median() > 0.1


def test_at_a_real_learning_rate_the_second_epoch_needs_fewer_forward_iterations(tmp_path, digits):
    cold, cold_stats = fit(tmp_path, digits, False, 2, lr=1e-3)
    warm, stats = fit(tmp_path, digits, True, 2, lr=1e-3)
    first_epoch, _ = fit(tmp_path, digits, False, 1, lr=1e-3)
    assert stats.epochs[0] == cold_stats.epochs[0]
    assert stats.mean(1, "forward") < cold_stats.mean(1, "forward")
    assert stats.mean(1, "forward") < stats.mean(0, "forward")
    for direction in ("forward", "backward"):
        assert stats.epochs[1][f"{direction}_converged"] == 1.0
        assert stats.epochs[1][f"{direction}_residual"] <= TOL
    # Starts change only where the solves begin: the trained weights agree with the cold run's
    # to far better than the size of one epoch's update.
    parameters = zip(
        warm.model.named_parameters(), cold.model.parameters(), first_epoch.model.parameters(), strict=True
    )
    for (name, a), b, after_one_epoch in parameters:
        assert (a - b).norm() <= 1e-2 * (b - after_one_epoch).norm(), name
    # A stale entry is only a start: from it the equilibrium is the cold one, to the tolerance.
    x, _, idx = next(iter(DataLoader(digits.dataset("train").indexed(), batch_size=64, collate_fn=pass_batch)))
    with torch.no_grad():
        from_start = warm.model.equilibrium(x, warm.warm_starts.z[idx])
        from_zeros = warm.model.equilibrium(x)
    reference = reference_equilibria(warm.model, x)
    for z in (from_start, from_zeros):
        assert ((z.double() - reference).norm(dim=1) / reference.norm(dim=1)).max() <= 1e-4


def test_warm_starts_refuse_what_cannot_work(tmp_path):
    model = lben_ode.LBEN(4, 3, 6)
    with pytest.raises(ConfigurationError, match="warm_start must be a bool"):
        LBENClassifier(model, warm_start="yes")
    with pytest.raises(ConfigurationError, match="backward='implicit'"):
        LBENClassifier(model, solver="ode", solver_options={"backward": "adjoint"}, warm_start=True)
    module = LBENClassifier(model, warm_start=True)
    with pytest.raises(ConfigurationError, match="backward='implicit'"):
        module.set_solver("ode", backward="adjoint")
    assert module.model.solver.name == "pr"  # the refused solver is not kept
    # Training batches without indices: refused at the first batch, saying how to get them.
    data = TensorBatches(torch.randn(20, 4), torch.randint(0, 3, (20,)))
    loader = DataLoader(data, batch_size=5, collate_fn=pass_batch)
    with pytest.raises(ConfigurationError, match=r"carry no indices.*\(x, y, idx\).*warm_start=False"):
        quick_trainer(tmp_path, max_epochs=1).fit(module, loader)
    # Bad indices.
    cache = WarmStartCache(size=20)
    with pytest.raises(ShapeError, match="out of range for the 20"):
        cache.store_forward(torch.tensor([3, 20]), torch.zeros(2, 6))
    cache.store_forward(torch.tensor([3, 4]), torch.ones(2, 6))
    with pytest.raises(ShapeError, match="≥ 0"):
        cache.starts(torch.tensor([-1, 2]))
    starts = cache.starts(torch.tensor([4, 5]))
    assert torch.equal(starts.z0, torch.stack([torch.ones(6), torch.zeros(6)]))


def test_any_loader_of_indexed_batches_works_and_the_cache_grows_to_its_indices(tmp_path):
    torch.manual_seed(0)
    data = TensorBatches(torch.randn(30, 4), torch.randint(0, 3, (30,)), with_indices=True)
    module = LBENClassifier(lben_ode.LBEN(4, 3, 6), warm_start=True)
    loader = DataLoader(data, batch_size=8, shuffle=True, collate_fn=pass_batch)
    quick_trainer(tmp_path, max_epochs=2).fit(module, loader)
    assert module.warm_starts.z.shape[0] >= 30 and bool(module.warm_starts.z[:30].abs().sum(dim=1).gt(0).all())


def test_checkpoints_keep_the_flag_not_the_cache(tmp_path, digits):
    torch.manual_seed(0)
    module = LBENClassifier(lben_ode.LBEN(64, 10, WIDTH, gamma=2.0), warm_start=True)
    trainer = quick_trainer(tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.fit(module, digits)
    path = tmp_path / "warm.ckpt"
    trainer.save_checkpoint(path)
    assert not any("warm" in key for key in torch.load(path, weights_only=True)["state_dict"])
    loaded = LBENClassifier.load_from_checkpoint(path, model=lben_ode.LBEN(64, 10, WIDTH, gamma=2.0))
    assert loaded.warm_start is True and loaded.warm_starts.nbytes == 0
    for a, b in zip(loaded.model.parameters(), module.model.parameters(), strict=True):
        assert torch.equal(a, b)
    stats = EpochStats()
    quick_trainer(tmp_path, [stats], max_epochs=1, limit_train_batches=3).fit(loaded, digits)
    assert stats.epochs[0]["forward_converged"] == 1.0 and loaded.warm_starts.nbytes > 0


def test_flag_off_leaves_training_unchanged(tmp_path, digits):
    module, _ = fit(tmp_path, digits, False, 1, lr=1e-3)
    assert module.warm_start is False and module.warm_starts.nbytes == 0


def test_the_flag_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lben-ode"])
    assert LBENCLI(args=["--model.warm_start", "true"], run=False).model.warm_start is True
    assert LBENCLI(args=[], run=False).model.warm_start is False
