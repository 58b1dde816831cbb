"""Input/output sequences for continuous-time models: records, training windows, washout, normalisation.

A *record* is one experiment: samples of an input signal ``u(t)`` and of the measured output ``y(t)``
on a time grid. Training cuts the training records into windows of ``window`` samples; each window
is simulated from the zero state, so its first ``washout`` samples (where the unknown initial state
still matters) are not scored. Validation and test simulate whole records, one per batch, and score
every sample after the first ``washout``.

Inputs and outputs are normalised per channel with the mean and standard deviation of the training
split (:class:`SequenceNormalization`); the model sees and predicts normalised signals, and the
metrics convert back to raw units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lben_ode.errors import ConfigurationError
from lben_ode.validation import check_count

from .base import pass_batch
from .errors import DatasetError

#: Relative tolerance when checking that sampling intervals agree (windows of every record share one grid).
GRID_RTOL = 1e-6


@dataclass(frozen=True)
class SequenceRecord:
    """One experiment: samples of input and output on a strictly increasing time grid.

    Attributes:
        t: ``(T,)`` sample times (any unit; the model's time constant is one such unit).
        u: ``(T, m)`` input samples, raw units.
        y: ``(T, p)`` output samples, raw units.
        name: a label used in plots and messages.
    """

    t: torch.Tensor
    u: torch.Tensor
    y: torch.Tensor
    name: str = "record"

    def __post_init__(self) -> None:
        t, u, y = self.t, self.u, self.y
        for label, value in (("t", t), ("u", u), ("y", y)):
            if not isinstance(value, torch.Tensor):
                raise DatasetError(f"record {self.name!r}: {label} must be a tensor, got {type(value).__name__}")
            if not value.is_floating_point():
                raise DatasetError(f"record {self.name!r}: {label} must hold floats, got {value.dtype}")
            if not bool(torch.isfinite(value).all()):
                raise DatasetError(f"record {self.name!r}: {label} contains NaN or infinity")
        if t.dim() != 1 or u.dim() != 2 or y.dim() != 2:
            raise DatasetError(
                f"record {self.name!r}: expected t (T,), u (T, m), y (T, p), got t {tuple(t.shape)}, "
                f"u {tuple(u.shape)}, y {tuple(y.shape)}"
            )
        if not (t.shape[0] == u.shape[0] == y.shape[0]):
            raise DatasetError(
                f"record {self.name!r}: t, u and y must have one row per sample, got {t.shape[0]}, "
                f"{u.shape[0]} and {y.shape[0]} rows"
            )
        if t.shape[0] < 2:
            raise DatasetError(f"record {self.name!r} has {t.shape[0]} samples; at least 2 are needed")
        if not bool((t[1:] > t[:-1]).all()):
            raise DatasetError(f"record {self.name!r}: time must be strictly increasing")

    @property
    def length(self) -> int:
        """Number of samples T."""
        return self.t.shape[0]

    @classmethod
    def from_arrays(
        cls, u: Any, y: Any, t: Any | None = None, dt: float | None = None, name: str = "record"
    ) -> SequenceRecord:
        """A record from array-likes: ``u`` ``(T,)`` or ``(T, m)``, ``y`` ``(T,)`` or ``(T, p)``, and either
        the times ``t`` ``(T,)`` or a sampling interval ``dt`` (then ``t = dt · (0, 1, …)``). Stored in float64."""

        def as_matrix(label: str, value: Any) -> torch.Tensor:
            try:
                tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"record {name!r}: {label} is not numeric: {exc}") from exc
            return tensor[:, None] if tensor.dim() == 1 else tensor

        u_t, y_t = as_matrix("u", u), as_matrix("y", y)
        if t is None:
            if dt is None or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
                raise DatasetError(
                    f"record {name!r}: give the sample times t or a sampling interval dt > 0, got dt={dt!r}"
                )
            times = dt * torch.arange(u_t.shape[0], dtype=torch.float64)
        else:
            times = as_matrix("t", t)
            if times.dim() != 2 or times.shape[1] != 1:
                raise DatasetError(f"record {name!r}: t must be one-dimensional, got shape {tuple(times.shape)}")
            times = times[:, 0]
        return cls(times, u_t, y_t, name)


@dataclass(frozen=True)
class SequenceNormalization:
    """Per-channel affine normalisation of inputs and outputs: ``ũ = (u − μ_u)/s_u``, ``ỹ = (y − μ_y)/s_y``.

    **Gain in raw units.** If the model's map ``ũ ↦ ỹ`` has incremental ℓ2 gain γ
    (``‖Δỹ‖ ≤ γ‖Δũ‖``, norms over channels and time), then with ``Δy = diag(s_y) Δỹ`` and
    ``Δũ = diag(s_u)⁻¹ Δu``::

        ‖Δy‖ ≤ max(s_y) ‖Δỹ‖ ≤ max(s_y) γ ‖Δũ‖ ≤ γ · max(s_y) / min(s_u) · ‖Δu‖

    (the means cancel in every difference). No smaller constant of this form holds for every model:
    a model may route the input channel of smallest spread to the output channel of largest spread.

    Attributes:
        u_mean, u_std: per input channel, raw units (``u_std > 0``).
        y_mean, y_std: per output channel, raw units (``y_std > 0``).
    """

    u_mean: tuple[float, ...]
    u_std: tuple[float, ...]
    y_mean: tuple[float, ...]
    y_std: tuple[float, ...]

    def __post_init__(self) -> None:
        for signal in ("u", "y"):
            mean, std = getattr(self, f"{signal}_mean"), getattr(self, f"{signal}_std")
            if len(mean) != len(std) or not mean:
                raise ConfigurationError(
                    f"SequenceNormalization needs one {signal}_mean per {signal}_std, got {len(mean)} and {len(std)}"
                )
            if not all(math.isfinite(s) and s > 0 for s in std) or not all(math.isfinite(m) for m in mean):
                raise ConfigurationError(
                    f"SequenceNormalization {signal}_std must be finite and positive and {signal}_mean finite, "
                    f"got mean {mean}, std {std}"
                )

    @classmethod
    def identity(cls, input_size: int, output_size: int) -> SequenceNormalization:
        """No normalisation (mean 0, std 1) for ``input_size`` inputs and ``output_size`` outputs."""
        return cls((0.0,) * input_size, (1.0,) * input_size, (0.0,) * output_size, (1.0,) * output_size)

    @classmethod
    def fit(cls, records: Sequence[SequenceRecord]) -> SequenceNormalization:
        """Mean and standard deviation (``ddof=1``, float64) of every sample of ``records``, per channel."""
        u = torch.cat([r.u.double() for r in records])
        y = torch.cat([r.y.double() for r in records])
        stats = {}
        for signal, values in (("u", u), ("y", y)):
            std = values.std(dim=0)
            constant = [k for k, s in enumerate(std.tolist()) if not s > 0]
            if constant:
                raise DatasetError(
                    f"{'input' if signal == 'u' else 'output'} channel(s) {constant} are constant over the training "
                    "records: they cannot be normalised (drop them or pass normalize=False)"
                )
            stats[f"{signal}_mean"] = tuple(values.mean(dim=0).tolist())
            stats[f"{signal}_std"] = tuple(std.tolist())
        return cls(**stats)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> SequenceNormalization:
        """Inverse of :meth:`as_dict` (as stored in checkpoints)."""
        try:
            return cls(**{k: tuple(float(x) for x in v) for k, v in value.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad sequence normalization {dict(value)!r}: {exc}") from exc

    def as_dict(self) -> dict[str, list[float]]:
        """Plain data (lists of floats), loadable with ``torch.load(weights_only=True)``."""
        return {k: list(v) for k, v in asdict(self).items()}

    @property
    def input_size(self) -> int:
        """Number of input channels m."""
        return len(self.u_mean)

    @property
    def output_size(self) -> int:
        """Number of output channels p."""
        return len(self.y_mean)

    def _affine(self, x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], to_model: bool) -> torch.Tensor:
        if x.shape[-1] != len(mean):
            raise ConfigurationError(f"expected {len(mean)} channels on the last axis, got shape {tuple(x.shape)}")
        mu = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device)
        return (x - mu) / s if to_model else x * s + mu

    def inputs_to_model(self, u: torch.Tensor) -> torch.Tensor:
        """Raw inputs ``(…, m)`` to model units."""
        return self._affine(u, self.u_mean, self.u_std, True)

    def inputs_to_raw(self, u: torch.Tensor) -> torch.Tensor:
        """Model-unit inputs ``(…, m)`` to raw units."""
        return self._affine(u, self.u_mean, self.u_std, False)

    def outputs_to_model(self, y: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(…, p)`` to model units."""
        return self._affine(y, self.y_mean, self.y_std, True)

    def outputs_to_raw(self, y: torch.Tensor) -> torch.Tensor:
        """Model-unit outputs ``(…, p)`` to raw units."""
        return self._affine(y, self.y_mean, self.y_std, False)

    def gain_in_raw_units(self, gamma: float) -> float:
        """Incremental ℓ2 gain bound in raw units for a model with gain ``gamma`` in model units:
        ``γ · max(s_y) / min(s_u)`` (see the class docstring)."""
        return gamma * max(self.y_std) / min(self.u_std)


class SequenceWindows(Dataset):
    """Training windows: ``window`` consecutive samples of a record, starting every ``stride`` samples.

    Item ``k`` is ``(u, y, t, scored)``: ``u`` ``(window, m)`` and ``y`` ``(window, p)`` in model units
    (float32), ``t`` ``(window,)`` the window's times shifted to start at 0 (float64, so that a grid of
    fixed steps through the sample times stays exact), and ``scored`` ``(window,)`` bool, False
    on the first ``washout`` samples. Every record must share one sampling interval so that all windows
    share one time grid (a batch is simulated on one grid).
    """

    def __init__(self, records: Sequence[SequenceRecord], window: int, stride: int, washout: int) -> None:
        if not records:
            raise DatasetError("no training records")
        starts: list[tuple[int, int]] = []
        for index, record in enumerate(records):
            if record.length < window:
                raise DatasetError(
                    f"record {record.name!r} has {record.length} samples, fewer than the window of {window}; "
                    "shorten the window"
                )
            starts.extend((index, s) for s in range(0, record.length - window + 1, stride))
        self.u = torch.stack([records[i].u[s : s + window] for i, s in starts]).float()
        self.y = torch.stack([records[i].y[s : s + window] for i, s in starts]).float()
        grids = torch.stack([records[i].t[s : s + window] - records[i].t[s] for i, s in starts])
        scale = grids[:, -1].abs().max().clamp_min(1e-300)
        if bool(((grids - grids[0]).abs() > GRID_RTOL * scale).any()):
            raise DatasetError(
                "training windows need one time grid: every training record must have the same (regular) "
                "sampling interval; resample the records first"
            )
        self.t = grids[0].double()  # float64: fixed-step grids through the samples stay exact
        self.scored = torch.arange(window) >= washout
        self.starts = starts

    def __len__(self) -> int:
        return self.u.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.u[index], self.y[index], self.t, self.scored

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.u[idx], self.y[idx], self.t, self.scored


class WholeRecords(Dataset):
    """Evaluation data: each item is one whole record ``(u, y, t, scored)`` with a batch axis of 1.

    ``u`` ``(1, T, m)``, ``y`` ``(1, T, p)`` in model units, ``t`` ``(T,)`` shifted to start at 0,
    ``scored`` ``(T,)`` False on the first ``washout`` samples.
    """

    def __init__(self, records: Sequence[SequenceRecord], washout: int) -> None:
        self.items = []
        for record in records:
            if record.length <= washout:
                raise DatasetError(
                    f"record {record.name!r} has {record.length} samples, not more than the washout of {washout}"
                )
            scored = torch.arange(record.length) >= washout
            self.items.append(
                (record.u[None].float(), record.y[None].float(), (record.t - record.t[0]).double(), scored)
            )
        self.names = [r.name for r in records]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.items[index]


def _unbatched(batch: list[Any]) -> Any:
    """``collate_fn`` for :class:`WholeRecords` with ``batch_size=1``: the item already has its batch axis."""
    return batch[0]


def check_window(window: Any, stride: Any, washout: Any) -> tuple[int, int, int]:
    """Validate window length, stride (None: half the window) and washout (``0 ≤ washout < window``)."""
    window = check_count("window", window, minimum=2)
    stride = max(1, window // 2) if stride is None else check_count("stride", stride, minimum=1)
    washout = check_count("washout", washout, minimum=0)
    if washout >= window:
        raise ConfigurationError(
            f"washout ({washout}) must be shorter than the window ({window}): nothing would be scored"
        )
    return window, stride, washout


def split_tail(records: Sequence[SequenceRecord], fraction: float, washout: int) -> tuple[list, list]:
    """Split off the last ``fraction`` of every record as validation records (training keeps the rest).

    A tail shorter than ``washout + 2`` samples is too short to score and stays in training.
    """
    train, val = [], []
    for r in records:
        cut = r.length - round(fraction * r.length)
        if r.length - cut < washout + 2 or cut < 2:
            train.append(r)
            continue
        train.append(SequenceRecord(r.t[:cut], r.u[:cut], r.y[:cut], r.name))
        val.append(SequenceRecord(r.t[cut:], r.u[cut:], r.y[cut:], f"{r.name} (tail)"))
    return train, val


class SequenceDataModule(LightningDataModule):
    """Input/output records as training windows (with washout) and whole evaluation records.

    Give the records directly (``SequenceDataModule(train=[...], test=[...])``, each a
    :class:`SequenceRecord`, e.g. from :meth:`SequenceRecord.from_arrays`), use
    :class:`~lben_ode.datasets.SequenceFileDataModule` for ``.npz``/``.csv`` files, or
    :class:`~lben_ode.datasets.SimulatedSystemDataModule` for the embedded systems. Subclasses
    override :meth:`load_records`.

    Batches are ``(u, y, t, scored)``: ``u`` ``(batch, time, m)``, ``y`` ``(batch, time, p)`` in model
    units, ``t`` ``(time,)`` starting at 0, ``scored`` ``(time,)`` bool. Training batches are windows
    (simulate from z0 = 0; the first ``washout`` samples are not scored); validation and test batches
    are whole records, one per batch.

    Args:
        train: training records.
        test: test records.
        val: validation records; None splits off the last ``val_fraction`` of every training record.
        window: samples per training window.
        stride: samples between window starts (None: ``window // 2``).
        washout: leading samples of each window and record that are not scored.
        batch_size: windows per training batch.
        val_fraction: fraction of each training record kept for validation when ``val`` is None.
        normalize: learn per-channel mean/std of u and y on the training split (else identity).

    Attributes:
        normalization: :class:`SequenceNormalization` (after :meth:`setup`, or on first access).
        input_size, output_size: channels m and p.
        input_names, output_names: channel labels.
    """

    def __init__(
        self,
        train: Sequence[SequenceRecord] | None = None,
        test: Sequence[SequenceRecord] | None = None,
        val: Sequence[SequenceRecord] | None = None,
        window: int = 128,
        stride: int | None = None,
        washout: int = 16,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.window, self.stride, self.washout = check_window(window, stride, washout)
        self.batch_size = check_count("batch_size", batch_size, minimum=1)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise ConfigurationError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
        if not isinstance(normalize, bool):
            raise ConfigurationError(f"normalize must be a bool, got {normalize!r}")
        self.val_fraction = float(val_fraction)
        self.normalize = normalize
        self._given = (train, val, test)
        self._records: dict[str, list[SequenceRecord]] | None = None
        self._normalization: SequenceNormalization | None = None
        self.datasets: dict[str, Dataset] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    # -- records ----------------------------------------------------------------------------------
    def load_records(self) -> dict[str, list[SequenceRecord]]:
        """Raw records of the splits ``"train"``, ``"test"`` and (optionally) ``"val"``."""
        train, val, test = self._given
        if not train or not test:
            raise ConfigurationError("SequenceDataModule needs training and test records (train=[...], test=[...])")
        out = {"train": list(train), "test": list(test)}
        if val:
            out["val"] = list(val)
        return out

    @property
    def records(self) -> dict[str, list[SequenceRecord]]:
        """Raw records per split (train, val, test) after the validation split, checked for channel counts."""
        if self._records is None:
            loaded = self.load_records()
            if not loaded.get("val"):
                if self.val_fraction == 0:
                    raise ConfigurationError("no validation records: give val records or a val_fraction > 0")
                train, val = split_tail(loaded["train"], self.val_fraction, self.washout)
                if not val:
                    raise DatasetError(
                        f"the training records are too short to split off {self.val_fraction:g} for validation "
                        f"(after a washout of {self.washout}); give val records"
                    )
                loaded = {"train": train, "val": val, "test": loaded["test"]}
            first = loaded["train"][0]
            for split, records in loaded.items():
                for r in records:
                    if r.u.shape[1] != first.u.shape[1] or r.y.shape[1] != first.y.shape[1]:
                        raise DatasetError(
                            f"{split} record {r.name!r} has {r.u.shape[1]} inputs and {r.y.shape[1]} outputs, "
                            f"but {first.name!r} has {first.u.shape[1]} and {first.y.shape[1]}"
                        )
            self._records = loaded
            if not self.input_names:
                self.input_names = [f"u{k}" for k in range(first.u.shape[1])]
            if not self.output_names:
                self.output_names = [f"y{k}" for k in range(first.y.shape[1])]
        return self._records

    @property
    def input_size(self) -> int:
        """Number of input channels m."""
        return self.records["train"][0].u.shape[1]

    @property
    def output_size(self) -> int:
        """Number of output channels p."""
        return self.records["train"][0].y.shape[1]

    @property
    def normalization(self) -> SequenceNormalization:
        """The normalisation learned on the training split (identity when ``normalize`` is False)."""
        if self._normalization is None:
            train = self.records["train"]
            self._normalization = (
                SequenceNormalization.fit(train)
                if self.normalize
                else SequenceNormalization.identity(self.input_size, self.output_size)
            )
        return self._normalization

    def to_model_units(self, record: SequenceRecord) -> SequenceRecord:
        """A record with u and y normalised."""
        n = self.normalization
        return SequenceRecord(
            record.t, n.inputs_to_model(record.u.double()), n.outputs_to_model(record.y.double()), record.name
        )

    # -- Lightning --------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the windows and evaluation records once (every stage shares them)."""
        if self.datasets:
            return
        scaled = {split: [self.to_model_units(r) for r in records] for split, records in self.records.items()}
        self.datasets = {
            "train": SequenceWindows(scaled["train"], self.window, self.stride, self.washout),
            "val": WholeRecords(scaled["val"], self.washout),
            "test": WholeRecords(scaled["test"], self.washout),
        }

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``"train"`` (windows), ``"val"`` or ``"test"`` (whole records)."""
        if split not in ("train", "val", "test"):
            raise ConfigurationError(f"unknown split {split!r}; valid: train, val, test")
        self.setup()
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of training windows."""
        return DataLoader(self.dataset("train"), batch_size=self.batch_size, shuffle=True, collate_fn=pass_batch)

    def val_dataloader(self) -> DataLoader:
        """The validation records, one per batch."""
        return DataLoader(self.dataset("val"), batch_size=1, shuffle=False, collate_fn=_unbatched)

    def test_dataloader(self) -> DataLoader:
        """The test records, one per batch."""
        return DataLoader(self.dataset("test"), batch_size=1, shuffle=False, collate_fn=_unbatched)

    def predict_dataloader(self) -> DataLoader:
        """The test records, for ``predict``."""
        return self.test_dataloader()
