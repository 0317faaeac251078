"""Direct shard I/O (chirpid_io.cache.shards) against zarr itself, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from chirpid_io.cache import StorageOptions  # noqa: E402
from chirpid_io.cache import format as fmt  # noqa: E402
from chirpid_io.cache import predict  # noqa: E402
from chirpid_io.cache.codec import BandDelta, register  # noqa: E402
from chirpid_io.cache.predict import BandPredict  # noqa: E402
from chirpid_io.cache.files import LocalStore  # noqa: E402
from chirpid_io.cache.shards import ChunkError, ShardCodec  # noqa: E402
from chirpid_io.errors import CacheError, ConfigError  # noqa: E402

register()
SHAPE = (6, 11)  # small windows: (mel, frame)


def _array(root, n, dtype, storage: StorageOptions):
    """A zarr array whose metadata is the one chirpid-io writes, and our codec for it."""
    store = LocalStore(root)
    store.write("specs/zarr.json", fmt.dumps(fmt.specs_metadata(n, SHAPE, dtype, storage)))
    return zarr.open_array(root / "specs", mode="r+"), ShardCodec.create(store, SHAPE, dtype, storage)


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
    ("uint8", StorageOptions(chunk_windows=1, shard_windows=8, delta="per-band"), 19),
    ("uint8", StorageOptions(chunk_windows=3, shard_windows=6, delta="per-band", level=7), 14),
    ("float16", StorageOptions(chunk_windows=1, shard_windows=4, delta="per-band"), 5),  # float16: no filter
]


@pytest.mark.parametrize("dtype, storage, n", CASES)
def test_specs_metadata_is_what_zarr_writes_for_the_same_codecs(tmp_path, dtype, storage, n):
    import zarr.codecs as zc

    filters = [BandDelta(axis=a) for a in storage.delta_axes(dtype)]
    if storage.band_predict(dtype):
        filters = [BandPredict()]
    zarr.create_array(tmp_path / "z", shape=(n, *SHAPE), dtype=dtype, chunks=(storage.chunk_windows, *SHAPE),
                      shards=(storage.shard_windows, *SHAPE), fill_value=0, filters=filters,
                      compressors=[zc.ZstdCodec(level=storage.level), zc.Crc32cCodec()],
                      dimension_names=("window", "mel", "frame"))
    written = json.loads((tmp_path / "z" / "zarr.json").read_text())
    assert written == fmt.specs_metadata(n, SHAPE, dtype, storage)


@pytest.mark.parametrize("dtype, storage, n", CASES)
def test_shard_files_are_byte_identical_to_zarrs(tmp_path, dtype, storage, n):
    data = _windows(n, dtype)
    array, codec = _array(tmp_path, n, dtype, storage)
    array[:] = data  # zarr writes the shards
    for shard in range(codec.n_shards(n)):
        part = data[shard * storage.shard_windows : (shard + 1) * storage.shard_windows]
        assert codec.encode_shard(part) == (tmp_path / codec.shard_key(shard)).read_bytes(), f"shard {shard}"


@pytest.mark.parametrize("dtype, storage, n", CASES)
def test_reads_equal_zarrs_in_any_order(tmp_path, dtype, storage, n):
    data = _windows(n, dtype, seed=1)
    array, codec = _array(tmp_path, n, dtype, storage)
    for shard in range(codec.n_shards(n)):  # written by us, read by zarr and by us
        codec.write_shard(shard, data[shard * storage.shard_windows : (shard + 1) * storage.shard_windows])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "specs")[:], data)
    wanted = np.unique(np.random.default_rng(2).choice(n, size=n // 2))
    out = np.empty((wanted.size, *SHAPE), dtype)
    codec.read_sorted(wanted, out)
    np.testing.assert_array_equal(out, data[wanted])
    stored = np.empty((wanted.size, *codec.stored_window_shape), dtype)  # as kept for the GPU
    codec.read_sorted(wanted, stored, keep_differences=True)
    if codec.band_predict:
        np.testing.assert_array_equal(stored, predict.encode(data[wanted]))
    elif not codec.delta_axes:
        np.testing.assert_array_equal(stored, data[wanted])


def test_a_missing_shard_or_unwritten_chunk_is_damage_not_zeros(tmp_path):
    storage = StorageOptions(chunk_windows=1, shard_windows=4)
    array, codec = _array(tmp_path, 12, "uint8", storage)
    data = _windows(12, "uint8") | 1
    array[4:6] = data[4:6]  # shard 1 partly written, shards 0 and 2 not at all
    out = np.empty((12, *SHAPE), np.uint8)
    codec.read_sorted(np.arange(4, 6), out[:2])
    np.testing.assert_array_equal(out[:2], data[4:6])
    with pytest.raises(ChunkError, match=r"windows 0-1 could not be read: shard file specs/c/0/0/0 is missing"):
        codec.read_sorted(np.array([0, 1]), out[:2])
    with pytest.raises(ChunkError, match=r"windows 6-6 could not be read: chunk 2 of shard file specs/c/1/0/0 "
                                         r"was never written"):
        codec.read_sorted(np.array([6]), out[:1])


def test_only_zstd_is_offered_and_old_flags_still_parse():
    assert StorageOptions(delta=True).delta == "band" and StorageOptions(delta=False).delta == "none"
    assert StorageOptions(delta="per-band").delta_axes("uint8") == ()
    with pytest.raises(ConfigError, match="unknown 'time'.*'per-band'"):
        StorageOptions(delta="time")
    with pytest.raises(ConfigError, match="compressor: unknown 'blosc-lz4'; use 'zstd'"):
        StorageOptions(compressor="blosc-lz4")
    with pytest.raises(ConfigError, match="multiple of chunk_windows"):
        StorageOptions(chunk_windows=3, shard_windows=4)


@pytest.mark.parametrize("offset, what", [(3, "CRC32C"), (-7, "damaged index")])
def test_a_flipped_byte_is_named(tmp_path, offset, what):
    storage = StorageOptions(chunk_windows=1, shard_windows=4)
    _, codec = _array(tmp_path, 4, "uint8", storage)
    codec.write_shard(0, _windows(4, "uint8"))
    path = tmp_path / codec.shard_key(0)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=what):
        codec.read_sorted(np.arange(4), np.empty((4, *SHAPE), np.uint8))
