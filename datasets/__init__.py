"""Data modules for lben-ode: each exposes ``normalization``, ``num_classes``, ``input_shape``, ``flatten``.

- :class:`DigitsDataModule`: scikit-learn's 8×8 digits, embedded (no download); the default.
- :class:`MNISTDataModule`: MNIST from its IDX files, read whole into memory.
- :class:`CIFAR10DataModule`: CIFAR-10 through torchvision (``pip install 'lben-ode[vision]'``).
"""

from .base import ImageDataModule, TensorBatches
from .cifar10 import CIFAR10DataModule
from .digits import DigitsDataModule
from .errors import DatasetError
from .idx import read_idx, write_idx
from .mnist import MNISTDataModule, download_mnist, load_mnist_arrays

__all__ = [
    "CIFAR10DataModule",
    "DatasetError",
    "DigitsDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "TensorBatches",
    "download_mnist",
    "load_mnist_arrays",
    "read_idx",
    "write_idx",
]
