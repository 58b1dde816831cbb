"""Input/output records from the files a user has: ``.npz`` arrays or ``.csv`` columns.

**CSV**: a header row of column names, then one row per sample. ``time_column`` holds the sample
times (or give ``dt`` and no time column), ``input_columns`` and ``output_columns`` name the signals.
With ``record_column`` one file holds several records: a new record starts wherever that column's
value changes.

**NPZ**: either arrays ``u`` and ``y`` (``(T,)``, ``(T, m)``, or ``(R, T, m)`` for R records of equal
length) with ``t`` (``(T,)`` or ``(R, T)``) or a scalar ``dt``; or, when ``input_columns`` and
``output_columns`` are given, one 1-D (or ``(R, T)``) array per named channel, like CSV columns.
"""

from __future__ import annotations

import csv
import itertools
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lben_ode.errors import ConfigurationError

from .errors import DatasetError
from .sequences import SequenceDataModule, SequenceRecord

#: File suffixes :func:`read_sequence_file` understands.
SUFFIXES = (".csv", ".npz")


def _check_names(what: str, names: Any) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigurationError(f"{what} must be a non-empty list of column names, got {names!r}")
    return list(names)


def _missing(path: Path, kind: str, wanted: Sequence[str], available: Sequence[str]) -> DatasetError:
    absent = [w for w in wanted if w not in available]
    return DatasetError(
        f"{path}: no {kind} {', '.join(map(repr, absent))}; the file has: {', '.join(available) or '(none)'}"
    )


def _read_csv(
    path: Path,
    inputs: list[str],
    outputs: list[str],
    time_column: str | None,
    record_column: str | None,
    dt: float | None,
) -> list[SequenceRecord]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the file as text CSV: {exc}") from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise DatasetError(f"{path}: expected a header row and at least one row of samples")
    header = [h.strip() for h in rows[0]]
    wanted = inputs + outputs + ([time_column] if time_column else []) + ([record_column] if record_column else [])
    if any(w not in header for w in wanted):
        raise _missing(path, "column", wanted, header)
    columns = {name: [] for name in wanted}
    where = {name: header.index(name) for name in wanted}
    records_of: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}")
        for name in wanted:
            cell = row[where[name]].strip()
            if name == record_column:
                records_of.append(cell)
                continue
            try:
                columns[name].append(float(cell))
            except ValueError:
                raise DatasetError(f"{path}, line {line}, column {name!r}: {cell!r} is not a number") from None
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in columns.items() if name != record_column}
    # Records: runs of equal record_column values.
    bounds = [0] + [k for k in range(1, len(records_of)) if records_of[k] != records_of[k - 1]] + [len(rows) - 1]
    if not record_column:
        bounds = [0, len(rows) - 1]
    out = []
    for a, b in itertools.pairwise(bounds):
        label = f"{path.name}:{records_of[a]}" if record_column else path.name
        out.append(
            SequenceRecord.from_arrays(
                u=np.stack([arrays[c][a:b] for c in inputs], axis=1),
                y=np.stack([arrays[c][a:b] for c in outputs], axis=1),
                t=arrays[time_column][a:b] if time_column else None,
                dt=dt,
                name=label,
            )
        )
    return out


def _read_npz(
    path: Path, inputs: list[str] | None, outputs: list[str] | None, time_column: str | None, dt: float | None
) -> list[SequenceRecord]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read the file as .npz arrays: {exc}") from exc
    if inputs is None and outputs is None:
        names = ["u", "y"]
        if any(n not in arrays for n in names):
            raise _missing(path, "array", names, sorted(arrays))
        u, y = arrays["u"], arrays["y"]
        if u.ndim == 1:
            u = u[:, None]
        if y.ndim == 1:
            y = y[:, None]
    else:
        if inputs is None or outputs is None:
            raise ConfigurationError("give both input_columns and output_columns (or neither, for arrays u and y)")
        if any(n not in arrays for n in inputs + outputs):
            raise _missing(path, "array", inputs + outputs, sorted(arrays))
        shapes = {arrays[n].shape for n in inputs + outputs}
        if len(shapes) != 1 or arrays[inputs[0]].ndim not in (1, 2):
            raise DatasetError(f"{path}: the named channels must be arrays of one shape, (T,) or (R, T); got {shapes}")
        u = np.stack([arrays[n] for n in inputs], axis=-1)
        y = np.stack([arrays[n] for n in outputs], axis=-1)
    time_key = time_column if time_column in arrays else None
    t = arrays[time_key] if time_key else None
    if t is None and dt is None and "dt" in arrays:
        if arrays["dt"].size != 1:
            raise DatasetError(f"{path}: 'dt' must be a scalar, got shape {arrays['dt'].shape}")
        dt = float(arrays["dt"])
    for label, value in (("u", u), ("y", y)):
        if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
            raise DatasetError(f"{path}: {label} must hold real numbers, got dtype {value.dtype}")
    if u.ndim == 2 and y.ndim == 2:
        return [SequenceRecord.from_arrays(u, y, t, dt, name=path.name)]
    if u.ndim != 3 or y.ndim != 3 or u.shape[:2] != y.shape[:2]:
        raise DatasetError(
            f"{path}: u and y must be (T, m) and (T, p), or (R, T, m) and (R, T, p); got {u.shape} and {y.shape}"
        )
    if t is not None and t.ndim == 1:
        t = np.broadcast_to(t, u.shape[:2])
    return [
        SequenceRecord.from_arrays(u[r], y[r], None if t is None else t[r], dt, name=f"{path.name}[{r}]")
        for r in range(u.shape[0])
    ]


