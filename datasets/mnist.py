"""MNIST from its original IDX files, read whole into memory with numpy."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lben_ode.normalization import Normalization
from lben_ode.validation import check_count

from .base import ImageDataModule, split_off_validation
from .errors import DatasetError
from .idx import read_idx

#: File name (without ``.gz``) of each part.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: MD5 of the *uncompressed* canonical files; mirrors recompress, so the .gz bytes may differ.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Where ``<name>.gz`` is downloaded from, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: The usual MNIST normalisation (mean and standard deviation of the training pixels in [0, 1]).
MNIST_NORMALIZATION = Normalization(mean=(0.1307,), std=(0.3081,), raw_min=0.0, raw_max=1.0)

DOWNLOAD_TIMEOUT_S = 60.0


def find_mnist_file(data_dir: Path, name: str) -> Path | None:
    """``data_dir/name`` or ``data_dir/name.gz`` (also under torchvision's ``MNIST/raw``), if present."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def missing_mnist_files(data_dir: str | Path) -> list[str]:
    """Names of the four MNIST files that ``data_dir`` lacks."""
    return [name for name in MNIST_FILES.values() if find_mnist_file(Path(data_dir), name) is None]


def download_mnist_file(name: str, data_dir: Path, mirrors: Sequence[str] | None = None) -> Path:
    """Download ``name.gz`` into ``data_dir``, checking the MD5 of its uncompressed content.

    ``mirrors`` are base URLs tried in order (default :data:`MNIST_MIRRORS`).

    Raises:
        DatasetError: when no mirror gives a file with the right content (e.g. the machine is
            offline); the message lists each mirror's failure.
    """
    failures = []
    for mirror in MNIST_MIRRORS if mirrors is None else mirrors:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
            content = gzip.decompress(payload)
        except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        digest = hashlib.md5(content).hexdigest()
        if digest != MNIST_MD5[name]:
            failures.append(f"{url}: content MD5 {digest}, expected {MNIST_MD5[name]}")
            continue
        target = data_dir / f"{name}.gz"
        # Write to a temporary name first so an interrupted download never leaves a partial file.
        with tempfile.NamedTemporaryFile(dir=data_dir, suffix=".part", delete=False) as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)
        return target
    raise DatasetError(
        f"could not download MNIST file {name}.gz (is this machine offline?). Tried:\n  "
        + "\n  ".join(failures)
        + f"\nPut the four MNIST IDX files ({', '.join(MNIST_FILES.values())}, gzipped or not) in "
        f"{str(data_dir)!r} instead."
    )


def download_mnist(data_dir: str | Path, mirrors: Sequence[str] | None = None) -> list[Path]:
    """Download the MNIST files that ``data_dir`` lacks (creating the folder); returns the new files."""
    folder = Path(data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the MNIST data directory {str(folder)!r}: {exc}") from exc
    return [download_mnist_file(name, folder, mirrors) for name in missing_mnist_files(folder)]


def load_mnist_arrays(data_dir: str | Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays (uint8 images ``(N, 28, 28)``, labels ``(N,)``), checked for consistency.

    Raises:
        DatasetError: for a missing directory or file, a corrupt or truncated file, or arrays that
            do not fit together.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DatasetError(
            f"MNIST data directory {str(folder)!r} does not exist; put the four IDX files there or "
            "pass download=True (--data.download true)"
        )
    arrays = {}
    for part, name in MNIST_FILES.items():
        path = find_mnist_file(folder, name)
        if path is None:
            raise DatasetError(
                f"MNIST file {name} (or {name}.gz) not found in {str(folder)!r}; pass download=True "
                "(--data.download true) to fetch it, or copy it there"
            )
        arrays[part] = read_idx(path)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DatasetError(
                f"MNIST {split} images must be uint8 shaped (N, 28, 28), got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8 or labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"MNIST {split} labels must be uint8 shaped ({images.shape[0]},) to match the images, "
                f"got {labels.dtype} {labels.shape}"
            )
        if labels.size and labels.max() > 9:
            raise DatasetError(f"MNIST {split} labels must be digits 0-9, found {int(labels.max())}")
    return arrays


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits (28×28, 10 classes) from the original IDX files.

    The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzipped or not) are read whole into
    memory with numpy. Pixels are scaled to [0, 1] (raw units) and normalised with mean 0.1307 and
    standard deviation 0.3081, so a bound γ in model units is γ / 0.3081 in pixel units.

    Args:
        data_dir: folder with the IDX files (or where to download them).
        batch_size: samples per batch.
        flatten: inputs ``(batch, 784)`` for dense models, else ``(batch, 1, 28, 28)``.
        val_size: training images held out (seeded) for validation; 0 validates on the test set,
            as the reference experiments did (they train on all 60,000 images).
        download: fetch missing files (on the first process only); needs a network connection.
        seed: seed of the validation split.
    """

    num_classes = 10
    image_shape = (1, 28, 28)
    normalization = MNIST_NORMALIZATION
    pixel_scale = 255.0

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        flatten: bool = True,
        val_size: int = 5000,
        download: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, flatten)
        self.save_hyperparameters()
        # Checkpoints must load with weights_only=True: keep the path a plain string.
        self.hparams["data_dir"] = str(data_dir)
        self.data_dir = Path(data_dir)
        self.val_size = check_count("val_size", val_size, minimum=0)
        self.download = download
        self.seed = seed

    def prepare_data(self) -> None:
        """Download missing files when ``download`` is set (Lightning runs this on one process)."""
        if self.download and missing_mnist_files(self.data_dir):
            download_mnist(self.data_dir)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        arrays = load_mnist_arrays(self.data_dir)

        def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.from_numpy(arrays[f"{name}_images"]).unsqueeze(1)
            return images, torch.from_numpy(arrays[f"{name}_labels"]).long()

        (train_x, train_y), test = split("train"), split("test")
        return split_off_validation((train_x, train_y), test, self.val_size, self.seed)
