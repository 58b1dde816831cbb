"""benchmarks/solvers.py: the quick run's size and output, and a chart whose legend covers no bar."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
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
