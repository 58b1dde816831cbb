"""The ``lben-ode`` command: defaults, shipped configs, end-to-end fit → test with another solver, bad input."""

import sys
from pathlib import Path

import pytest
import torch
from lben_ode.datasets import DigitsDataModule, MNISTDataModule
from lben_ode.lightning_modules import LBENCLI, LBENClassifier, main

import lben_ode
from lben_ode.solvers import available

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """In-process runs get their arguments explicitly, as from an empty command line."""
    monkeypatch.setattr(sys, "argv", ["lben-ode"])


def parsed(args: list[str]) -> dict:
    """The configuration the command builds from ``args`` (classes instantiated, nothing run)."""
    cfg = LBENCLI(args=args, run=False).config.as_dict()
    cfg.pop("config", None)
    return cfg


def test_default_configuration_is_the_digits_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defaults = parsed([])
    assert defaults == parsed(["--config", str(CONFIGS / "digits.yaml")])
    assert defaults["model"]["model"]["class_path"] == "lben_ode.LBEN"
    assert defaults["model"]["solver"] == "pr"
    assert defaults["data"]["class_path"] == "lben_ode.datasets.DigitsDataModule"
    assert defaults["trainer"]["logger"] is None  # replaced by a CSVLogger at instantiation


def test_default_instantiates_a_dense_lben_on_digits_with_csv_logs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = LBENCLI(args=[], run=False)
    assert isinstance(cli.model, LBENClassifier) and isinstance(cli.model.model, lben_ode.LBEN)
    assert isinstance(cli.datamodule, DigitsDataModule)
    assert cli.model.model.input_shape == cli.datamodule.input_shape
    assert type(cli.trainer.logger).__name__ == "CSVLogger"
    assert Path(cli.trainer.logger.save_dir) == Path("runs")
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"


