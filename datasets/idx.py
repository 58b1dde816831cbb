"""Reading and writing IDX files, the format of the MNIST database (gzipped or not).

An IDX file is a 4-byte magic number ``0x00 0x00 <type code> <number of dimensions>``, one
big-endian uint32 per dimension, then the array in C order, big-endian.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetError

#: IDX type code → numpy dtype (big-endian, as stored on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"


def read_idx_bytes(path: str | Path) -> bytes:
    """The raw IDX bytes of ``path``, decompressed when the file is gzipped (detected by content)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"IDX file {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"IDX file {str(path)!r} is not a readable (gzip) file: {exc}") from exc
    return data


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array of native byte order.

    Raises:
        DatasetError: for a bad magic number, unknown type code, or a size that does not match the
            header (a truncated or padded file).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{source} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DatasetError(f"{source}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source} is truncated: {len(data)} bytes, the header alone needs {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DatasetError(
            f"{source} is {state}: header says shape {shape} ({expected} bytes), file has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # A native-order copy: writable, and independent of the bytes it was parsed from.
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a numpy array of the stored dtype and shape.

    Raises:
        DatasetError: when the file is missing, not gzip/IDX, or truncated.
    """
    return parse_idx(read_idx_bytes(path), repr(str(path)))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzip it when ``compress`` (default: the name ends in ``.gz``).

    Args:
        path: file to write.
        array: at most 255 dimensions, dtype one of uint8, int8, int16, int32, float32, float64.
        compress: gzip the output; None decides from the file name.

    Returns:
        The path written.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DatasetError(f"IDX cannot store dtype {array.dtype}; valid: {sorted(str(d) for d in codes)}")
    if array.ndim > 255:
        raise DatasetError(f"IDX stores at most 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    if path.name.endswith(".gz") if compress is None else compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path
