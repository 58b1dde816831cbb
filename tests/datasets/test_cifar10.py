"""CIFAR10DataModule: a clear error without torchvision, and its loading path with a stand-in."""

import sys
import types

import numpy as np
import pytest
import torch
from lben_ode.datasets import CIFAR10DataModule, DatasetError

MEAN = np.array([0.4914, 0.4822, 0.4465])
STD = np.array([0.2470, 0.2435, 0.2616])


def test_missing_torchvision_names_the_extra(monkeypatch):
    # A None entry in sys.modules makes the import fail, installed or not.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DatasetError, match=r"lben-ode\[vision\]"):
        CIFAR10DataModule("data/cifar10")


@pytest.fixture
def fake_torchvision(monkeypatch):
    """A minimal torchvision.datasets.CIFAR10 with the attributes the data module reads."""
    rng = np.random.default_rng(0)
    store = {
        True: (rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 30).tolist()),
        False: (rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 12).tolist()),
    }
    calls = []

    class CIFAR10:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            if root == "missing":
                raise RuntimeError("Dataset not found or corrupted.")
            self.data, self.targets = store[train]

    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = CIFAR10
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    return store, calls


def test_loads_normalises_per_channel_and_splits(fake_torchvision):
    store, calls = fake_torchvision
    dm = CIFAR10DataModule("root", val_size=6, batch_size=4)
    dm.setup()
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [24, 6, 12]
    assert dm.input_shape == (3, 32, 32) and dm.normalization.raw_scale == pytest.approx(0.2435)
    images, labels = store[False]
    expected = (images.astype(np.float64) / 255.0 - MEAN) / STD  # (N, H, W, C)
    np.testing.assert_allclose(dm.dataset("test").inputs.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    np.testing.assert_array_equal(dm.dataset("test").labels.numpy(), labels)
    assert all(download is False for _, _, download in calls)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32


def test_download_goes_through_torchvision(fake_torchvision):
    _, calls = fake_torchvision
    CIFAR10DataModule("root", download=True, flatten=True).prepare_data()
    assert sorted(calls) == [("root", False, True), ("root", True, True)]


def test_missing_data_is_a_dataset_error(fake_torchvision):
    with pytest.raises(DatasetError, match="download=True"):
        CIFAR10DataModule("missing").setup()
