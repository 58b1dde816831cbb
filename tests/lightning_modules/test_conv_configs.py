"""The shipped convolutional configs: MNIST trains end to end, CIFAR-10's model fits its images."""

import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lben_ode.datasets import MNISTDataModule
from lben_ode.lightning_modules import LBENCLI, main

import lben_ode

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def bare_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lben-ode"])


def test_mnist_conv_yaml_builds_a_conv_lben_on_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = LBENCLI(args=["--config", str(CONFIGS / "mnist_conv.yaml"), "--data.data_dir", str(tmp_path)], run=False)
    model, data = cli.model.model, cli.datamodule
    assert isinstance(model, lben_ode.ConvLBEN) and isinstance(data, MNISTDataModule)
    assert model.input_shape == data.input_shape == (1, 28, 28)
    assert model.lipschitz_bound() == 1.0 and model.solver.name == "anderson" and model.margin == 1.0


def test_mnist_conv_yaml_trains_on_idx_files(tmp_path, monkeypatch, capsys, lben_ode_cli, synthetic_mnist):
    monkeypatch.chdir(tmp_path)
    synthetic_mnist(tmp_path, n_train=16, n_test=8)
    main(
        ["fit", "--config", str(CONFIGS / "mnist_conv.yaml"), "--data.data_dir", str(tmp_path),
         "--model.model.init_args.channels", "4", "--trainer.max_epochs", "1",
         "--trainer.default_root_dir", "runs", "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    metrics = lben_ode_cli.printed_path(capsys.readouterr().out, "metrics (CSV)")
    row = lben_ode_cli.last_row_with(metrics, "val/acc")
    assert row["val/forward/converged_fraction"] == 1.0
    assert row["val/lipschitz/gamma_raw"] == pytest.approx(1.0 / 0.3081, rel=1e-6)
    assert lben_ode_cli.last_row_with(metrics, "train/loss")["train/backward/converged_fraction"] == 1.0


def test_cifar10_conv_yaml_model_solves_cifar_sized_images():
    # The data module needs torchvision (an optional extra); the model part is checked on its own.
    config = yaml.safe_load((CONFIGS / "cifar10_conv.yaml").read_text())
    assert config["data"]["class_path"] == "lben_ode.datasets.CIFAR10DataModule"
    spec = config["model"]["model"]
    spec["init_args"]["channels"] = 8  # the shipped 81 channels work the same, only slower on a CPU
    parser = ArgumentParser()
    parser.add_subclass_arguments(lben_ode.EquilibriumModel, "model")
    model = parser.instantiate_classes(parser.parse_object({"model": spec})).model
    solver = config["model"]
    model.set_solver(solver["solver"], **solver["solver_options"])
    assert isinstance(model, lben_ode.ConvLBEN) and model.input_shape == (3, 32, 32)
    torch.manual_seed(0)
    logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    assert model.solver_stats["forward"].all_converged
