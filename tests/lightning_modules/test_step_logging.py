"""The per-step loss is logged on the steps a logger or the progress bar reads, and they show what
logging at every step would show."""

import csv

import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from lben_ode.lightning_modules import LBENClassifier
from lben_ode.lightning_modules import classifier as classifier_module
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

import lben_ode


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    return dm


class LoggedSteps(Callback):
    """Per training batch: its loss, and the progress bar's ``train/loss_step`` after it."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.shown: list[float | None] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        shown = trainer.progress_bar_metrics.get("train/loss_step")
        self.shown.append(None if shown is None else float(shown))


def fit(tmp_path, digits, batches: int, **trainer_options) -> tuple[LBENClassifier, list[int], LoggedSteps]:
    """Train a tiny LBEN for ``batches`` batches; returns the module, the batch indices at which
    ``train/loss_step`` was logged, and what the progress bar held after each batch."""
    torch.manual_seed(0)
    module = LBENClassifier(lben_ode.LBEN(64, 10, 12, gamma=2.0), solver="pr", lr=1e-2)
    logged: list[int] = []
    original = module.log

    def spy(name, *args, **kwargs):
        if name == "train/loss_step":
            logged.append(module.trainer.fit_loop.epoch_loop.batch_idx)
        return original(name, *args, **kwargs)

    module.log = spy
    recorder = LoggedSteps()
    options = dict(
        accelerator="cpu", max_epochs=1, limit_train_batches=batches, limit_val_batches=0, enable_checkpointing=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    options.update(trainer_options)
    options["callbacks"] = [*options.get("callbacks", []), recorder]
    Trainer(**options).fit(module, digits)
    return module, logged, recorder


def loss_step_rows(path) -> list[tuple[int, float]]:
    with open(path) as f:
        return [(int(r["step"]), float(r["train/loss_step"])) for r in csv.DictReader(f) if r.get("train/loss_step")]


def test_logger_rows_are_those_of_logging_every_step(tmp_path, digits, monkeypatch):
    """With a logger every 3 steps and no bar, the loss is logged at those steps only, and the CSV
    holds the same rows (steps and values) as when the loss is logged at every step."""
    def run(folder):
        logger = CSVLogger(tmp_path / folder, name="logs")
        _, logged, _ = fit(tmp_path / folder, digits, 8, logger=logger, log_every_n_steps=3, enable_progress_bar=False)
        return logged, loss_step_rows(f"{logger.log_dir}/metrics.csv")

    logged, rows = run("read")
    assert logged == [2, 5]  # Lightning writes step values after steps 3 and 6
    monkeypatch.setattr(classifier_module, "step_value_read", lambda module, batch_idx: True)
    logged_always, rows_always = run("always")
    assert logged_always == list(range(8))
    assert rows == rows_always and len(rows) == 2


def test_progress_bar_shows_each_refreshed_batch_loss(tmp_path, digits):
    """With a bar refreshed every 4 batches and no logger, the loss is logged after batches 4, 8 and
    the last (10), and the bar then holds that batch's loss."""
    _, logged, recorder = fit(
        tmp_path, digits, 10, logger=False, callbacks=[TQDMProgressBar(refresh_rate=4)]
    )
    assert logged == [3, 7, 9]
    for i in logged:
        assert recorder.shown[i] == pytest.approx(recorder.losses[i], rel=1e-6)


def test_no_reader_means_no_per_step_logging(tmp_path, digits):
    """Without a logger or a bar nobody reads per-step values; the epoch's loss is still logged."""
    module, logged, _ = fit(tmp_path, digits, 5, logger=False, enable_progress_bar=False)
    assert logged == []
    assert "train/loss" in module.trainer.callback_metrics


def test_fast_dev_run_logs_every_step(tmp_path, digits):
    _, logged, _ = fit(tmp_path, digits, 3, fast_dev_run=3, logger=False, enable_progress_bar=False)
    assert logged == [0, 1, 2]
