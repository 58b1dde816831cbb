"""MNISTDataModule on small synthetic IDX files: values, splits, errors and downloading."""

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lben_ode.datasets import DatasetError, MNISTDataModule, download_mnist, write_idx
from lben_ode.datasets import mnist as mnist_module

N_TRAIN, N_TEST = 40, 20


def synthetic_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


@pytest.fixture
def mnist_dir(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = synthetic_arrays()
    folder = tmp_path / "mnist"
    folder.mkdir()
    for k, (name, array) in enumerate(arrays.items()):
        # Mix gzipped and plain files: both are accepted.
        write_idx(folder / (f"{name}.gz" if k % 2 == 0 else name), array)
    return folder, arrays


def expected_inputs(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float64) / 255.0 - 0.1307) / 0.3081


def test_splits_values_and_normalization(mnist_dir):
    folder, arrays = mnist_dir
    dm = MNISTDataModule(str(folder), batch_size=8, val_size=10, seed=3)
    dm.setup("fit")
    train, val, test = dm.dataset("train"), dm.dataset("val"), dm.dataset("test")
    assert (len(train), len(val), len(test)) == (30, 10, 20)
    assert dm.input_shape == (784,) and dm.num_classes == 10
    assert dm.normalization.mean == (0.1307,) and dm.normalization.std == (0.3081,)
    expected = expected_inputs(arrays["t10k-images-idx3-ubyte"]).reshape(N_TEST, -1)
    np.testing.assert_allclose(test.inputs.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # Train and validation partition the training file: find each row among the original images.
    originals = expected_inputs(arrays["train-images-idx3-ubyte"]).reshape(N_TRAIN, -1)
    rows = torch.cat([train.inputs, val.inputs]).double().numpy()
    match = np.abs(rows[:, None, :] - originals[None, :, :]).max(axis=2).argmin(axis=1)
    assert sorted(match.tolist()) == list(range(N_TRAIN))
    labels = torch.cat([train.labels, val.labels]).numpy()
    np.testing.assert_array_equal(labels, arrays["train-labels-idx1-ubyte"][match])


def test_split_is_fixed_by_seed(mnist_dir):
    folder, _ = mnist_dir

    def val_inputs(seed):
        dm = MNISTDataModule(str(folder), val_size=10, seed=seed)
        dm.setup()
        return dm.dataset("val").inputs

    assert torch.equal(val_inputs(1), val_inputs(1))
    assert not torch.equal(val_inputs(1), val_inputs(2))


def test_unflattened_inputs_and_validation_on_test_set(mnist_dir):
    folder, _ = mnist_dir
    dm = MNISTDataModule(str(folder), flatten=False, val_size=0, batch_size=16)
    dm.setup()
    assert dm.input_shape == (1, 28, 28)
    assert dm.dataset("val") is dm.dataset("test") and len(dm.dataset("train")) == N_TRAIN
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long


def test_batches_equal_per_sample_reads(mnist_dir):
    folder, _ = mnist_dir
    dm = MNISTDataModule(str(folder), val_size=0, batch_size=7)
    dm.setup()
    data = dm.dataset("test")
    x, y = next(iter(dm.test_dataloader()))
    assert torch.equal(x, torch.stack([data[i][0] for i in range(7)]))
    assert torch.equal(y, torch.stack([data[i][1] for i in range(7)]))


def test_missing_directory(tmp_path):
    dm = MNISTDataModule(str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match=r"does not exist.*download=True"):
        dm.setup()


def test_missing_file_is_named(mnist_dir):
    folder, _ = mnist_dir
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.*not found"):
        MNISTDataModule(str(folder)).setup()


def test_truncated_image_file(mnist_dir):
    folder, _ = mnist_dir
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match=r"train-images.*truncated"):
        MNISTDataModule(str(folder)).setup()


def test_inconsistent_files(mnist_dir):
    folder, arrays = mnist_dir
    write_idx(folder / "t10k-labels-idx1-ubyte", arrays["t10k-labels-idx1-ubyte"][:-1])
    with pytest.raises(DatasetError, match="test labels"):
        MNISTDataModule(str(folder)).setup()
    bad = arrays["t10k-labels-idx1-ubyte"].copy()
    bad[0] = 12
    write_idx(folder / "t10k-labels-idx1-ubyte", bad)
    with pytest.raises(DatasetError, match="0-9"):
        MNISTDataModule(str(folder)).setup()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((N_TEST, 27, 28), dtype=np.uint8))
    with pytest.raises(DatasetError, match="28, 28"):
        MNISTDataModule(str(folder)).setup()


def test_checkpoint_hyperparameters_are_plain(tmp_path):
    dm = MNISTDataModule(tmp_path)  # a Path, as Python users pass it
    assert dm.hparams["data_dir"] == str(tmp_path) and isinstance(dm.hparams["data_dir"], str)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server serving gzipped synthetic MNIST files, registered with their MD5s."""
    served = tmp_path / "served"
    served.mkdir()
    for name, array in synthetic_arrays(seed=5).items():
        write_idx(served / f"{name}.gz", array)
        content = gzip.decompress((served / f"{name}.gz").read_bytes())
        monkeypatch.setitem(mnist_module.MNIST_MD5, name, hashlib.md5(content).hexdigest())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_from_mirror(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", ("http://127.0.0.1:9/", mirror))
    target = tmp_path / "downloaded" / "mnist"
    dm = MNISTDataModule(str(target), download=True, val_size=0)
    dm.prepare_data()
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in mnist_module.MNIST_FILES.values())
    dm.setup()
    expected = synthetic_arrays(seed=5)["t10k-labels-idx1-ubyte"]
    np.testing.assert_array_equal(dm.dataset("test").labels.numpy(), expected)
    # Nothing left to fetch: a second prepare_data does not touch the network.
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", ())
    dm.prepare_data()


def test_download_rejects_wrong_content(tmp_path, mirror, monkeypatch):
    monkeypatch.setitem(mnist_module.MNIST_MD5, "train-images-idx3-ubyte", "0" * 32)
    with pytest.raises(DatasetError, match="MD5"):
        download_mnist(tmp_path / "m", mirrors=(mirror,))
    assert not (tmp_path / "m" / "train-images-idx3-ubyte.gz").exists()


def test_download_offline_is_a_clear_error(tmp_path):
    # Port 9 (discard) refuses connections: the same failure as a machine without network.
    with pytest.raises(DatasetError, match="offline") as info:
        download_mnist(tmp_path / "m", mirrors=("http://127.0.0.1:9/",))
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in str(info.value)
