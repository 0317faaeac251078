"""Small whole arrays of a cache (``labels``, the label sets) and its Parquet tables.

A 1-d array is one Zarr v3 array holding a single chunk (``NAME/c/0``: bytes, zstd,
CRC32C), written whole when a build finishes, so zarr-python reads it too. A table is a
Parquet file. Both are read and written only through the store (``files.py``), so a link
or a FIFO in their place is refused like any other damage.
"""

from __future__ import annotations

import numpy as np

from ..errors import CacheError
from . import format as fmt

CRC_BYTES = 4


def write_vector(store, name: str, values: np.ndarray, fill_value: int, dimension: str) -> None:
    """Store ``values`` (1-d, int32 or int64) as the array ``name``: chunk first, then metadata."""
    import google_crc32c
    import numcodecs.zstd

    values = np.ascontiguousarray(values, dtype=np.dtype(values.dtype).newbyteorder("<"))
    if values.size:
        data = numcodecs.zstd.compress(values, 3)
        store.write(f"{name}/c/0", data + google_crc32c.value(data).to_bytes(CRC_BYTES, "little"))
    else:
        store.remove(f"{name}/c/0")  # an empty array has no chunk, as in zarr
    meta = fmt.vector_metadata(int(values.size), values.dtype.name, fill_value, dimension)
    store.write(f"{name}/zarr.json", fmt.dumps(meta))


def read_vector(store, name: str, dtype: str, at_least: int) -> np.ndarray:
    """The array ``name`` (``dtype``, at least ``at_least`` values); a CacheError names
    the file and what is wrong when it is missing, damaged or too short."""
    import google_crc32c
    import zstandard

    meta = fmt.loads(store.read(f"{name}/zarr.json", fmt.META_LIMIT), f"{store.location}/{name}/zarr.json")
    expected = fmt.vector_metadata(0, dtype, 0, "")
    shape = meta.get("shape")
    if (meta.get("data_type") != dtype or not isinstance(shape, list) or len(shape) != 1
            or not isinstance(shape[0], int) or meta.get("codecs") != expected["codecs"]):
        raise CacheError(f"{store.location}/{name}/zarr.json: not the {dtype} array chirpid-io writes "
                         f"(data_type {meta.get('data_type')!r}, shape {shape!r}); the cache is damaged")
    length = shape[0]
    if length < at_least:
        raise CacheError(f"{store.location}/{name}: holds {length} values, the cache counts {at_least}; "
                         "the cache is damaged")
    if length == 0:
        return np.empty(0, dtype=dtype)
    item = np.dtype(dtype).itemsize
    raw = store.read(f"{name}/c/0", limit=fmt.META_LIMIT + length * item)
    data = raw[:-CRC_BYTES]
    if len(raw) < CRC_BYTES or google_crc32c.value(data) != int.from_bytes(raw[-CRC_BYTES:], "little"):
        raise CacheError(f"{store.location}/{name}/c/0: damaged (CRC32C mismatch)")
    try:
        plain = zstandard.ZstdDecompressor().decompress(data, max_output_size=length * item)
    except zstandard.ZstdError as exc:
        raise CacheError(f"{store.location}/{name}/c/0: damaged (zstd: {exc})") from None
    if len(plain) != length * item:
        raise CacheError(f"{store.location}/{name}/c/0: holds {len(plain) // item} values, its zarr.json "
                         f"says {length}; the cache is damaged")
    return np.frombuffer(plain, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def write_table(store, name: str, table) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.write(name, sink.getvalue().to_pybytes())


def read_table(store, name: str, at_least: int):
    """The Parquet table ``name`` (a pyarrow.Table with at least ``at_least`` rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = store.read(name)
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        raise CacheError(f"{store.location}/{name}: not a readable Parquet table ({str(exc).splitlines()[0][:160]}); "
                         "the cache is damaged") from None
    if table.num_rows < at_least:
        raise CacheError(f"{store.location}/{name}: has {table.num_rows} rows, the cache counts {at_least}; "
                         "the cache is damaged")
    return table
