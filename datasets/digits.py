"""The 8×8 handwritten digits that ship with scikit-learn: a data set that needs no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from lben_ode.errors import ConfigurationError
from lben_ode.normalization import Normalization
from lben_ode.validation import check_count

from .base import ImageDataModule, random_split_indices

#: Grey levels of the scikit-learn digits run from 0 to 16.
DIGITS_MAX_LEVEL = 16.0


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(N, 1, 8, 8)`` float images in [0, 1] and ``(N,)`` labels."""
    bunch = load_digits()
    images = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / DIGITS_MAX_LEVEL
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 handwritten digits (8×8 grey levels, 10 classes), no download needed.

    Pixels are scaled to [0, 1] (raw units) and normalised with the mean and standard deviation of
    the training split. The split is random but fixed by ``seed``: ``test_size`` and ``val_size``
    samples are held out and the rest (1,077 by default) is the training set. The default sizes
    (360) divide by 2, 4 and 8, so distributed evaluation needs no padding.

    Args:
        batch_size: samples per batch.
        flatten: inputs ``(batch, 64)`` for dense models, else ``(batch, 1, 8, 8)``.
        val_size: samples held out for validation.
        test_size: samples held out for testing.
        seed: seed of the split.
    """

    num_classes = 10
    image_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        flatten: bool = True,
        val_size: int = 360,
        test_size: int = 360,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, flatten)
        self.save_hyperparameters()
        self.val_size = check_count("val_size", val_size, minimum=1)
        self.test_size = check_count("test_size", test_size, minimum=1)
        self.seed = seed
        self._images, self._labels = digit_images()
        total = self._labels.shape[0]
        if val_size + test_size >= total:
            raise ConfigurationError(
                f"val_size + test_size = {val_size + test_size} leaves no training samples of the {total} digits"
            )
        self.train_index, self.val_index, self.test_index = random_split_indices(
            total, (total - val_size - test_size, val_size, test_size), seed
        )
        train = self._images[self.train_index]
        self.normalization = Normalization(
            mean=(float(train.double().mean()),), std=(float(train.double().std()),), raw_min=0.0, raw_max=1.0
        )

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {
            split: (self._images[index], self._labels[index])
            for split, index in (("train", self.train_index), ("val", self.val_index), ("test", self.test_index))
        }
