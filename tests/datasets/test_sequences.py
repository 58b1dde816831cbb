"""Sequence records, training windows with washout, normalisation, and reading .csv / .npz files."""

import numpy as np
import pytest
import torch
from lben_ode.datasets import (
    DatasetError,
    SequenceDataModule,
    SequenceFileDataModule,
    SequenceNormalization,
    SequenceRecord,
    read_sequence_file,
)

from lben_ode.errors import ConfigurationError


def record(length, seed, m=2, p=1, dt=0.1, name="r"):
    rng = np.random.default_rng(seed)
    u = rng.normal(3.0, 2.0, (length, m))
    y = rng.normal(-1.0, 0.5, (length, p))
    return SequenceRecord.from_arrays(u, y, dt=dt, name=name)


def test_windows_cover_the_records_with_stride_and_washout():
    train = [record(100, 0), record(60, 1)]
    dm = SequenceDataModule(train=train, test=[record(50, 2)], val=[record(40, 3)], window=20, stride=10, washout=4)
    dm.setup()
    windows = dm.dataset("train")
    assert len(windows) == 9 + 5  # starts 0, 10, …, 80 and 0, …, 40
    u, y, t, scored = windows.__getitems__([0, 9, 13])
    assert u.shape == (3, 20, 2) and y.shape == (3, 20, 1) and t.shape == (20,)
    torch.testing.assert_close(t.double(), 0.1 * torch.arange(20, dtype=torch.float64))
    assert scored.tolist() == [False] * 4 + [True] * 16
    # Window 13 is samples 40..59 of the second record, in model units.
    n = dm.normalization
    torch.testing.assert_close(n.inputs_to_raw(u[2].double()), train[1].u[40:60], rtol=1e-6, atol=1e-5)
    # Evaluation: whole records, one per batch, the same washout.
    u, y, t, scored = next(iter(dm.test_dataloader()))
    assert u.shape == (1, 50, 2) and int((~scored).sum()) == 4 and t[0] == 0


