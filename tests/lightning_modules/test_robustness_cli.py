"""``lben-ode robustness``: a trained digits checkpoint → table, CSV, JSON and plot; names, solvers and bad input."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from lben_ode.lightning_modules import LBENClassifier, main
from lben_ode.lightning_modules.robustness_cli import checkpoint_names, parse_eps, parse_solver_option

from lben_ode.solvers import available

SAMPLES = 100
EPS = (0.0, 0.02, 0.05, 0.5)
# Small attack and Lipschitz-search settings: the test checks the plumbing, not the attack's strength.
QUICK = ["--attack-steps", "5", "--attack-restarts", "1", "--lipschitz-samples", "16", "--lipschitz-steps", "5"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    """In-process runs get their arguments explicitly, as from an empty command line."""
    monkeypatch.setattr(sys, "argv", ["lben-ode"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints (best and last) of a small dense LBEN trained on the digits for one short epoch."""
    root = tmp_path_factory.mktemp("fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["lben-ode"])
        main(
            ["fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "10",
             "--trainer.limit_val_batches", "2", "--trainer.default_root_dir", str(root),
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--model.model.init_args.width", "16"]
        )
    checkpoints = root / "lightning_logs" / "version_0" / "checkpoints"
    best = next(p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt")
    return {"last": checkpoints / "last.ckpt", "best": best}


def first_test_examples(n: int) -> tuple[torch.Tensor, torch.Tensor, DigitsDataModule]:
    """The first ``n`` digits test examples in model units, as ``lben-ode fit`` split them by default."""
    data = DigitsDataModule()
    data.setup()
    test = data.dataset("test")
    return test.inputs[:n], test.labels[:n], data


def own_accuracy(ckpt: Path, n: int, **overrides) -> float:
    """Accuracy of the checkpoint's model on the first ``n`` test examples, straight from the data module."""
    module = LBENClassifier.load_from_checkpoint(ckpt, weights_only=True, **overrides).eval()
    x, y, _ = first_test_examples(n)
    with torch.no_grad():
        return (module(x).argmax(1) == y).double().mean().item()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def fails(args: list[str], capsys) -> str:
    """Run the command in-process, expect exit status 2; return stderr."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_report_of_one_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "out"
    main(["robustness", "--ckpt", str(trained["last"]), "--samples", str(SAMPLES),
          "--eps", ",".join(map(str, EPS)), *QUICK, "--out", str(out)])
    printed = capsys.readouterr().out
    names = ("robustness.txt", "robustness.csv", "robustness.json", "accuracy_vs_eps.png")
    files = {name: out / name for name in names}
    for path in files.values():
        assert path.is_file() and str(path) in printed
    table = files["robustness.txt"].read_text()
    assert "cert@0.05 %" in table and "pgd@0.5 %" in table and table.strip() in printed

    clean = own_accuracy(trained["last"], SAMPLES)
    assert 0.3 < clean < 1.0  # trained beyond chance, so the checks below are not vacuous
    result = json.loads(files["robustness.json"].read_text())
    (row,) = result["rows"]
    assert row["model"] == "last" and row["checkpoint"] == str(trained["last"]) and row["solver"] == "pr"
    assert row["samples"] == row["attack_samples"] == SAMPLES
    assert row["clean_accuracy"] == pytest.approx(clean, abs=1e-12)
    assert row["eps"] == list(EPS) and result["settings"]["eps"] == list(EPS)
    assert result["settings"]["attack_steps"] == 5 and result["settings"]["eps_units"] == row["units"] == "raw"
    _, _, data = first_test_examples(1)
    assert row["gamma"] == pytest.approx(2.0)
    assert row["gamma_input_units"] == pytest.approx(2.0 / data.normalization.raw_scale)
    assert 0 < row["lower_bound"] <= row["gamma"] * (1 + 1e-4)

    csv_rows = read_csv(files["robustness.csv"])
    assert [float(r["eps"]) for r in csv_rows] == list(EPS)
    for r, certified, attacked in zip(csv_rows, row["certified_accuracy"], row["attack_accuracy"], strict=True):
        assert r["model"] == "last" and float(r["clean_accuracy"]) == pytest.approx(clean, abs=1e-12)
        assert float(r["certified_accuracy"]) == pytest.approx(certified)
        assert float(r["attack_accuracy"]) == pytest.approx(attacked)
        # Certificates are a lower bound on robust accuracy, the attack an upper one.
        assert certified <= attacked <= clean
    # At ε = 0 every correct example is certified and unbroken; larger radii cost accuracy.
    assert row["certified_accuracy"][0] == pytest.approx(clean) and row["attack_accuracy"][0] == pytest.approx(clean)
    assert 0 < row["certified_accuracy"][1] < row["attack_accuracy"][1]  # the ordering above is not vacuous
    assert row["certified_accuracy"][-1] < clean and row["attack_accuracy"][-1] < clean

    png = files["accuracy_vs_eps.png"].read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000


def test_default_eps_are_the_checkpoints_certify_eps(trained, tmp_path, capsys):
    out = tmp_path / "out"
    main(["robustness", "--ckpt", str(trained["best"]), "--samples", "10", "--attack-samples", "4", *QUICK,
          "--out", str(out)])
    (row,) = json.loads((out / "robustness.json").read_text())["rows"]
    assert row["eps"] == [0.25, 0.5, 0.75, 1.0]  # lben-ode fit's default certify_eps for the digits
    assert row["samples"] == 10 and row["attack_samples"] == 4
    assert row["model"] == trained["best"].stem
    assert row["clean_accuracy"] == pytest.approx(own_accuracy(trained["best"], 10), abs=1e-12)


def test_several_checkpoints_with_another_solver(trained, tmp_path, capsys):
    # Two runs whose checkpoints are both called last.ckpt: the run directories name them.
    copies = []
    for run in ("run_a", "run_b"):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        copies.append(shutil.copy(trained["last"], tmp_path / run / "checkpoints" / "last.ckpt"))
    out = tmp_path / "out"
    main(["robustness", "--ckpt", str(copies[0]), "--ckpt", str(copies[1]), "--samples", "20", "--eps", "0.1",
          "--solver", "fb", "--solver-option", "tol=1e-4", "--solver-option", "max_iter=5000",
          "--attack-steps", "2", "--attack-restarts", "1", "--lipschitz-samples", "4", "--lipschitz-steps", "2",
          "--out", str(out)])
    result = json.loads((out / "robustness.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["run_a", "run_b"]
    assert {r["solver"] for r in result["rows"]} == {"fb"}
    assert result["settings"]["solver_options"] == {"tol": 1e-4, "max_iter": 5000}
    fb = own_accuracy(trained["last"], 20, solver="fb", solver_options={"tol": 1e-4, "max_iter": 5000})
    assert [r["clean_accuracy"] for r in result["rows"]] == pytest.approx([fb, fb], abs=1e-12)
    assert len(read_csv(out / "robustness.csv")) == 2


def test_checkpoints_of_other_test_data_are_refused(trained, tmp_path, capsys):
    checkpoint = torch.load(trained["last"], weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["seed"] = 1  # another random split of the digits
    other = tmp_path / "other_split.ckpt"
    torch.save(checkpoint, other)
    err = fails(["robustness", "--ckpt", str(trained["last"]), "--ckpt", str(other), "--samples", "10",
                 "--out", str(tmp_path / "out")], capsys)
    assert "other_split" in err and "other test data" in err
    assert not (tmp_path / "out").exists()


def test_bad_input_exits_with_status_2(trained, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    err = fails(["robustness", "--ckpt", str(tmp_path / "missing.ckpt"), *out], capsys)
    assert "missing.ckpt" in err and "not found" in err
    err = fails(["robustness", "--ckpt", str(trained["last"]), "--solver", "broyden", *out], capsys)
    assert "unknown solver 'broyden'" in err
    assert all(name in err for name in available())
    assert "--eps" in fails(["robustness", "--ckpt", str(trained["last"]), "--eps", "0.5,-1", *out], capsys)
    assert "--ckpt" in fails(["robustness", *out], capsys)
    err = fails(["robustness", "--ckpt", str(trained["last"]), "--solver-option", "bogus=1", "--samples", "2", *out],
                capsys)
    assert "bogus" in err
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    assert "notes.ckpt" in fails(["robustness", "--ckpt", str(not_a_checkpoint), *out], capsys)
    # Saved from Python without the model's configuration: the model cannot be rebuilt.
    checkpoint = torch.load(trained["last"], weights_only=True)
    del checkpoint["hyper_parameters"]["model"]
    bare = tmp_path / "bare.ckpt"
    torch.save(checkpoint, bare)
    assert "does not record its model" in fails(["robustness", "--ckpt", str(bare), *out], capsys)
    assert not (tmp_path / "out").exists()


def test_argument_helpers():
    assert parse_eps("0,0.5,2") == (0.0, 0.5, 2.0)
    for bad in ("", "a", "1,,2", "-1", "nan", "inf"):
        with pytest.raises(Exception, match="radii"):
            parse_eps(bad)
    assert parse_solver_option("tol=1e-6") == ("tol", 1e-6)
    assert parse_solver_option("max_iter=50") == ("max_iter", 50)
    assert parse_solver_option("on_nonconvergence=raise") == ("on_nonconvergence", "raise")
    with pytest.raises(Exception, match="key=value"):
        parse_solver_option("tol")
    paths = [Path("r1/checkpoints/last.ckpt"), Path("r2/checkpoints/last.ckpt"), Path("r2/checkpoints/best.ckpt")]
    assert checkpoint_names(paths) == ["r1", "r2", "best"]
    assert checkpoint_names([paths[0], paths[0]]) == ["r1", "r1#2"]
    assert checkpoint_names(paths[:2], ["x", "y"]) == ["x", "y"]
    with pytest.raises(Exception, match="one per checkpoint"):
        checkpoint_names(paths, ["x"])


@pytest.mark.filterwarnings("ignore::lben_ode.ConvergenceWarning")
def test_unconverged_solves_are_refused_or_never_certified(trained, tmp_path, capsys):
    # One iteration leaves every equilibrium unsolved: no certificate may come out of it.
    quick = ["--ckpt", str(trained["last"]), "--samples", "20", "--eps", "0,0.02", "--solver-option", "max_iter=1",
             "--attack-steps", "2", "--attack-restarts", "1", "--lipschitz-samples", "4", "--lipschitz-steps", "2"]
    err = fails(["robustness", *quick, "--out", str(tmp_path / "refused")], capsys)
    assert "ConvergenceError" in err and "20 of 20 samples" in err and "--allow-unconverged" in err
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "allowed"
    main(["robustness", *quick, "--allow-unconverged", "--out", str(out)])
    captured = capsys.readouterr()
    assert "did not converge" in captured.err
    (row,) = json.loads((out / "robustness.json").read_text())["rows"]
    assert row["converged_fraction"] == 0.0 and row["jacobian_converged_fraction"] == 0.0
    assert row["certified_accuracy"] == [0.0, 0.0] and row["attack_accuracy"] == [0.0, 0.0]
    assert row["clean_accuracy"] > 0  # the iterate classifies some digits, but certifies none
    csv_rows = read_csv(out / "robustness.csv")
    assert [float(r["converged_fraction"]) for r in csv_rows] == [0.0, 0.0]
    assert [float(r["attack_converged_fraction"]) for r in csv_rows] == [0.0, 0.0]
    header, _, line = (out / "robustness.txt").read_text().splitlines()
    assert "conv %" in header and line.split()[6:8] == ["0.0", "no"]

    # A converged evaluation of the same checkpoint says so in every file.
    ok = tmp_path / "converged"
    main(["robustness", *quick[:6], *quick[8:], "--out", str(ok)])
    (row,) = json.loads((ok / "robustness.json").read_text())["rows"]
    assert row["converged_fraction"] == row["lipschitz_converged_fraction"] == 1.0
    assert row["certified_accuracy"][0] == pytest.approx(row["clean_accuracy"])
    assert row["certified_accuracy"][1] > 0
