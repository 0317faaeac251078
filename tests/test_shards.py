"""Direct shard I/O (chirpid_io.cache.shards) against zarr itself, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from chirpid_io.cache import StorageOptions  # noqa: E402
from chirpid_io.cache.codec import BandDelta, register  # noqa: E402
from chirpid_io.cache.format import DELTA_AXES  # noqa: E402
from chirpid_io.cache.shards import ShardCodec  # noqa: E402
from chirpid_io.errors import CacheError, ConfigError  # noqa: E402

register()
SHAPE = (6, 11)  # small windows: (mel, frame)


def _array(path, n, dtype, storage: StorageOptions):
    return zarr.create_array(path, shape=(n, *SHAPE), dtype=dtype, chunks=(storage.chunk_windows, *SHAPE),
                             shards=(storage.shard_windows, *SHAPE), fill_value=0, **storage.codecs(dtype))


def _windows(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(0, 3, (n, *SHAPE)), axis=1)  # band-correlated, like spectrograms
    return (smooth % 256).astype(dtype) if dtype == "uint8" else (smooth / 7).astype(dtype)


CASES = [  # (dtype, storage, windows): partial last chunk and partial last shard included
    ("uint8", StorageOptions(chunk_windows=1, shard_windows=8), 21),
    ("uint8", StorageOptions(chunk_windows=3, shard_windows=9), 22),
    ("uint8", StorageOptions(chunk_windows=1, shard_windows=4, delta="band"), 9),
    ("uint8", StorageOptions(chunk_windows=2, shard_windows=4, delta="none", level=9), 7),
    ("float16", StorageOptions(chunk_windows=1, shard_windows=4), 10),
]


@pytest.mark.parametrize("dtype, storage, n", CASES)
def test_shard_files_are_byte_identical_to_zarrs(tmp_path, dtype, storage, n):
    data = _windows(n, dtype)
    array = _array(tmp_path / "zarr", n, dtype, storage)
    array[:] = data
    codec = ShardCodec.for_array(array)
    assert codec is not None and codec.delta_axes == (DELTA_AXES[storage.delta] if dtype == "uint8" else ())
    for shard in range(-(-n // storage.shard_windows)):
        part = data[shard * storage.shard_windows : (shard + 1) * storage.shard_windows]
        assert codec.encode_shard(part) == codec.shard_path(shard).read_bytes(), f"shard {shard}"


@pytest.mark.parametrize("dtype, storage, n", CASES)
def test_reads_equal_zarrs_in_any_order(tmp_path, dtype, storage, n):
    data = _windows(n, dtype, seed=1)
    array = _array(tmp_path / "zarr", n, dtype, storage)
    codec = ShardCodec.for_array(array)
    for shard in range(-(-n // storage.shard_windows)):  # written by us, read by zarr and by us
        codec.write_shard(shard, data[shard * storage.shard_windows : (shard + 1) * storage.shard_windows])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "zarr")[:], data)
    wanted = np.unique(np.random.default_rng(2).choice(n, size=n // 2))
    out = np.empty((wanted.size, *SHAPE), dtype)
    codec.read_sorted(wanted, out)
    np.testing.assert_array_equal(out, data[wanted])


def test_unwritten_shards_and_chunks_read_as_the_fill_value(tmp_path):
    storage = StorageOptions(chunk_windows=1, shard_windows=4)
    array = _array(tmp_path / "zarr", 12, "uint8", storage)
    data = _windows(12, "uint8") | 1  # no window equals the fill value
    array[4:6] = data[4:6]  # shard 1 partly written, shards 0 and 2 not at all
    out = np.empty((12, *SHAPE), np.uint8)
    ShardCodec.for_array(array).read_sorted(np.arange(12), out)
    np.testing.assert_array_equal(out, array[:])
    assert out[4:6].any() and not out[:4].any() and not out[6:].any()


def test_other_codecs_fall_back_to_zarr(tmp_path):
    storage = StorageOptions(chunk_windows=2, shard_windows=4, delta="none", compressor="blosc-lz4")
    assert ShardCodec.for_array(_array(tmp_path / "blosc", 4, "uint8", storage)) is None
    array = zarr.create_array(tmp_path / "time-first", shape=(4, *SHAPE), dtype="uint8", chunks=(1, *SHAPE),
                              shards=(4, *SHAPE), filters=[BandDelta(axis=2), BandDelta(axis=1)])
    assert ShardCodec.for_array(array) is None  # differences in another order: zarr reads it


def test_storage_flags_of_older_caches_still_parse():
    assert StorageOptions(delta=True).delta == "band" and StorageOptions(delta=False).delta == "none"
    with pytest.raises(ConfigError, match="unknown delta"):
        StorageOptions(delta="time")


@pytest.mark.parametrize("offset, what", [(3, "CRC32C"), (-7, "shard index")])
def test_a_flipped_byte_is_named(tmp_path, offset, what):
    storage = StorageOptions(chunk_windows=1, shard_windows=4)
    array = _array(tmp_path / "zarr", 4, "uint8", storage)
    codec = ShardCodec.for_array(array)
    codec.write_shard(0, _windows(4, "uint8"))
    path = codec.shard_path(0)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=what):
        codec.read_sorted(np.arange(4), np.empty((4, *SHAPE), np.uint8))
