"""Image-classification data modules that hold every split as one tensor in memory."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lben_ode.errors import ConfigurationError
from lben_ode.normalization import Normalization
from lben_ode.validation import check_count

from .errors import DatasetError

SPLITS = ("train", "val", "test")


class TensorBatches(Dataset):
    """Inputs and labels held as two tensors, read a whole batch at a time.

    ``__getitems__`` returns the batch ``(inputs[idx], labels[idx])`` with one indexing operation
    instead of stacking one sample at a time; pair it with :func:`pass_batch` as ``collate_fn``
    (the data modules' loaders do). With ``with_indices`` the batch is ``(inputs[idx],
    labels[idx], idx)``: the dataset index of each sample, ``(batch,)`` int64, so that per-sample
    state (warm starts of the equilibrium solves) can be kept across epochs.

    Args:
        inputs: ``(N, *input_shape)`` float tensor, in model units.
        labels: ``(N,)`` integer class labels.
        with_indices: also give each sample's index in ``[0, N)``.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, with_indices: bool = False) -> None:
        if inputs.shape[0] != labels.shape[0]:
            raise DatasetError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
        if not isinstance(with_indices, bool):
            raise ConfigurationError(f"with_indices must be a bool, got {with_indices!r}")
        self.inputs = inputs
        self.labels = labels
        self.with_indices = with_indices

    def indexed(self) -> TensorBatches:
        """The same samples (sharing the tensors), with batches ``(x, y, idx)``."""
        return TensorBatches(self.inputs, self.labels, with_indices=True)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.with_indices:
            return self.inputs[index], self.labels[index], torch.as_tensor(index, dtype=torch.long)
        return self.inputs[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.with_indices:
            return self.inputs[idx], self.labels[idx], idx
        return self.inputs[idx], self.labels[idx]


def pass_batch(batch: Any) -> Any:
    """``collate_fn`` for :class:`TensorBatches`: the batch arrives already stacked."""
    return batch


def random_split_indices(n: int, sizes: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    """Disjoint index sets of the given sizes drawn from ``range(n)``, the same for every ``seed``."""
    if sum(sizes) > n:
        raise ConfigurationError(f"split sizes {sizes} add up to more than the {n} samples available")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for size in sizes:
        out.append(perm[start : start + size].sort().values)
        start += size
    return out


def split_off_validation(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    val_size: int,
    seed: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train/val/test splits from a training and a test set: ``val_size`` training samples
    (chosen by ``seed``) become the validation set; with ``val_size == 0`` validation uses the test set.
    """
    if val_size == 0:
        return {"train": train, "val": test, "test": test}
    n = train[1].shape[0]
    if val_size >= n:
        raise ConfigurationError(f"val_size={val_size} leaves no training samples of the {n} available")
    train_index, val_index = random_split_indices(n, (n - val_size, val_size), seed)
    return {
        "train": (train[0][train_index], train[1][train_index]),
        "val": (train[0][val_index], train[1][val_index]),
        "test": test,
    }


class ImageDataModule(LightningDataModule):
    """Base of the image-classification data modules: splits as whole tensors, normalised once.

    Subclasses load raw images ``(N, C, H, W)`` with values in ``[normalization.raw_min,
    normalization.raw_max]`` in :meth:`load_splits`; this class normalises them to model units
    (``normalization.to_model``), flattens them when ``flatten`` is set, and serves batches.

    Args:
        batch_size: samples per training batch (evaluation uses the same size).
        flatten: give inputs as ``(batch, C·H·W)`` (dense models) instead of ``(batch, C, H, W)``
            (convolutional models).

    Attributes:
        normalization: the input normalisation; certified bounds in raw (pixel) units use it.
        num_classes: number of classes.
        image_shape: ``(C, H, W)`` of one raw image.
        train_indices: when True, training batches are ``(x, y, idx)`` with each sample's index in
            the training split, ``(batch,)`` int64 (evaluation batches stay ``(x, y)``). False by
            default, so code that unpacks ``x, y = batch`` keeps working; ``LBENClassifier`` with
            ``warm_start=True`` sets it before the loaders are built.
    """

    train_indices: bool = False

    normalization: Normalization
    num_classes: int
    image_shape: tuple[int, int, int]

    def __init__(self, batch_size: int, flatten: bool) -> None:
        super().__init__()
        check_count("batch_size", batch_size, minimum=1)
        if not isinstance(flatten, bool):
            raise ConfigurationError(f"flatten must be a bool, got {flatten!r}")
        self.batch_size = batch_size
        self.flatten = flatten
        self.datasets: dict[str, TensorBatches] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input: ``(C·H·W,)`` when flattened, else ``(C, H, W)``."""
        return (math.prod(self.image_shape),) if self.flatten else tuple(self.image_shape)

    @abstractmethod
    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Images ``(N, C, H, W)`` and labels ``(N,)`` for each of ``SPLITS``.

        Images are stored values: raw units times :attr:`pixel_scale` (e.g. uint8 0-255), so that
        subclasses can split compact arrays before they are converted to float here.
        """

    #: Stored image values per raw unit (255 for uint8 images whose raw range is [0, 1]).
    pixel_scale: float = 1.0

    def setup(self, stage: str | None = None) -> None:
        """Load every split once (all stages share them); called on every process."""
        if self.datasets:
            return
        converted: dict[int, TensorBatches] = {}
        for split, (images, labels) in self.load_splits().items():
            # Splits that share their tensors (validation on the test set) share one dataset.
            if id(images) not in converted:
                x = self.normalization.to_model(images.float() / self.pixel_scale)
                if self.flatten:
                    x = x.flatten(1)
                converted[id(images)] = TensorBatches(x.contiguous(), labels.long())
            self.datasets[split] = converted[id(images)]

    def dataset(self, split: str) -> TensorBatches:
        """The dataset of one split (``"train"``, ``"val"`` or ``"test"``), after :meth:`setup`."""
        if split not in SPLITS:
            raise ConfigurationError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if not self.datasets:
            self.setup()
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split), batch_size=self.batch_size, shuffle=shuffle, collate_fn=pass_batch
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(x, y)``, or ``(x, y, idx)`` when :attr:`train_indices` is set."""
        if not isinstance(self.train_indices, bool):
            raise ConfigurationError(f"train_indices must be a bool, got {self.train_indices!r}")
        dataset = self.dataset("train")
        if self.train_indices:
            dataset = dataset.indexed()
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, collate_fn=pass_batch)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test batches, for ``predict``."""
        return self._loader("test", shuffle=False)
