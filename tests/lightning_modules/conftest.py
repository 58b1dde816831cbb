"""Shared fixtures of the Lightning tests: one torch thread, and running the ``lben-ode`` command."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run the tiny test models on one intra-op thread.

    Their matrices are far too small to gain from threads, and on a busy machine a second
    spinning thread can slow every operation by orders of magnitude.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class CommandRunner:
    """Runs ``lben-ode`` in a subprocess and reads what it wrote."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    @staticmethod
    def command() -> list[str]:
        """The installed console script, or the module when only the source tree is importable."""
        script = Path(sys.executable).parent / "lben-ode"
        return [str(script)] if script.exists() else [sys.executable, "-m", "lben_ode.lightning_modules.cli"]

    def run(self, args: list[str], timeout: float = 300) -> str:
        """Run ``lben-ode ARGS``; fail with its output on a non-zero exit. Returns stdout."""
        env = dict(os.environ, OMP_NUM_THREADS="1")
        result = subprocess.run(
            self.command() + args, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"lben-ode {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def printed_path(self, output: str, label: str) -> Path:
        """A path the command printed after ``label:`` (relative to the working directory)."""
        match = re.search(rf"^{re.escape(label)}:\s+(\S+)", output, flags=re.MULTILINE)
        assert match, f"no '{label}:' line in the output:\n{output}"
        path = Path(match.group(1))
        return path if path.is_absolute() else self.cwd / path

    @staticmethod
    def last_row_with(metrics_csv: Path, key: str) -> dict[str, float]:
        """The last row of a CSVLogger metrics file that has ``key``, as floats (empty cells dropped)."""
        with metrics_csv.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get(key)]
        assert rows, f"{metrics_csv} has no row with {key}"
        return {k: float(v) for k, v in rows[-1].items() if v != ""}

    @staticmethod
    def saved_config(metrics_csv: Path) -> dict:
        """The config.yaml the command saved next to its metrics."""
        return yaml.safe_load((metrics_csv.parent / "config.yaml").read_text())


@pytest.fixture
def lben_ode_cli(tmp_path) -> CommandRunner:
    """A runner of the ``lben-ode`` command working in a temporary directory."""
    return CommandRunner(tmp_path)
