"""``lben-ode fit/test`` on a sequence config: end to end with a tiny budget, checkpoint, plot, dispatch."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lben_ode.datasets import SimulatedSystemDataModule
from lben_ode.lightning_modules.sequence import SequenceRegressor
from lben_ode.lightning_modules.sequence_cli import is_sequence_run

from lben_ode import ContractingLBEN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY = {
    "train_records": "2", "record_length": "150", "test_length": "100", "window": "40", "stride": "40",
    "washout": "10", "batch_size": "4",
}


def tiny_args(cache: Path) -> list[str]:
    args = [f"--data.init_args.{k}={v}" for k, v in TINY.items()]
    return [*args, f"--data.init_args.cache_dir={cache}", "--model.model.init_args.width=8"]


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lben-ode"])


def test_sequence_runs_are_recognised_by_their_data_module(tmp_path):
    assert is_sequence_run(["fit", "--config", str(CONFIGS / "duffing.yaml")])
    assert is_sequence_run(["fit", "--data", "lben_ode.datasets.SequenceFileDataModule"])
    assert is_sequence_run([f"--config={CONFIGS / 'rlc.yaml'}", "test"])
    assert not is_sequence_run(["fit"])
    assert not is_sequence_run(["fit", "--config", str(CONFIGS / "digits.yaml")])
    # The command line's --data wins over the config file's.
    assert not is_sequence_run(["fit", "--config", str(CONFIGS / "duffing.yaml"), "--data",
                                "lben_ode.datasets.DigitsDataModule"])


def test_fit_then_test_with_another_method(tmp_path, lben_ode_cli):
    cache = tmp_path / "cache"
    out = lben_ode_cli.run(
        ["fit", "--config", str(CONFIGS / "duffing.yaml"), *tiny_args(cache), "--trainer.max_epochs=1",
         "--trainer.default_root_dir=runs", "--trainer.enable_progress_bar=false"]
    )
    last = lben_ode_cli.printed_path(out, "last checkpoint")
    best = lben_ode_cli.printed_path(out, "best checkpoint")
    assert last.is_file() and best.is_file() and "val/nrmse" in out
    fit_metrics = lben_ode_cli.printed_path(out, "metrics (CSV)")
    row = lben_ode_cli.last_row_with(fit_metrics, "val/nrmse")
    assert row["val/gain/gamma"] == 3.0 and row["val/simulation/function_evaluations"] > 0
    assert lben_ode_cli.last_row_with(fit_metrics, "train/loss")["train/loss"] > 0

    out = lben_ode_cli.run(
        ["test", "--config", str(CONFIGS / "duffing.yaml"), *tiny_args(cache), "--ckpt_path", str(last),
         "--model.method=midpoint", "--model.step_size=0.1", "--trainer.default_root_dir=runs"]
    )
    plot = lben_ode_cli.printed_path(out, "prediction plot")
    assert plot.is_file() and plot.stat().st_size > 10_000
    test_metrics = lben_ode_cli.printed_path(out, "metrics (CSV)")
    assert lben_ode_cli.saved_config(test_metrics)["model"]["method"] == "midpoint"
    row = lben_ode_cli.last_row_with(test_metrics, "test/nrmse")
    # Midpoint: two evaluations per step, two steps of 0.1 per sample interval of 0.2.
    assert row["test/simulation/function_evaluations"] == 2 * 2 * 99

    # The checkpoint holds the whole configuration and the normalisation: it loads with
    # weights_only=True and no model given, and reproduces the logged test metric.
    module = SequenceRegressor.load_from_checkpoint(last, weights_only=True, method="midpoint", step_size=0.1)
    assert isinstance(module.model, ContractingLBEN) and module.model.width == 8
    data = SimulatedSystemDataModule(cache_dir=str(cache), **{k: int(v) for k, v in TINY.items()})
    assert module.normalization == data.normalization
    errors, targets = [], []
    with torch.no_grad():
        for u, y, t, scored in data.test_dataloader():
            n = module.normalization
            prediction = n.outputs_to_raw(module(u, t)[0, scored].double())
            target = n.outputs_to_raw(y[0, scored].double())
            errors.append(prediction - target)
            targets.append(target)
    e, y = torch.cat(errors).numpy(), torch.cat(targets).numpy()
    nrmse = 100 * np.sqrt((e**2).mean()) / y.std()
    assert row["test/nrmse"] == pytest.approx(nrmse, rel=1e-4)
