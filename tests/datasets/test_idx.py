"""IDX reading and writing: byte-level format, gzip detection, and clear errors for bad files."""

import gzip
import struct

import numpy as np
import pytest
from lben_ode.datasets import DatasetError, read_idx, write_idx

from lben_ode.errors import LBENError


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand from the format description (independent of write_idx)."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_reads_hand_built_uint8_images(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(0x08, (2, 3, 4), images.tobytes()))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)


def test_reads_hand_built_big_endian_int32_and_float64(tmp_path):
    values = [1, -2, 70000]
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(0x0C, (3,), struct.pack(">3i", *values)))
    np.testing.assert_array_equal(read_idx(path), values)
    floats = [0.5, -1.25]
    path = tmp_path / "floats"
    path.write_bytes(idx_bytes(0x0E, (2,), struct.pack(">2d", *floats)))
    np.testing.assert_array_equal(read_idx(path), floats)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    raw = idx_bytes(0x08, (5,), labels.tobytes())
    (tmp_path / "labels.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "labels-no-suffix").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels-no-suffix"), labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_write_read_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 5, 2)) * 50).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_write_matches_the_format_byte_for_byte(tmp_path):
    array = np.array([[1, 2], [3, 4]], dtype=np.int16)
    path = write_idx(tmp_path / "x", array)
    assert path.read_bytes() == idx_bytes(0x0B, (2, 2), struct.pack(">4h", 1, 2, 3, 4))


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


def test_truncated_and_padded_files(tmp_path):
    raw = idx_bytes(0x08, (4, 2, 2), bytes(16))
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(raw[:9])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "header")
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(DatasetError, match="longer"):
        read_idx(tmp_path / "long")


def test_bad_magic_and_type_code(tmp_path):
    (tmp_path / "text").write_bytes(b"hello world")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "text")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "empty")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 0))
    with pytest.raises(DatasetError, match="type code"):
        read_idx(tmp_path / "code")


def test_corrupt_and_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(0x08, (1000,), bytes(range(256)) * 3 + bytes(232)))
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (tmp_path / "corrupt.gz").write_bytes(bytes(corrupt))
    with pytest.raises(DatasetError, match=r"corrupt\.gz") as info:
        read_idx(tmp_path / "corrupt.gz")
    assert isinstance(info.value, LBENError)
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DatasetError, match=r"cut\.gz"):
        read_idx(tmp_path / "cut.gz")


def test_write_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(DatasetError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.complex64))
