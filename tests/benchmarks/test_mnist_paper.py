"""benchmarks/mnist_paper.py: the over-seeds summary and a tiny end-to-end run on synthetic IDX files."""

import argparse
import csv
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mnist_paper.py"


@pytest.fixture(scope="module")
def mnist_paper():
    spec = importlib.util.spec_from_file_location("mnist_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _row(model: str, seed: int, error: float, cert: float | None, tightness: float | None) -> dict:
    return {
        "model": model,
        "seed": seed,
        "test_error_pct": error,
        "lipschitz_lower_over_gamma": tightness,
        "certified_pct_eps1_pixel": cert,
        "pgd_pct_eps1_pixel": 90.0 + seed,
        "train_s_per_epoch": 2.0 * (seed + 1),
    }


def test_seed_summary_statistics(mnist_paper):
    rows = [
        _row("lben1", 0, 3.0, 50.0, 0.8),
        _row("mondeq", 0, 2.5, None, None),
        _row("lben1", 1, 2.0, 60.0, 0.9),
        _row("mondeq", 1, 2.7, None, None),
        _row("lben1", 2, 2.6, 40.0, 0.85),
    ]
    lben, mondeq = mnist_paper.seed_summary(rows, [1.0])
    assert lben["model"] == "lben1" and mondeq["model"] == "mondeq"
    assert lben["seeds"] == 3 and mondeq["seeds"] == 2
    errors = np.array([3.0, 2.0, 2.6])
    assert lben["test_error_pct_mean"] == pytest.approx(errors.mean())
    assert lben["test_error_pct_sd"] == pytest.approx(errors.std(ddof=1))
    assert (lben["test_error_pct_min"], lben["test_error_pct_max"]) == (2.0, 3.0)
    assert lben["certified_pct_eps1_pixel_mean"] == pytest.approx(50.0)
    assert lben["pgd_pct_eps1_pixel_mean"] == pytest.approx(91.0)
    assert lben["lipschitz_lower_over_gamma_max"] == 0.9
    assert lben["paper_code_5_epoch_error_pct"] == 3.24
    assert mondeq["certified_pct_eps1_pixel_mean"] is None and mondeq["lipschitz_lower_over_gamma_max"] is None
    assert mondeq["test_error_pct_sd"] == pytest.approx(np.std([2.5, 2.7], ddof=1))
    (single,) = mnist_paper.seed_summary(rows[:1], [1.0])
    assert single["test_error_pct_sd"] is None


@pytest.mark.parametrize("text", ["", "1,1", "0,x"])
def test_seed_list_rejects_bad_input(mnist_paper, text):
    with pytest.raises(argparse.ArgumentTypeError):
        mnist_paper.seed_list(text)


def test_two_seeds_end_to_end(mnist_paper, tmp_path, capsys, synthetic_mnist):
    data = synthetic_mnist(tmp_path / "mnist", n_train=64, n_test=16)
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "--out", str(out), "--models", "lben1,mondeq", "--seeds", "3,4"]
    argv += ["--epochs", "1", "--width", "8", "--batch-size", "32", "--no-progress", "--accelerator", "cpu"]
    argv += ["--attack-samples", "4", "--attack-steps", "2", "--attack-restarts", "1"]
    argv += ["--lipschitz-samples", "2", "--lipschitz-restarts", "1", "--lipschitz-steps", "2"]
    threads = torch.get_num_threads()
    try:
        assert mnist_paper.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # main() sets --threads for the whole process

    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["seed"]) for r in rows] == [("lben1", "3"), ("mondeq", "3"), ("lben1", "4"), ("mondeq", "4")]
    with open(out / "summary.csv") as handle:
        summary = {r["model"]: r for r in csv.DictReader(handle)}
    for model in ("lben1", "mondeq"):
        errors = [float(r["test_error_pct"]) for r in rows if r["model"] == model]
        assert float(summary[model]["test_error_pct_mean"]) == pytest.approx(statistics.fmean(errors))
        assert summary[model]["seeds"] == "2"
    results = json.loads((out / "results.json").read_text())
    assert set(results["epoch_seconds"]) == {"lben1/seed3", "mondeq/seed3", "lben1/seed4", "mondeq/seed4"}
    assert (out / "accuracy_vs_eps.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Over seeds 3, 4" in printed and "seed(s) 3, 4" in printed
