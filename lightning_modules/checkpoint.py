"""Reading Lightning checkpoints with one clear line per problem instead of torch's tracebacks.

A file that is missing, empty, text, truncated, random bytes, a pickled Python object or a
checkpoint of another model is refused with a :class:`~lben_ode.errors.CheckpointError` that names
the file and says what is wrong. Only plain-data checkpoints are read (``weights_only=True``): the
files ``lben-ode fit`` writes are plain data, and arbitrary pickles can run code when loaded.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lben_ode.errors import CheckpointError

#: How much of a file is looked at to tell text from binary content.
_SNIFF_BYTES = 4096


def _describe_unreadable(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` could not read ``path``, judged from the file's first bytes."""
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip container
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc).lower():
            return (
                "it holds pickled Python objects, not only tensors and plain data; lben-ode reads plain-data "
                "checkpoints (as `lben-ode fit` writes them), since unpickling arbitrary objects can run code"
            )
        if not zipfile.is_zipfile(path):
            return "the file is truncated or damaged (its zip directory is missing)"
        return f"the file is damaged ({_first_line(exc)})"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            start = text.strip().splitlines()[0][:40] if text.strip() else ""
            return f"it is a text file, not a checkpoint (it starts with {start!r})"
    if head[:1] == b"\x80":  # a pickle: torch's legacy format or pickle.dump
        return f"it is a damaged or non-tensor pickle ({_first_line(exc)})"
    return "it is not a PyTorch checkpoint (unrecognised content)"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """The Lightning checkpoint at ``path`` as plain data (``weights_only=True``).

    Returns:
        the checkpoint dict; it has a ``state_dict`` mapping of tensors.

    Raises:
        CheckpointError: the file is missing, a directory, unreadable, or not a Lightning checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for files that are not checkpoints
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {_describe_unreadable(path, exc)}") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{str(path)!r} is not a Lightning checkpoint: it holds a {type(checkpoint).__name__}, not a dict"
        )
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, Mapping):
        keys = ", ".join(sorted(map(str, checkpoint))[:8]) or "none"
        raise CheckpointError(
            f"{str(path)!r} is not a Lightning checkpoint: it has no 'state_dict' (its keys: {keys})"
        )
    return dict(checkpoint)


def recorded_model(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model configuration (``class_path`` and ``init_args``) a checkpoint records, or None."""
    model = (checkpoint.get("hyper_parameters") or {}).get("model")
    return model if isinstance(model, Mapping) and "class_path" in model else None


def require_recorded_model(checkpoint: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`recorded_model`, or a :class:`CheckpointError` saying how such a checkpoint is loaded."""
    model = recorded_model(checkpoint)
    if model is None:
        raise CheckpointError(
            f"{str(path)!r} does not record its model's configuration (class_path and init_args); checkpoints "
            "written by `lben-ode fit` do. Load it in Python with the model given: "
            "LBENClassifier.load_from_checkpoint(path, model=LBEN(...))"
        )
    return dict(model)


def check_weights_fit(state_dict: Mapping[str, Any], module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint whose weights do not fit ``module`` (names and shapes), naming the differences.

    Raises:
        CheckpointError: some parameter is missing, unexpected, or shaped differently.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} is {tuple(state_dict[k].shape)} in the file but {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    problems.extend(reshaped[:3])
    raise CheckpointError(
        f"the weights in {str(path)!r} do not fit the configured {type(module).__name__}: {'; '.join(problems)}"
    )


def _some(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
