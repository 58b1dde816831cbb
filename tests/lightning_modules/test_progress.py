"""Progress bars of the long evaluations: on stderr, per stage, off when stderr is not a terminal unless asked."""

import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from lben_ode.lightning_modules import LBENClassifier
from lben_ode.lightning_modules.progress import progress_wanted
from lben_ode.lightning_modules.robustness_cli import build_parser
from lightning.pytorch import Trainer

import lben_ode
from lben_ode.robustness import robustness_report


def test_progress_is_off_without_a_terminal_unless_asked(monkeypatch):
    monkeypatch.delenv("LBEN_ODE_PROGRESS", raising=False)
    assert progress_wanted() is False  # pytest captures stderr: not a terminal
    monkeypatch.setenv("LBEN_ODE_PROGRESS", "1")
    assert progress_wanted() is True
    assert progress_wanted(False) is False
    monkeypatch.setenv("LBEN_ODE_PROGRESS", "0")
    assert progress_wanted() is False and progress_wanted(True) is True
    parser = build_parser()
    assert parser.parse_args(["--ckpt", "a.ckpt"]).progress is None
    assert parser.parse_args(["--ckpt", "a.ckpt", "--progress"]).progress is True
    assert parser.parse_args(["--ckpt", "a.ckpt", "--no-progress"]).progress is False


def test_robustness_report_names_each_stage_of_each_model(capsys):
    torch.manual_seed(0)
    model = lben_ode.LBEN(6, 3, width=8, gamma=1.0)
    x, y = torch.rand(8, 6), torch.randint(0, 3, (8,))
    robustness_report([("tiny", model, None)], (x, y), [0.5], attack_steps=2, attack_restarts=1,
                      lipschitz_samples=4, lipschitz_steps=2, progress=True)
    err = capsys.readouterr().err
    for stage in ("tiny: evaluate and certify", "tiny: attack ε=0.5", "Lipschitz search", "Jacobian"):
        assert stage in err, err
    robustness_report([("tiny", model, None)], (x, y), [0.5], attack_steps=2, attack_restarts=1,
                      lipschitz_samples=4, lipschitz_steps=2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("asked", ["1", "0"])
def test_test_time_lipschitz_search_has_its_own_bar(asked, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LBEN_ODE_PROGRESS", asked)
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=16)
    module = LBENClassifier(lben_ode.LBEN(64, 10, 8, gamma=2.0), lipschitz_search=True, lipschitz_samples=4,
                            lipschitz_options={"steps": 3, "restarts": 1})
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_model_summary=False, limit_test_batches=1, default_root_dir=tmp_path)
    trainer.test(module, data, verbose=False)
    assert ("Lipschitz search" in capsys.readouterr().err) == (asked == "1")
