"""benchmarks/solvers.py: the quick run's size and output, and a chart whose legend covers no bar."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.transforms import Bbox

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "solvers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("solvers_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def fake_row(bench, model: str, solver: str, options: str, width: int, ms: float):
    return bench.Row(model, solver, options, width, 128, 10, 12, float("nan"), 1e-5, 1.0, ms, ms, 2 * ms, 11, 3)


def test_legend_covers_no_bar(bench):
    rows = [
        fake_row(bench, model, solver, options, width, ms * (k + 1))
        for model, width in (("dense", 80), ("conv", 8))
        for k, (solver, options) in enumerate(
            [("anderson", "defaults"), ("fb", "defaults"), ("pr", "defaults")]
            + [("ode", f"method={m}") for m in ("dopri5", "bosh3", "adaptive_heun", "rk4", "midpoint", "euler")]
        )
        for ms in (3.0 if model == "dense" else 40.0,)
    ]
    fig = bench.figure(rows)
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    # The visible part of each bar (on a log axis a bar starts far below the axes).
    bars = [Bbox.intersection(patch.get_window_extent(renderer), ax.bbox) for ax in fig.axes for patch in ax.patches]
    assert len(bars) == 2 * len(rows)
    assert not [bar for bar in bars if bar.overlaps(box)]
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(legend.get_texts()) == 9


def test_quick_run_is_small_and_writes_its_table(bench, tmp_path, capsys):
    rows = bench.main(["--quick", "--solvers", "pr", "fb", "--threads", "1", "--out", str(tmp_path), "--no-plot"])
    # Dense width 80 × batch 128 for both; the ConvLBEN (8 channels, batch 16) only for fb (pr needs an inverse).
    assert {(r.model, r.solver, r.width, r.batch) for r in rows} == {
        ("dense", "pr", 80, 128), ("dense", "fb", 80, 128), ("conv", "fb", 8, 16)
    }
    assert all(r.repeats <= 3 and r.converged_fraction == 1.0 for r in rows)
    with (tmp_path / "solvers.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3
    assert "skipped pr (defaults), conv" in capsys.readouterr().out


def test_trained_networks_are_trained_then_solved_on_their_images(bench, tmp_path, synthetic_mnist, capsys):
    data = synthetic_mnist(tmp_path / "mnist", n_train=256, n_test=16)
    argv = ["--quick", "--solvers", "pr", "--threads", "1", "--out", str(tmp_path), "--no-plot"]
    random_rows = bench.main(argv)
    rows = bench.main([*argv, "--trained-epochs", "1", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert "trained width 80 for 1 epoch(s)" in out and "no ConvLBEN line" in out
    # Only the dense line (the ConvLBEN line is left out), solved on the trained network.
    assert [(r.model, r.solver, r.width, r.batch, r.trained_epochs) for r in rows] == [("dense", "pr", 80, 128, 1)]
    assert rows[0].converged_fraction == 1.0
    assert [r.trained_epochs for r in random_rows if r.model == "dense"] == [0]
    with (tmp_path / "solvers.csv").open() as f:
        assert [row["trained_epochs"] for row in csv.DictReader(f)] == ["1"]


def test_trained_network_state_and_inputs(bench, tmp_path, synthetic_mnist):
    data = synthetic_mnist(tmp_path / "mnist", n_train=256, n_test=16)
    net = bench.train_on_mnist(8, 1, str(data), batch=40, seed=0)
    torch.manual_seed(0)
    untrained = bench.LBEN(784, 10, 8, gamma=1.0, margin=1.0)
    # Training moved the weights away from the seeded initialisation.
    assert not torch.equal(net.state["V"], untrained.state_dict()["V"])
    # Each variant solves the trained network (in a model with its own solver) on its images.
    model, x = bench.network_and_inputs("dense", "fb", {}, 8, 16, torch.device("cpu"), 1e-4, 0, net)
    assert model.solver.name == "fb"
    assert all(torch.equal(t, net.state[k]) for k, t in model.state_dict().items())
    assert torch.equal(x, net.inputs[:16])
    random_model, random_x = bench.network_and_inputs("dense", "fb", {}, 8, 16, torch.device("cpu"), 1e-4, 0)
    assert not torch.equal(random_model.V, net.state["V"]) and not torch.equal(random_x, x)
    # The images: normalised MNIST pixels (raw values in [0, 1]), flattened, as many as asked.
    assert net.inputs.shape == (40, 784)
    raw = net.inputs * 0.3081 + 0.1307
    assert float(raw.min()) >= -1e-6 and float(raw.max()) <= 1 + 1e-6


def test_trained_epochs_need_a_data_dir(bench, tmp_path):
    with pytest.raises(SystemExit, match="go together"):
        bench.main(["--trained-epochs", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="go together"):
        bench.main(["--data-dir", str(tmp_path), "--out", str(tmp_path)])
