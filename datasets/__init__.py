"""Data modules for lben-ode: each exposes ``normalization``, ``num_classes``, ``input_shape``, ``flatten``.

- :class:`DigitsDataModule`: scikit-learn's 8×8 digits, embedded (no download); the default.
- :class:`MNISTDataModule`: MNIST from its IDX files, read whole into memory.
- :class:`CIFAR10DataModule`: CIFAR-10 through torchvision (``pip install 'lben-ode[vision]'``).

Input/output sequences for continuous-time models (batches ``(u, y, t, scored)``; attributes
``normalization``, ``input_size``, ``output_size``, ``washout``):

- :class:`SequenceDataModule`: records given as arrays (:class:`SequenceRecord`).
- :class:`SequenceFileDataModule`: records from ``.csv`` / ``.npz`` files.
- :class:`SimulatedSystemDataModule`: the embedded simulated systems (:mod:`.systems`), no download.
"""

from .base import ImageDataModule, TensorBatches
from .cifar10 import CIFAR10DataModule
from .digits import DigitsDataModule
from .errors import DatasetError
from .idx import read_idx, write_idx
from .mnist import MNISTDataModule, download_mnist, load_mnist_arrays
from .sequence_files import SequenceFileDataModule, read_sequence_file
from .sequences import SequenceDataModule, SequenceNormalization, SequenceRecord
from .simulated import SimulatedSystemDataModule, simulated_arrays
from .systems import SYSTEMS, DuffingOscillator, NonlinearRLC, simulate

__all__ = [
    "SYSTEMS",
    "CIFAR10DataModule",
    "DatasetError",
    "DigitsDataModule",
    "DuffingOscillator",
    "ImageDataModule",
    "MNISTDataModule",
    "NonlinearRLC",
    "SequenceDataModule",
    "SequenceFileDataModule",
    "SequenceNormalization",
    "SequenceRecord",
    "SimulatedSystemDataModule",
    "TensorBatches",
    "download_mnist",
    "load_mnist_arrays",
    "read_idx",
    "read_sequence_file",
    "simulate",
    "simulated_arrays",
    "write_idx",
]