def test_normalization_is_learned_on_the_training_split_and_round_trips():
    train = [record(200, 0), record(100, 1)]
    dm = SequenceDataModule(train=train, test=[record(50, 2)], val=[record(40, 3)], window=20)
    n = dm.normalization
    u = np.concatenate([r.u.numpy() for r in train])
    y = np.concatenate([r.y.numpy() for r in train])
    np.testing.assert_allclose(n.u_mean, u.mean(0), rtol=1e-12)
    np.testing.assert_allclose(n.u_std, u.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(n.y_std, y.std(0, ddof=1), rtol=1e-12)
    x = torch.randn(4, 7, 2, dtype=torch.float64)
    torch.testing.assert_close(n.inputs_to_raw(n.inputs_to_model(x)), x)
    assert SequenceNormalization.from_dict(n.as_dict()) == n
    dm.setup()
    scaled = torch.cat([w for w in dm.dataset("train").u])
    assert float(scaled.double().std(0).sub(1).abs().max()) < 0.1  # windows overlap, so not exactly 1


def test_gain_in_raw_units_bounds_a_linear_map_tightly():
    """A linear map from the input channel of least spread to the output of most spread reaches the
    bound γ·max(s_y)/min(s_u) exactly."""
    n = SequenceNormalization(u_mean=(1.0, 2.0), u_std=(0.5, 4.0), y_mean=(0.0, 3.0), y_std=(2.0, 0.1))
    gamma = 1.3
    # Model: ỹ₀ = γ ũ₀ (gain γ in model units); in raw units Δy₀ = γ·s_y0/s_u0 · Δu₀.
    du = torch.tensor([[0.7, 0.0]], dtype=torch.float64)
    dy_model = gamma * (du / torch.tensor(n.u_std, dtype=torch.float64))[:, :1]
    dy_raw = dy_model * n.y_std[0]
    assert float(dy_raw.norm() / du.norm()) == pytest.approx(n.gain_in_raw_units(gamma), rel=1e-12)
    assert n.gain_in_raw_units(gamma) == pytest.approx(gamma * 2.0 / 0.5)


def test_validation_split_from_record_tails():
    dm = SequenceDataModule(train=[record(100, 0), record(100, 1)], test=[record(50, 2)], window=20, washout=5)
    records = dm.records
    assert [r.length for r in records["train"]] == [80, 80] and [r.length for r in records["val"]] == [20, 20]
    torch.testing.assert_close(records["val"][0].u, record(100, 0).u[80:])


def test_bad_settings_and_records():
    with pytest.raises(ConfigurationError, match="washout"):
        SequenceDataModule(window=10, washout=10)
    with pytest.raises(DatasetError, match="strictly increasing"):
        SequenceRecord.from_arrays(np.zeros(3), np.zeros(3), t=[0.0, 0.2, 0.1])
    with pytest.raises(DatasetError, match="NaN"):
        SequenceRecord.from_arrays([0.0, np.nan], [0.0, 1.0], dt=1.0)
    with pytest.raises(DatasetError, match="rows"):
        SequenceRecord.from_arrays(np.zeros(4), np.zeros(3), dt=1.0)
    const = SequenceRecord.from_arrays(np.ones(50), np.arange(50.0), dt=1.0)
    with pytest.raises(DatasetError, match="constant"):
        _ = SequenceDataModule(train=[const], test=[const], window=10, washout=2).normalization
    uneven = [record(50, 0, dt=0.1), record(50, 1, dt=0.2)]
    with pytest.raises(DatasetError, match="sampling interval"):
        SequenceDataModule(train=uneven, test=[record(30, 2)], val=[record(30, 3)], window=10, washout=2).setup()
    with pytest.raises(DatasetError, match="fewer than the window"):
        short = SequenceDataModule(
            train=[record(8, 0)], test=[record(30, 2)], val=[record(30, 3)], window=10, washout=2
        )
        short.setup()


def write_csv(path, rows, header="t,force,pos,run"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_with_several_records(tmp_path):
    rows = [(0.1 * k, np.sin(k), np.cos(k), "a" if k < 30 else "b") for k in range(50)]
    path = write_csv(tmp_path / "data.csv", rows)
    records = read_sequence_file(path, ["force"], ["pos"], record_column="run")
    assert [r.length for r in records] == [30, 20] and records[1].name == "data.csv:b"
    np.testing.assert_allclose(records[1].u[:, 0].numpy(), np.sin(np.arange(30, 50)))
    np.testing.assert_allclose(records[0].t.numpy(), 0.1 * np.arange(30))
    dm = SequenceFileDataModule([str(path)], [str(path)], input_columns=["force"], output_columns=["pos"],
                                record_column="run", window=10, washout=2)
    assert dm.output_names == ["pos"] and len(dm.records["val"]) == 2


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    u, y = rng.normal(size=(3, 40, 2)), rng.normal(size=(3, 40, 1))
    np.savez(tmp_path / "many.npz", u=u, y=y, dt=0.05)
    records = read_sequence_file(tmp_path / "many.npz")
    assert len(records) == 3 and records[2].u.shape == (40, 2)
    np.testing.assert_allclose(records[2].y.numpy(), y[2])
    np.testing.assert_allclose(records[0].t.numpy(), 0.05 * np.arange(40))
    np.savez(tmp_path / "named.npz", t=np.arange(40.0), a=u[0, :, 0], b=y[0, :, 0])
    (one,) = read_sequence_file(tmp_path / "named.npz", ["a"], ["b"])
    np.testing.assert_allclose(one.u[:, 0].numpy(), u[0, :, 0])


def test_bad_files_and_columns_get_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_sequence_file(tmp_path / "absent.csv", ["u"], ["y"])
    rows = [(0.1 * k, k, k, "a") for k in range(5)]
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DatasetError, match=r"no column .speed..*t, force, pos, run"):
        read_sequence_file(path, ["speed"], ["pos"])
    bad = write_csv(tmp_path / "bad.csv", [*rows, (0.6, "oops", 1, "a")])
    with pytest.raises(DatasetError, match=r"line 7, column 'force': 'oops' is not a number"):
        read_sequence_file(bad, ["force"], ["pos"])
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("t,force,pos\n0,1,2\n0.1,1\n")
    with pytest.raises(DatasetError, match="line 3: 2 fields"):
        read_sequence_file(ragged, ["force"], ["pos"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="cannot read"):
        read_sequence_file(tmp_path / "junk.npz")
    np.savez(tmp_path / "nokeys.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="no array 'u', 'y'"):
        read_sequence_file(tmp_path / "nokeys.npz")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DatasetError, match="unknown file type"):
        read_sequence_file(tmp_path / "data.txt", ["a"], ["b"])
    with pytest.raises(ConfigurationError, match="input_columns"):
        read_sequence_file(path)
