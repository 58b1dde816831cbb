"""DigitsDataModule: the embedded default data, its fixed split and its normalisation."""

import numpy as np
import pytest
import torch
from lben_ode.datasets import DigitsDataModule
from sklearn.datasets import load_digits

from lben_ode.errors import ConfigurationError


def locate(rows: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """Index of each row among the original images (they are unique after rounding)."""
    return np.abs(rows[:, None, :] - originals[None, :, :]).max(axis=2).argmin(axis=1)


def test_split_sizes_cover_all_digits_once():
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = [len(dm.dataset(s)) for s in ("train", "val", "test")]
    assert sizes == [1077, 360, 360]
    index = torch.cat([dm.train_index, dm.val_index, dm.test_index])
    assert sorted(index.tolist()) == list(range(1797))


def test_normalization_is_from_the_training_split_in_float64():
    dm = DigitsDataModule(seed=4)
    pixels = load_digits().data / 16.0
    train = pixels[dm.train_index.numpy()]
    assert dm.normalization.mean[0] == pytest.approx(train.mean(), rel=1e-12)
    assert dm.normalization.std[0] == pytest.approx(train.std(ddof=1), rel=1e-12)
    assert (dm.normalization.raw_min, dm.normalization.raw_max) == (0.0, 1.0)
    dm.setup()
    inputs = dm.dataset("train").inputs.double().numpy()
    expected = (train - train.mean()) / train.std(ddof=1)
    np.testing.assert_allclose(inputs, expected, atol=1e-5)
    labels = load_digits().target[dm.train_index.numpy()]
    np.testing.assert_array_equal(dm.dataset("train").labels.numpy(), labels)


def test_test_inputs_use_the_training_statistics():
    dm = DigitsDataModule()
    dm.setup()
    pixels = load_digits().data / 16.0
    (mean,), (std,) = dm.normalization.mean, dm.normalization.std
    raw = dm.dataset("test").inputs.double().numpy() * std + mean
    found = locate(raw, pixels)
    np.testing.assert_allclose(raw, pixels[found], atol=1e-5)
    assert sorted(found.tolist()) == sorted(dm.test_index.tolist())


def test_split_is_fixed_by_seed():
    assert torch.equal(DigitsDataModule(seed=1).val_index, DigitsDataModule(seed=1).val_index)
    assert not torch.equal(DigitsDataModule(seed=1).val_index, DigitsDataModule(seed=2).val_index)


def test_flatten_option_and_loader_shapes():
    dm = DigitsDataModule(batch_size=32, flatten=False)
    dm.setup()
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,) and y.dtype == torch.long
    flat = DigitsDataModule(batch_size=32)
    flat.setup()
    assert flat.input_shape == (64,)
    assert torch.equal(flat.dataset("val").inputs, dm.dataset("val").inputs.flatten(1))
    # Loaders visit every validation sample exactly once, in order.
    xs = torch.cat([b[0] for b in flat.val_dataloader()])
    assert torch.equal(xs, flat.dataset("val").inputs)


def test_bad_options():
    with pytest.raises(ConfigurationError, match="no training samples"):
        DigitsDataModule(val_size=900, test_size=900)
    with pytest.raises(ConfigurationError, match="batch_size"):
        DigitsDataModule(batch_size=0)
    with pytest.raises(ConfigurationError, match="val_size"):
        DigitsDataModule(val_size=0)
    with pytest.raises(ConfigurationError, match="flatten"):
        DigitsDataModule(flatten="yes")
    with pytest.raises(ConfigurationError, match="split"):
        DigitsDataModule().dataset("holdout")