def test_mnist_yaml_is_the_paper_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = LBENCLI(args=["--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(tmp_path)], run=False)
    model, data = cli.model, cli.datamodule
    assert isinstance(model.model, lben_ode.LBEN) and isinstance(data, MNISTDataModule)
    assert (model.model.in_features, model.model.width, model.model.lipschitz_bound()) == (784, 80, 1.0)
    assert model.model.solver.name == "pr" and model.lr == 1e-3 and data.batch_size == 128
    assert model.certify_eps == (0.5, 1.0, 1.5, 2.0)
    assert data.input_shape == model.model.input_shape and data.data_dir == tmp_path


def test_mnist_yaml_trains_on_idx_files(tmp_path, monkeypatch, capsys, lben_ode_cli, synthetic_mnist):
    monkeypatch.chdir(tmp_path)
    synthetic_mnist(tmp_path, n_train=64, n_test=32)
    main(
        ["fit", "--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(tmp_path),
         "--trainer.max_epochs", "1", "--trainer.default_root_dir", "runs", "--trainer.enable_progress_bar", "false"]
    )
    metrics = lben_ode_cli.printed_path(capsys.readouterr().out, "metrics (CSV)")
    row = lben_ode_cli.last_row_with(metrics, "val/acc")
    assert row["val/forward/converged_fraction"] == 1.0
    assert row["val/lipschitz/gamma_raw"] == pytest.approx(1.0 / 0.3081, rel=1e-6)
    assert lben_ode_cli.last_row_with(metrics, "train/loss")["train/backward/converged_fraction"] == 1.0


def test_fit_then_test_with_another_solver(tmp_path, lben_ode_cli):
    out = lben_ode_cli.run(
        ["fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
         "--trainer.default_root_dir", "runs", "--model.model.init_args.width", "16"]
    )
    last = lben_ode_cli.printed_path(out, "last checkpoint")
    best = lben_ode_cli.printed_path(out, "best checkpoint")
    fit_metrics = lben_ode_cli.printed_path(out, "metrics (CSV)")
    assert last.is_file() and best.is_file()
    fit_row = lben_ode_cli.last_row_with(fit_metrics, "val/acc")
    assert lben_ode_cli.saved_config(fit_metrics)["model"]["solver"] == "pr"

    # Only the checkpoint and the new solver are given: the width comes from the checkpoint.
    out = lben_ode_cli.run(["test", "--ckpt_path", str(last), "--model.solver", "fb",
                            "--trainer.default_root_dir", "runs"])
    test_metrics = lben_ode_cli.printed_path(out, "metrics (CSV)")
    assert test_metrics != fit_metrics
    config = lben_ode_cli.saved_config(test_metrics)
    assert config["model"]["solver"] == "fb" and config["model"]["model"]["init_args"]["width"] == 16
    row = lben_ode_cli.last_row_with(test_metrics, "test/acc")
    assert row["test/forward/converged_fraction"] == 1.0
    # Forward-backward takes small safe steps: many more iterations than Peaceman-Rachford.
    assert row["test/forward/iterations_mean"] > 2 * fit_row["val/forward/iterations_max"]

    # The checkpoint holds the configuration: it loads with weights_only=True and no model given.
    module = LBENClassifier.load_from_checkpoint(last, weights_only=True, solver="fb")
    assert isinstance(module.model, lben_ode.LBEN) and module.model.width == 16
    data = DigitsDataModule()
    data.setup()
    with torch.no_grad():
        predictions = module(data.dataset("test").inputs).argmax(1)
    accuracy = (predictions == data.dataset("test").labels).double().mean().item()
    assert row["test/acc"] == pytest.approx(accuracy, abs=1e-6)


def fails(args: list[str], capsys) -> str:
    """Run the command in-process, expect a usage error (exit status 2); return stderr."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_unknown_keys_are_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "--model.bogus" in fails(["fit", "--model.bogus", "1"], capsys)
    assert "depth" in fails(["fit", "--model.model.init_args.depth", "3"], capsys)
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  solver: pr\n  bogus_key: 1\n")
    assert "bogus_key" in fails(["fit", "--config", str(config)], capsys)
    config.write_text("trainer:\n  max_epoch: 3\n")
    assert "max_epoch" in fails(["fit", "--config", str(config)], capsys)


def test_unknown_solver_lists_the_registered_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = fails(["fit", "--model.solver", "broyden"], capsys)
    assert "unknown solver 'broyden'" in err
    for name in available():
        assert name in err
    assert "Traceback" not in err


def test_bad_gamma(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "gamma must be a finite float > 0" in fails(["fit", "--model.model.init_args.gamma", "-1"], capsys)
    assert "gamma" in fails(["fit", "--model.model.init_args.gamma", "abc"], capsys)


def test_missing_mnist_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = fails(
        ["validate", "--config", str(CONFIGS / "mnist.yaml"), "--data.data_dir", str(tmp_path / "absent")], capsys
    )
    assert "DatasetError" in err and "does not exist" in err and "Traceback" not in err


def test_top_level_help_mentions_the_robustness_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "lben-ode robustness" in capsys.readouterr().out


def test_tensorboard_logs_beside_the_csv(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "tensorboard.yaml"), "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", "--model.model.init_args.width", "8"])
    out = capsys.readouterr().out
    assert (tmp_path / "runs" / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    assert "metrics (CSV):" in out and "TensorBoard:" in out


def test_an_activation_parameter_is_set_from_the_command_line():
    cli = LBENCLI(args=["--model.model.init_args.activation", "lben_ode.activations.LeakyReLU",
                        "--model.model.init_args.activation.negative_slope", "0.1"], run=False)
    assert cli.model.model.activation.negative_slope == 0.1
    x = torch.tensor([-2.0, 3.0])
    assert torch.equal(cli.model.model.activation(x), torch.tensor([-0.2, 3.0]))


def test_command_refreshes_its_default_bar_every_ten_batches(lben_ode_cli):
    """``lben-ode fit`` adds a bar refreshed every PROGRESS_REFRESH_RATE batches when none is
    configured, keeps a configured one, and adds none with the bar disabled."""
    from lben_ode.lightning_modules.cli import LBENCLI, PROGRESS_REFRESH_RATE
    from lightning.pytorch.callbacks import TQDMProgressBar

    base = ["--trainer.max_epochs", "1", "--trainer.default_root_dir", str(lben_ode_cli.cwd),
            "--trainer.logger", "false", "--checkpoint.save_last", "false", "--checkpoint.monitor", "null"]

    def bars(*extra: str) -> list:
        cli = LBENCLI(args=[*base, *extra], run=False)
        return [c for c in cli.trainer.callbacks if isinstance(c, TQDMProgressBar)]

    (default,) = bars()
    assert default.refresh_rate == PROGRESS_REFRESH_RATE == 10
    (configured,) = bars("--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate", "1")
    assert configured.refresh_rate == 1
    assert bars("--trainer.enable_progress_bar", "false") == []
