"""How ``lben-ode`` recognises a sequence (system-identification) run, and that run's defaults.

A run trains :class:`~lben_ode.lightning_modules.SequenceRegressor` instead of the classifier when
its data module is a :class:`~lben_ode.datasets.SequenceDataModule` (or a subclass), as named by
``--data`` / ``--data.class_path`` on the command line or ``data:`` in a ``--config`` file; every
other run is unchanged. ``lben-ode fit --config configs/duffing.yaml`` is such a run.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

#: Defaults of a sequence run (a ``--config`` file normally spells them out).
SEQUENCE_DEFAULTS: dict[str, Any] = {
    "model.model": {
        "class_path": "lben_ode.ContractingLBEN",
        "init_args": {"input_size": 1, "output_size": 1, "width": 32, "gamma": None},
    },
    "checkpoint.monitor": "val/nrmse",
    "checkpoint.mode": "min",
    "checkpoint.save_last": True,
}

_CONFIG_FLAGS = ("--config", "-c")
_DATA_FLAGS = ("--data", "--data.class_path")


def _flag_values(argv: Sequence[str], flags: tuple[str, ...]) -> list[str]:
    values = []
    for k, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and k + 1 < len(argv):
                values.append(argv[k + 1])
            elif arg.startswith(flag + "="):
                values.append(arg.split("=", 1)[1])
    return values


def _data_class_path(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        return value["class_path"]
    return None


def _is_sequence_data(class_path: str) -> bool:
    from lben_ode.datasets import SequenceDataModule

    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError, ValueError):
        return False  # Lightning reports the bad class path itself
    return isinstance(cls, type) and issubclass(cls, SequenceDataModule)


def is_sequence_run(argv: Sequence[str]) -> bool:
    """Whether the command line (or a ``--config`` file on it) names a sequence data module.

    The last data class named wins, as in Lightning's own parsing (config files first, in order,
    then the command line's ``--data``).
    """
    found: str | None = None
    for config in _flag_values(argv, _CONFIG_FLAGS):
        path = Path(config)
        if not path.is_file():
            continue  # Lightning reports a missing config file itself
        try:
            content = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict) and _data_class_path(content.get("data")):
            found = _data_class_path(content.get("data"))
    for value in _flag_values(argv, _DATA_FLAGS):
        if value.lstrip().startswith("{"):
            try:
                value = _data_class_path(yaml.safe_load(value)) or ""
            except yaml.YAMLError:
                continue
        found = value or found
    return found is not None and _is_sequence_data(found)
