"""TensorBatches and ImageDataModule: whole-batch reads, and training batches that carry their dataset indices."""

import pytest
import torch
from lben_ode.datasets import DigitsDataModule, TensorBatches
from lben_ode.datasets.base import pass_batch
from torch.utils.data import DataLoader

from lben_ode.errors import ConfigurationError


def small_batches(with_indices: bool = False) -> TensorBatches:
    inputs = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    return TensorBatches(inputs, torch.arange(10) % 4, with_indices=with_indices)


def test_batches_are_pairs_by_default_and_triples_with_indices():
    plain = small_batches()
    x, y = plain.__getitems__([7, 2, 5])
    assert torch.equal(x, plain.inputs[[7, 2, 5]]) and torch.equal(y, plain.labels[[7, 2, 5]])
    indexed = plain.indexed()
    assert indexed.inputs is plain.inputs and indexed.labels is plain.labels  # no copy
    x, y, idx = indexed.__getitems__([7, 2, 5])
    assert idx.dtype == torch.int64 and idx.tolist() == [7, 2, 5]
    assert torch.equal(x, plain.inputs[idx]) and torch.equal(y, plain.labels[idx])
    x, y, i = indexed[4]
    assert torch.equal(x, plain.inputs[4]) and int(i) == 4
    with pytest.raises(ConfigurationError, match="with_indices must be a bool"):
        TensorBatches(plain.inputs, plain.labels, with_indices=1)


def test_a_shuffled_loader_with_indices_names_every_sample_once():
    loader = DataLoader(small_batches(with_indices=True), batch_size=4, shuffle=True, collate_fn=pass_batch)
    seen = []
    for x, _, idx in loader:
        assert torch.equal(x, loader.dataset.inputs[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(10))


def test_the_data_module_gives_training_indices_only_when_asked():
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    assert dm.train_indices is False
    assert len(next(iter(dm.train_dataloader()))) == 2  # x, y = batch keeps working
    dm.train_indices = True
    x, y, idx = next(iter(dm.train_dataloader()))
    train = dm.dataset("train")
    assert torch.equal(x, train.inputs[idx]) and torch.equal(y, train.labels[idx])
    assert int(idx.max()) < len(train) and idx.unique().numel() == idx.numel()
    # Evaluation batches stay (x, y), and the split's own dataset is unchanged.
    assert len(next(iter(dm.val_dataloader()))) == 2 and train.with_indices is False
    dm.train_indices = "yes"
    with pytest.raises(ConfigurationError, match="train_indices must be a bool"):
        dm.train_dataloader()
