"""Shard files of ``specs`` read and written directly, byte for byte as zarr would.

Why: zarr-python spends about 1 ms of Python per inner chunk (asyncio tasks, buffer
objects, one thread hop per codec), more than decompressing a whole window costs. With one
window per chunk, the layout that lets a random batch decode only the windows it asks for,
that overhead made a random read of 42 windows slower than opening 42 PNG files. This
module handles the one codec chain chirpid-io writes, following the Zarr v3 sharding
specification:

- a shard file holds its inner chunks back to back, then the index: for each chunk in
  C order, (offset, nbytes) as little-endian uint64 ((2**64-1, 2**64-1) for a chunk never
  written, which reads as the fill value 0), then the CRC32C of the index;
- an inner chunk is [``chirpid.band_delta`` along mel bands, then along frames, each
  optional] -> bytes -> zstd -> CRC32C of the compressed bytes, appended little-endian.

A cache with any other codecs (blosc, say) is read and written through zarr instead:
``ShardCodec.for_array`` returns None for it. Tests check that zarr reads what this module
writes and that this module reads what zarr writes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .codec import NAME as BAND_DELTA, undo_delta
from .format import DELTA_AXES

EMPTY = 2**64 - 1
CRC_BYTES = 4


class ChunkError(CacheError):
    """One inner chunk failed its checksum or did not decompress."""

    def __init__(self, path: Path, first: int, last: int, reason: str):
        super().__init__(f"windows {first}-{last} could not be read: their chunk in {path} is damaged ({reason})")


@dataclass(frozen=True)
class ShardCodec:
    """The codec chain of one sharded ``specs`` array, and its file layout."""

    root: Path  #: the array's folder (holding zarr.json)
    window_shape: tuple[int, int]
    dtype: np.dtype
    chunk_windows: int
    shard_windows: int
    delta_axes: tuple[int, ...]  #: chunk axes differenced, in order: a value of format.DELTA_AXES
    level: int

    @classmethod
    def for_array(cls, array) -> ShardCodec | None:
        """The fast codec for a zarr ``specs`` array, or None when its codecs differ."""
        meta = array.metadata
        codecs = [c.to_dict() for c in meta.codecs]
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            return None
        sharding = codecs[0]["configuration"]
        names = [c["name"] for c in sharding["codecs"]]
        index_names = [c["name"] for c in sharding["index_codecs"]]
        if sharding.get("index_location", "end") != "end" or index_names != ["bytes", "crc32c"]:
            return None
        n_delta = len(names) - 3
        if n_delta < 0 or names[n_delta:] != ["bytes", "zstd", "crc32c"] or set(names[:n_delta]) - {BAND_DELTA}:
            return None
        delta_axes = tuple(c["configuration"]["axis"] for c in sharding["codecs"][:n_delta])
        if delta_axes not in DELTA_AXES.values():
            return None
        zstd = sharding["codecs"][-2]["configuration"]
        dtype = np.dtype(array.dtype)
        byte_order = sharding["codecs"][n_delta].get("configuration", {}).get("endian", "little")
        if zstd.get("checksum") or (dtype.itemsize > 1 and byte_order != "little"):
            return None
        if meta.chunk_key_encoding.to_dict() != {"name": "default", "configuration": {"separator": "/"}}:
            return None
        return cls(
            root=Path(array.store.root) / array.path, window_shape=tuple(array.shape[1:]),
            dtype=dtype.newbyteorder("<"), chunk_windows=int(sharding["chunk_shape"][0]),
            shard_windows=int(array.shards[0]), delta_axes=delta_axes, level=int(zstd["level"]),
        )

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_windows // self.chunk_windows

    def shard_path(self, shard: int) -> Path:
        return self.root / "c" / str(shard) / "0" / "0"

    # -- writing -----------------------------------------------------------------------

    def encode_shard(self, windows: np.ndarray) -> bytes:
        """The file for one shard holding ``windows`` (at most ``shard_windows``) from its start."""
        import google_crc32c
        import numcodecs.zstd

        k, step = len(windows), self.chunk_windows
        if not 0 < k <= self.shard_windows:
            raise ValueError(f"a shard holds 1 to {self.shard_windows} windows, not {k}")
        index = np.full((self.chunks_per_shard, 2), EMPTY, dtype="<u8")
        parts, offset = [], 0
        for c in range(-(-k // step)):
            chunk = np.zeros((step, *self.window_shape), self.dtype)  # fill value past the end
            chunk[: min(step, k - c * step)] = windows[c * step : (c + 1) * step]
            for axis in self.delta_axes:
                moved = np.moveaxis(chunk, axis, 0)
                moved[1:] -= moved[:-1].copy()
            data = numcodecs.zstd.compress(chunk, self.level)
            parts += [data, google_crc32c.value(data).to_bytes(CRC_BYTES, "little")]
            index[c] = offset, len(data) + CRC_BYTES
            offset += len(data) + CRC_BYTES
        index_bytes = index.tobytes()
        parts += [index_bytes, google_crc32c.value(index_bytes).to_bytes(CRC_BYTES, "little")]
        return b"".join(parts)

    def write_shard(self, shard: int, windows: np.ndarray) -> None:
        """Write one shard file whole: through a temporary name, fsync and a rename."""
        path = self.shard_path(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(self.encode_shard(windows))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- reading -----------------------------------------------------------------------

    def read_sorted(self, windows: np.ndarray, out: np.ndarray, rows: np.ndarray | None = None,
                    keep_differences: bool = False) -> None:
        """Fill ``out[rows[i]]`` with window ``windows[i]`` (``rows`` default: 0, 1, ...);
        with ``keep_differences=True``, with its differences as stored (see ``delta_axes``).

        ``windows`` must be sorted. Each shard touched is opened once, and each chunk
        touched is read and decompressed once (a window asked for twice, twice).
        """
        rows = np.arange(windows.size) if rows is None else rows
        shards = windows // self.shard_windows
        for group in np.split(np.arange(windows.size), np.flatnonzero(np.diff(shards)) + 1):
            if group.size:
                self._read_from_shard(int(shards[group[0]]), windows[group], out, rows[group], keep_differences)

    def _read_from_shard(self, shard: int, windows: np.ndarray, out: np.ndarray, rows: np.ndarray,
                         keep_differences: bool) -> None:
        path = self.shard_path(shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            out[rows] = 0  # a shard never written holds the fill value, as in zarr
            return
        try:
            index = self._read_index(fd, path)
            first = shard * self.shard_windows
            local = windows - first
            chunk_of = local // self.chunk_windows
            if self.chunk_windows == 1:  # straight into the output
                for row, c in zip(rows, chunk_of):
                    self._read_chunk(fd, path, index, int(c), out[row], first, keep_differences)
                return
            bounds = np.flatnonzero(np.diff(chunk_of)) + 1
            buffer = np.empty((self.chunk_windows, *self.window_shape), self.dtype)
            for group in np.split(np.arange(rows.size), bounds):  # a chunk is decoded once
                c = int(chunk_of[group[0]])
                self._read_chunk(fd, path, index, c, buffer, first, keep_differences)
                out[rows[group]] = buffer[local[group] - c * self.chunk_windows]
        finally:
            os.close(fd)

    def _read_index(self, fd: int, path: Path) -> np.ndarray:
        import google_crc32c

        size = self.chunks_per_shard * 16
        file_size = os.fstat(fd).st_size
        raw = os.pread(fd, size + CRC_BYTES, file_size - size - CRC_BYTES) if file_size >= size + CRC_BYTES else b""
        if len(raw) != size + CRC_BYTES or google_crc32c.value(raw[:size]) != int.from_bytes(raw[size:], "little"):
            raise CacheError(f"{path}: the shard index is damaged or the file is truncated")
        return np.frombuffer(raw, "<u8", self.chunks_per_shard * 2).reshape(-1, 2)

    def _read_chunk(self, fd: int, path: Path, index: np.ndarray, chunk: int, dest: np.ndarray,
                    shard_start: int, keep_differences: bool) -> None:
        """Decompress one chunk into ``dest``, undoing its deltas on the way, while the chunk
        is in cache (one undo over a whole batch afterwards was 3x slower per window)."""
        import google_crc32c

        offset, nbytes = (int(v) for v in index[chunk])
        if offset == EMPTY:
            dest[...] = 0
            return
        raw = os.pread(fd, nbytes, offset)
        data = raw[:-CRC_BYTES]
        if len(raw) != nbytes or google_crc32c.value(data) != int.from_bytes(raw[-CRC_BYTES:], "little"):
            raise ChunkError(path, *self._window_range(shard_start, chunk), "CRC32C mismatch")
        undo = () if keep_differences else self.delta_axes
        plain = np.empty_like(dest) if undo else dest
        decompressor = _decompressor()  # outside the try: a missing module is no damage
        try:
            plain.reshape(-1).view(np.uint8)[:] = np.frombuffer(
                decompressor.decompress(data, max_output_size=plain.nbytes), np.uint8)
        except Exception as exc:  # noqa: BLE001 - a bad frame, whatever zstd raises for it
            raise ChunkError(path, *self._window_range(shard_start, chunk), f"zstd: {exc}") from exc
        for k, axis in enumerate(reversed(undo)):  # chunk axes counted from the end: dest may be 2-d
            plain = undo_delta(plain, axis - 3, out=dest if k == len(undo) - 1 else None)

    def _window_range(self, shard_start: int, chunk: int) -> tuple[int, int]:
        first = shard_start + chunk * self.chunk_windows
        return first, first + self.chunk_windows - 1


_local = threading.local()


def _decompressor():
    """This thread's zstandard decompressor (they are not thread-safe).

    zstandard rather than numcodecs (which writes the chunks) because it releases the GIL
    while decompressing, so a loader's read-ahead thread holds up the training loop less:
    make_loader on the CPU here, 1,960-2,130 windows/s against 1,810 with numcodecs.
    """
    if not hasattr(_local, "zstd"):
        import zstandard

        _local.zstd = zstandard.ZstdDecompressor()
    return _local.zstd
