"""benchmarks/overhead.py: one row per shape, and the interleaved timing calls each function as asked."""

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "overhead.py"


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("single_thread")
def test_rows_cover_every_shape_with_positive_times(overhead, capsys):
    rows = overhead.main(["--widths", "8", "12", "--batches", "4", "--iterations", "30", "--repeats", "2"])
    assert [(r["width"], r["batch"]) for r in rows] == [(8, 4), (12, 4)]
    for row in rows:
        assert row["pr_us"] > 0 and row["matmul_us"] > 0
        assert math.isclose(row["ratio"], row["pr_us"] / row["matmul_us"])
    assert "ratio" in capsys.readouterr().out


def test_interleaved_medians_time_each_function_its_own_number_of_calls(overhead):
    import torch

    calls = [0, 0]

    def first():
        calls[0] += 1

    def second():
        calls[1] += 1

    medians = overhead.interleaved_medians([first, second], [3, 5], 4, torch.device("cpu"))
    assert len(medians) == 2 and all(m >= 0 for m in medians)
    assert calls == [1 + 3 * 4, 1 + 5 * 4]  # one warm-up call each, then inner × repeats
