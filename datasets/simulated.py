"""Records of the embedded systems (:mod:`.systems`): simulated once with fixed seeds, then cached."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lben_ode.errors import ConfigurationError, unknown_name
from lben_ode.validation import check_count

from .errors import DatasetError
from .sequences import SequenceDataModule, SequenceRecord
from .systems import SYSTEMS, TEST_RECORD_NAMES, simulate, test_inputs, training_inputs

#: Where simulated records are cached unless ``cache_dir`` says otherwise (``$LBEN_ODE_CACHE`` overrides).
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lben-ode" / "systems"

# Records simulated in this process, by cache key: a second data module needs no simulation.
_MEMORY: dict[str, dict[str, np.ndarray]] = {}


def _cache_dir(cache_dir: str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ["LBEN_ODE_CACHE"]) if "LBEN_ODE_CACHE" in os.environ else DEFAULT_CACHE


def simulated_arrays(
    system: str,
    train_records: int,
    record_length: int,
    test_length: int,
    seed: int,
    substeps: int,
    cache_dir: str | None = None,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """Noise-free training and test inputs and outputs of an embedded system, simulated or from the cache.

    Returns arrays ``u_train`` ``(R, T)``, ``y_train`` ``(R, T)``, ``u_test`` ``(2, T_test)``,
    ``y_test`` and ``dt``. The cache file name holds a hash of every setting and of the system's
    parameters, so a change of either simulates again.
    """
    if system not in SYSTEMS:
        raise unknown_name("system", system, list(SYSTEMS))
    model = SYSTEMS[system]()
    substeps = model.substeps if substeps is None else substeps
    settings = {
        "system": asdict(model),
        "train_records": train_records,
        "record_length": record_length,
        "test_length": test_length,
        "seed": seed,
        "substeps": substeps,
        "version": 1,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if key in _MEMORY:
        return _MEMORY[key]
    path = _cache_dir(cache_dir) / f"{system}-{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            _MEMORY[key] = arrays
            return arrays
        except (OSError, ValueError):  # a damaged cache file is simulated again
            path.unlink(missing_ok=True)
    u_train = training_inputs(model, train_records, record_length, seed)
    u_test = test_inputs(model, test_length, seed)
    if test_length == record_length:  # one simulation of every record at once
        y, _ = simulate(model, np.concatenate([u_train, u_test])[..., None], substeps)
        y_train, y_test = y[:train_records], y[train_records:]
    else:
        y_train, _ = simulate(model, u_train[..., None], substeps)
        y_test, _ = simulate(model, u_test[..., None], substeps)
    arrays = {
        "u_train": u_train,
        "y_train": y_train[..., 0],
        "u_test": u_test,
        "y_test": y_test[..., 0],
        "dt": np.array(model.dt),
    }
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise DatasetError(f"the simulation of {system!r} produced NaN or infinity; lower the input level")
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temporary, **arrays)
        temporary.replace(path)  # atomic: parallel processes never read half a file
    _MEMORY[key] = arrays
    return arrays


class SimulatedSystemDataModule(SequenceDataModule):
    """Training, validation and test records of an embedded system (no download).

    ``train_records`` records of ``record_length`` samples, alternately random-phase multisines and
    band-limited noise (fixed by ``seed``); the last ``val_fraction`` of each is the validation
    split. Two test records of ``test_length`` samples have inputs unlike the training ones: a
    swept sine and band-limited noise whose amplitude ramps up beyond the training level. The
    systems, their parameters and excitations are documented in :mod:`lben_ode.datasets.systems`.

    Args:
        system: ``"duffing"`` (forced Duffing oscillator, Silverbox-like) or ``"rlc"`` (nonlinear RLC
            circuit of Forgione & Piga).
        train_records: number of training records.
        record_length: samples per training record.
        test_length: samples per test record.
        noise_std: measurement noise added to the training and validation outputs, as a fraction
            of the output's standard deviation (Gaussian, seeded); test outputs stay noise-free, so
            test metrics measure the model rather than the noise.
        seed: seed of the inputs and of the noise.
        substeps: Runge-Kutta (rk4, float64) steps per sampling interval of the simulation; None: the
            system's own (chosen for accuracy, see :mod:`.systems`).
        cache_dir: where simulated records are cached (default ``$LBEN_ODE_CACHE`` or
            ``~/.cache/lben-ode/systems``).
        cache: read and write the cache file (the records of a process are always kept in memory).
        window, stride, washout, batch_size, val_fraction, normalize: as :class:`SequenceDataModule`.
    """

    def __init__(
        self,
        system: str = "duffing",
        train_records: int = 6,
        record_length: int = 1000,
        test_length: int = 1000,
        noise_std: float = 0.0,
        seed: int = 0,
        substeps: int | None = None,
        cache_dir: str | None = None,
        cache: bool = True,
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
        if system not in SYSTEMS:
            raise unknown_name("system", system, list(SYSTEMS))
        self.system = SYSTEMS[system]()
        self.train_records = check_count("train_records", train_records, minimum=1)
        self.record_length = check_count("record_length", record_length, minimum=2)
        self.test_length = check_count("test_length", test_length, minimum=2)
        self.substeps = self.system.substeps if substeps is None else check_count("substeps", substeps, minimum=1)
        if (
            isinstance(noise_std, bool)
            or not isinstance(noise_std, (int, float))
            or not (math.isfinite(noise_std) and noise_std >= 0)
        ):
            raise ConfigurationError(f"noise_std must be a finite number ≥ 0, got {noise_std!r}")
        self.noise_std = float(noise_std)
        self.seed = seed
        self.cache_dir, self.cache = cache_dir, cache
        self.input_names = list(self.system.input_names)
        self.output_names = list(self.system.output_names)

    def load_records(self) -> dict[str, list[SequenceRecord]]:
        """Simulate (or read from the cache) and add the measurement noise to the training records."""
        a = simulated_arrays(
            self.hparams.system,
            self.train_records,
            self.record_length,
            self.test_length,
            self.seed,
            self.substeps,
            self.cache_dir,
            self.cache,
        )
        dt = float(a["dt"])
        y_train = a["y_train"]
        if self.noise_std > 0:
            rng = np.random.default_rng(self.seed + 7)
            y_train = y_train + self.noise_std * y_train.std() * rng.standard_normal(y_train.shape)
        train = [
            SequenceRecord.from_arrays(a["u_train"][r], y_train[r], dt=dt, name=f"train {r}")
            for r in range(a["u_train"].shape[0])
        ]
        test = [
            SequenceRecord.from_arrays(a["u_test"][r], a["y_test"][r], dt=dt, name=name)
            for r, name in enumerate(TEST_RECORD_NAMES)
        ]
        return {"train": train, "test": test}
