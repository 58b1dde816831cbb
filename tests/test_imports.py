"""Importing lben-ode loads no heavy dependency it does not need (Lightning, matplotlib, scikit-learn)."""

import os
import subprocess
import sys

import pytest

HEAVY = ("lightning", "pytorch_lightning", "matplotlib", "sklearn")


def modules_loaded_by(code: str) -> set[str]:
    """The top-level modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # -P: the working directory (a checkout, whose lben_ode/ lacks the mapped subpackages) must not
    # shadow the installed package.
    result = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import lben_ode",
        # The models, solvers and robustness tools, used from Python.
        "import torch, lben_ode, lben_ode.robustness\n"
        "lben_ode.LBEN(4, 2, width=6)(torch.randn(3, 4))\n"
        "assert 'fb' in lben_ode.solvers.available()",
    ],
)
def test_library_imports_no_lightning_matplotlib_or_sklearn(code):
    loaded = modules_loaded_by(code)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_command_entry_point_imports_neither_torch_nor_lightning():
    # `lben-ode --help` is answered from here, before any subcommand needs them.
    loaded = modules_loaded_by("import lben_ode.lightning_modules.command")
    assert not loaded & {"torch", *HEAVY}, loaded & {"torch", *HEAVY}
