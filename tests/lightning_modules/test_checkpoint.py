"""Bad checkpoint files get one line naming the file and the problem: in Python, `lben-ode test` and `robustness`."""

import os
import sys
from pathlib import Path

import pytest
import torch
from lben_ode.lightning_modules import LBENClassifier, main
from lben_ode.lightning_modules.checkpoint import read_checkpoint

import lben_ode
from lben_ode.errors import CheckpointError


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lben-ode"])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of a tiny LBEN written by `lben-ode fit`, and bad files of every kind next to it."""
    root = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["lben-ode"])
        main(
            ["fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
             "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(root),
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--model.model.init_args.width", "8"]
        )
    good = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    data = good.read_bytes()
    paths = {name: root / f"{name}.ckpt" for name in
             ("truncated", "random", "text", "empty", "plain_dict", "no_hparams", "pickled_module")}
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["random"].write_bytes(os.urandom(2048))
    paths["text"].write_text("model: LBEN\nwidth: 8\n")
    paths["empty"].write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, paths["plain_dict"])
    checkpoint = torch.load(good, weights_only=True)
    torch.save({k: v for k, v in checkpoint.items() if k != "hyper_parameters"}, paths["no_hparams"])
    torch.save(torch.nn.Linear(2, 2), paths["pickled_module"])
    return {"good": good, "missing": root / "missing.ckpt", "directory": root, **paths}


#: Files that are not a Lightning checkpoint at all, and a word the message must contain.
UNREADABLE = {
    "missing": "not found",
    "directory": "not a file",
    "truncated": "truncated",
    "random": "not a PyTorch checkpoint",
    "text": "text file",
    "empty": "empty",
    "plain_dict": "no 'state_dict'",
    "pickled_module": "pickled Python objects",
}


def one_line(message: str, path: Path) -> None:
    assert str(path) in message, message
    assert "\n" not in message.strip(), message
    assert "weights_only" not in message and "Traceback" not in message, message


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_read_checkpoint_names_the_file_and_the_problem(files, kind):
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(files[kind])
    one_line(str(info.value), files[kind])
    assert UNREADABLE[kind] in str(info.value)
    assert isinstance(info.value, lben_ode.ConfigurationError)


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_load_from_checkpoint_refuses_bad_files_in_one_line(files, kind):
    with pytest.raises(CheckpointError, match=UNREADABLE[kind]) as info:
        LBENClassifier.load_from_checkpoint(files[kind])
    one_line(str(info.value), files[kind])


def test_load_from_checkpoint_without_the_model_configuration(files):
    with pytest.raises(CheckpointError, match="does not record its model") as info:
        LBENClassifier.load_from_checkpoint(files["no_hparams"])
    one_line(str(info.value), files["no_hparams"])
    # With the model given, the weights load, and they are the trained ones.
    module = LBENClassifier.load_from_checkpoint(
        files["no_hparams"], model=lben_ode.LBEN(in_features=64, out_features=10, width=8, gamma=2.0)
    )
    trained = torch.load(files["good"], weights_only=True)["state_dict"]
    assert torch.equal(module.state_dict()["model.U"], trained["model.U"])
    with pytest.raises(CheckpointError, match="do not fit") as info:
        LBENClassifier.load_from_checkpoint(files["no_hparams"], model=lben_ode.LBEN(64, 10, width=5))
    one_line(str(info.value), files["no_hparams"])


def cli_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "text", "plain_dict", "pickled_module"])
def test_cli_test_and_robustness_refuse_bad_files_in_one_line(files, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = cli_error(["test", "--ckpt_path", str(files[kind])], capsys)
    one_line(err, files[kind])
    assert UNREADABLE[kind] in err and err.startswith("lben-ode test: error: CheckpointError")
    err = cli_error(["robustness", "--ckpt", str(files[kind]), "--out", str(tmp_path / "out")], capsys)
    one_line(err, files[kind])
    assert UNREADABLE[kind] in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_cli_refuses_weights_that_do_not_fit_the_configured_model(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # No configuration in the file: the command line's model (width 5) is used, and does not fit.
    err = cli_error(["test", "--ckpt_path", str(files["no_hparams"]), "--model.model.init_args.width", "5"], capsys)
    one_line(err, files["no_hparams"])
    assert "do not fit" in err and "model.U" in err
    err = cli_error(["robustness", "--ckpt", str(files["no_hparams"])], capsys)
    assert "does not record its model" in err


def test_a_config_after_ckpt_path_cannot_silently_drop_it(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = files["good"]
    config = good.parents[1] / "config.yaml"  # the run's saved configuration: ckpt_path: null
    assert "ckpt_path: null" in config.read_text()
    # Later arguments win in a Lightning command line, so the file would replace the checkpoint by
    # none and the test would evaluate untrained weights: refused, saying what happened.
    err = cli_error(["test", "--ckpt_path", str(good), "--config", str(config)], capsys)
    assert "--ckpt_path" in err and "replaced by ckpt_path: None" in err and "--config before" in err
    err = cli_error(["test", f"--ckpt_path={good}", "--config", str(config)], capsys)
    assert "replaced by ckpt_path: None" in err
    # The other order, and an explicit null, are what they say.
    common = ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs")]
    main(["test", "--config", str(config), "--ckpt_path", str(good), *common])
    main(["test", "--config", str(config), "--ckpt_path", "null", *common])
