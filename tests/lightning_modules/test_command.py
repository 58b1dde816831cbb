"""The ``lben-ode`` entry point: quick top-level help, one-line errors (exit 2), --traceback, no noise."""

import importlib.util
import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch
from lben_ode.lightning_modules.command import SUBCOMMANDS, main, user_error

import lben_ode


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["lben-ode"])
    monkeypatch.delenv("LBEN_ODE_TRACEBACK", raising=False)
    monkeypatch.chdir(tmp_path)


def test_top_level_help_lists_every_subcommand_without_importing_lightning():
    code = (
        "import sys\n"
        "from lben_ode.lightning_modules.command import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('HEAVY', sorted(m for m in ('lightning', 'matplotlib', 'sklearn') if m in sys.modules))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "HEAVY []" in out, out
    from lightning.pytorch.cli import LightningCLI

    listed = {line.split()[0] for line in out.split("subcommands")[1].split("options:")[0].splitlines()[1:] if line}
    assert listed == set(LightningCLI.subcommands()) | {"robustness"} == set(SUBCOMMANDS)


def one_line_error(args: list[str], capsys, max_lines: int = 1) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= max_lines, err
    assert "Traceback" not in err
    return err


def test_library_errors_wrapped_by_jsonargparse_are_one_line(capsys):
    err = one_line_error(["fit", "--data.batch_size", "0"], capsys)
    assert err == "lben-ode fit: error: ConfigurationError: batch_size must be a positive int (≥ 1), got 0\n"
    err = one_line_error(["fit", "--model.model.init_args.gamma", "-1"], capsys)
    assert "gamma must be a finite float > 0" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_gpu_request_on_a_cpu_machine_is_one_line(capsys):
    err = one_line_error(["fit", "--trainer.accelerator", "gpu"], capsys)
    assert err.startswith("lben-ode fit: error:") and "gpu" in err.lower()


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_cifar_needs_torchvision_in_one_line(capsys, tmp_path):
    err = one_line_error(
        ["fit", "--data", "lben_ode.datasets.CIFAR10DataModule", "--data.data_dir", str(tmp_path),
         "--model.model.init_args.in_features", "3072"], capsys
    )
    assert "DatasetError" in err and "lben-ode[vision]" in err


def test_usage_errors_are_a_few_lines_not_the_whole_usage(capsys):
    err = one_line_error(["fit", "--no_such_option", "1"], capsys, max_lines=2)
    assert "unrecognized arguments: --no_such_option 1" in err and "'lben-ode fit --help'" in err
    err = one_line_error(["fit", "--trainer.max_epochs", "abc"], capsys, max_lines=8)
    assert "trainer.max_epochs" in err and "Subtypes" not in err
    err = one_line_error(["fitt"], capsys, max_lines=2)
    assert "invalid choice: 'fitt'" in err
    err = one_line_error([], capsys, max_lines=2)
    assert "expected a subcommand" in err


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_traceback_on_request(how, monkeypatch):
    args = ["fit", "--data.batch_size", "0"]
    if how == "flag":
        args.insert(1, "--traceback")
    else:
        monkeypatch.setenv("LBEN_ODE_TRACEBACK", "1")
    with pytest.raises(ValueError) as info:  # jsonargparse's error, raised from the library's
        main(args)
    assert isinstance(info.value.__cause__, lben_ode.ConfigurationError)


def test_only_errors_a_user_can_fix_are_shortened():
    assert user_error(RuntimeError("a bug")) is None
    assert user_error(KeyError("x")) is None
    try:
        try:
            raise lben_ode.ShapeError("bad shape")
        except lben_ode.ShapeError as exc:
            raise ValueError("wrapped") from exc
    except ValueError as exc:
        assert user_error(exc) == "ShapeError: bad shape"


def test_fit_and_test_print_no_noise(capsys, caplog, tmp_path):
    common = ["--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "1",
              "--trainer.log_every_n_steps", "1", "--model.model.init_args.width", "8"]
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        main(["fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *common])
        ckpt = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        main(["test", "--ckpt_path", str(ckpt), "--trainer.limit_test_batches", "1", *common])
    shown = [str(w.message) for w in record]
    printed = capsys.readouterr()
    text = "\n".join([*shown, printed.out, printed.err, caplog.text])
    for noise in ("LeafSpec", "dirpath has changed", "💡 Tip", "litlogger", "litmodels"):
        assert noise not in text, text
    assert "test/acc" in (tmp_path / "runs" / "lightning_logs" / "version_1" / "metrics.csv").read_text()