def read_sequence_file(
    path: str | Path,
    input_columns: Sequence[str] | None = None,
    output_columns: Sequence[str] | None = None,
    time_column: str | None = "t",
    record_column: str | None = None,
    dt: float | None = None,
) -> list[SequenceRecord]:
    """Read the records of one ``.csv`` or ``.npz`` file (see the module docstring for the layouts).

    Args:
        path: the file.
        input_columns, output_columns: names of the input and output channels (required for CSV).
        time_column: name of the time column/array; None (or absent from an npz) uses ``dt``.
        record_column: CSV only: column whose changes separate records.
        dt: sampling interval when there is no time column.

    Raises:
        DatasetError: the file is missing, unreadable, lacks a named column, or holds non-numbers,
            NaN/inf, non-increasing times or mismatched lengths.
    """
    path = Path(path)
    inputs, outputs = _check_names("input_columns", input_columns), _check_names("output_columns", output_columns)
    if dt is not None and (
        isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (math.isfinite(dt) and dt > 0)
    ):
        raise ConfigurationError(f"dt must be a finite number > 0, got {dt!r}")
    if not path.is_file():
        raise DatasetError(f"{path} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if inputs is None or outputs is None:
            raise ConfigurationError(f"{path}: a CSV file needs input_columns and output_columns")
        if time_column is None and dt is None:
            raise ConfigurationError(f"{path}: give a time_column or a sampling interval dt")
        return _read_csv(path, inputs, outputs, time_column, record_column, dt)
    if suffix == ".npz":
        if record_column is not None:
            raise ConfigurationError(
                "record_column applies to CSV files only (an npz holds records as (R, T, …) arrays)"
            )
        return _read_npz(path, inputs, outputs, time_column, dt)
    raise DatasetError(f"{path}: unknown file type {path.suffix!r}; valid: {', '.join(SUFFIXES)}")


class SequenceFileDataModule(SequenceDataModule):
    """Records from ``.csv`` or ``.npz`` files: training windows with washout, whole records for evaluation.

    Args:
        train_files: files of the training records (each may hold several records).
        test_files: files of the test records.
        val_files: files of the validation records; None splits off the last ``val_fraction`` of every
            training record.
        input_columns, output_columns, time_column, record_column, dt: how to read the files
            (:func:`read_sequence_file`).
        window, stride, washout, batch_size, val_fraction, normalize: as :class:`SequenceDataModule`.
    """

    def __init__(
        self,
        train_files: list[str],
        test_files: list[str],
        val_files: list[str] | None = None,
        input_columns: list[str] | None = None,
        output_columns: list[str] | None = None,
        time_column: str | None = "t",
        record_column: str | None = None,
        dt: float | None = None,
        window: int = 128,
        stride: int | None = None,
        washout: int = 16,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            window=window,
            stride=stride,
            washout=washout,
            batch_size=batch_size,
            val_fraction=val_fraction,
            normalize=normalize,
        )
        self.save_hyperparameters()
        self.files = {"train": train_files, "val": val_files, "test": test_files}
        for split, files in self.files.items():
            if files is not None and (isinstance(files, (str, bytes)) or not isinstance(files, Sequence)):
                raise ConfigurationError(f"{split}_files must be a list of paths, got {files!r}")
        self.read_options = {
            "input_columns": input_columns,
            "output_columns": output_columns,
            "time_column": time_column,
            "record_column": record_column,
            "dt": dt,
        }
        if input_columns is not None and output_columns is not None:
            self.input_names, self.output_names = list(input_columns), list(output_columns)

    def load_records(self) -> dict[str, list[SequenceRecord]]:
        """Read every file of every split."""
        out = {}
        for split, files in self.files.items():
            if files:
                out[split] = [r for f in files for r in read_sequence_file(f, **self.read_options)]
        if not out.get("train") or not out.get("test"):
            raise ConfigurationError("SequenceFileDataModule needs train_files and test_files")
        return out
