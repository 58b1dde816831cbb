"""The package installs under lben_ode only, with its Lightning and data subpackages."""

import importlib
import importlib.metadata
import os
from pathlib import Path

import pytest

import lben_ode

SUBPACKAGES = ("lben_ode.lightning_modules", "lben_ode.datasets", "lben_ode.solvers", "lben_ode.robustness")


def test_distribution_claims_no_generic_top_level_names() -> None:
    # `datasets` would shadow Hugging Face's package: every installed module must sit under lben_ode.
    files = importlib.metadata.files("lben-ode") or []
    top_level = {f.parts[0] for f in files if f.suffix == ".py" or f.name.endswith(".pth")}
    assert top_level, "no files recorded for the lben-ode distribution"
    # (an editable install adds its own __editable__ path hooks, which import nothing else)
    assert all(t == "lben_ode" or t.startswith("__editable__") for t in top_level), top_level


@pytest.mark.skipif(os.environ.get("LBEN_ODE_EXPECT_INSTALLED") != "1", reason="only for the installed-wheel run")
def test_tests_run_against_the_installed_wheel() -> None:
    package_dir = Path(lben_ode.__file__).resolve().parent
    assert "site-packages" in package_dir.parts, f"lben_ode imported from {package_dir}, not an installed wheel"
    for name in SUBPACKAGES:
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().is_relative_to(package_dir), (name, module.__file__)
    assert (package_dir / "datasets" / "__init__.py").exists()
