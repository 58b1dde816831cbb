"""CIFAR-10 through torchvision (the optional ``vision`` extra), held in memory."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from lben_ode.normalization import Normalization
from lben_ode.validation import check_count

from .base import ImageDataModule, split_off_validation
from .errors import DatasetError

#: Per-channel mean and standard deviation of the CIFAR-10 training pixels in [0, 1].
CIFAR10_NORMALIZATION = Normalization(
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), raw_min=0.0, raw_max=1.0
)


def import_torchvision() -> ModuleType:
    """``torchvision.datasets``, or a :class:`DatasetError` saying how to install it."""
    try:
        return importlib.import_module("torchvision.datasets")
    except ImportError as exc:
        raise DatasetError(
            "CIFAR10DataModule needs torchvision, which is not installed; install it with "
            "pip install 'lben-ode[vision]'"
        ) from exc


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (32×32 colour images, 10 classes), read through torchvision into memory.

    Needs the optional ``vision`` extra (``pip install 'lben-ode[vision]'``). Pixels are scaled to
    [0, 1] (raw units) and normalised per channel; the smallest std (0.2435) converts bounds to
    pixel units.

    Args:
        data_dir: torchvision's root folder for CIFAR-10.
        batch_size: samples per batch.
        flatten: inputs ``(batch, 3072)`` for dense models, else ``(batch, 3, 32, 32)``.
        val_size: training images held out (seeded) for validation; 0 validates on the test set.
        download: let torchvision download the data (on the first process only).
        seed: seed of the validation split.
    """

    num_classes = 10
    image_shape = (3, 32, 32)
    normalization = CIFAR10_NORMALIZATION
    pixel_scale = 255.0

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        flatten: bool = False,
        val_size: int = 5000,
        download: bool = False,
        seed: int = 0,
    ) -> None:
        self._tv_datasets = import_torchvision()
        super().__init__(batch_size, flatten)
        self.save_hyperparameters()
        self.hparams["data_dir"] = str(data_dir)
        self.data_dir = Path(data_dir)
        self.val_size = check_count("val_size", val_size, minimum=0)
        self.download = download
        self.seed = seed

    def _read(self, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            data = self._tv_datasets.CIFAR10(str(self.data_dir), train=train, download=download)
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise DatasetError(
                f"CIFAR-10 not found or corrupt in {str(self.data_dir)!r}: {exc} "
                "(pass download=True, --data.download true, to fetch it)"
            ) from exc
        images = torch.from_numpy(np.asarray(data.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(data.targets, dtype=torch.long)

    def prepare_data(self) -> None:
        """Download through torchvision when ``download`` is set (Lightning runs this on one process)."""
        if self.download:
            self._read(True, True)
            self._read(False, True)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        train_x, train_y = self._read(True, False)
        test = self._read(False, False)
        return split_off_validation((train_x, train_y), test, self.val_size, self.seed)
