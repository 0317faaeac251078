"""Shard files of ``specs`` read and written directly, byte for byte as zarr would.

Why: zarr-python spends about 1 ms of Python per inner chunk (asyncio tasks, buffer
objects, one thread hop per codec), more than decompressing a whole window costs. With one
window per chunk, the layout that lets a random batch decode only the windows it asks for,
that overhead made a random read of 42 windows slower than opening 42 PNG files. This
module implements the codec chain chirpid-io writes, following the Zarr v3 sharding
specification:

- a shard file holds its inner chunks back to back, then the index: for each chunk in
  C order, (offset, nbytes) as little-endian uint64 ((2**64-1, 2**64-1) for a chunk never
  written), then the CRC32C of the index;
- an inner chunk is [``chirpid.band_delta`` along mel bands, then along frames, each
  optional, or ``chirpid.band_predict`` (``predict.py``)] -> bytes -> zstd -> CRC32C of
  the compressed bytes, appended little-endian.

Tests check that zarr reads what this module writes and that it writes what zarr would.
Unlike zarr, which reads a missing shard or chunk as the fill value, this module treats
one inside the cache's length as damage: chirpid-io writes every window it counts, so a
hole means a file was lost, and zeros would silently become training data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import CacheError
from . import predict
from .codec import undo_delta
from .files import ObjectChanged
from .format import SPECS, StorageOptions

EMPTY = 2**64 - 1
CRC_BYTES = 4


class ChunkError(CacheError):
    """Windows that could not be read: their chunk or shard file is damaged or missing."""

    def __init__(self, location: str, first: int, last: int, reason: str):
        self.location, self.first, self.last, self.reason = location, first, last, reason
        super().__init__(f"windows {first}-{last} could not be read: {location} {reason}")


@dataclass(frozen=True)
class ShardCodec:
    """The codec chain of a cache's ``specs`` array and its file layout in a store."""

    store: object  #: a ``files.LocalStore`` or an ``objects.ObjectStore`` (same methods)
    window_shape: tuple[int, int]
    dtype: np.dtype
    chunk_windows: int
    shard_windows: int
    delta_axes: tuple[int, ...]  #: chunk axes differenced, in order: a value of format.DELTA_AXES
    level: int
    band_predict: bool = False  #: chunks go through ``chirpid.band_predict`` (then no delta_axes)
    array: str = SPECS  #: the array's folder in the store
    pcm: str | None = None  #: int16 audio rows: the ``chirpid.pcm`` method, instead of zstd
    sample_rate: int = 0  #: written into each FLAC chunk's header

    @classmethod
    def create(cls, store, window_shape, dtype: str, storage: StorageOptions) -> "ShardCodec":
        return cls(store=store, window_shape=tuple(window_shape), dtype=np.dtype(dtype).newbyteorder("<"),
                   chunk_windows=storage.chunk_windows, shard_windows=storage.shard_windows,
                   delta_axes=storage.delta_axes(dtype), level=storage.level,
                   band_predict=storage.band_predict(dtype))

    @classmethod
    def for_layout(cls, store, layout) -> "ShardCodec":
        """The codec of a cache's main array (``format.Layout``): ``specs`` or ``waves``."""
        if layout.kind == "spectrogram":
            return cls.create(store, layout.row_shape, layout.dtype, layout.storage)
        return cls(store=store, window_shape=layout.row_shape, dtype=np.dtype("<i2"), chunk_windows=1,
                   shard_windows=layout.storage.shard_chunks, delta_axes=(), level=layout.storage.level,
                   array=layout.array, pcm=layout.storage.codec, sample_rate=layout.sample_rate)

    @property
    def stored_window_shape(self) -> tuple[int, ...]:
        """Shape of one window as stored (``read_sorted(..., keep_differences=True)`` gives
        it): the window's, or with ``chirpid.band_predict``'s header rows in front."""
        return predict.stored_shape(self.window_shape) if self.band_predict else self.window_shape

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_windows // self.chunk_windows

    def shard_key(self, shard: int) -> str:
        return f"{self.array}/c/{shard}/" + "/".join("0" * len(self.window_shape))

    def n_shards(self, n_windows: int) -> int:
        return -(-n_windows // self.shard_windows)

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
            if self.pcm is not None:
                from .pcm import encode

                data = encode(chunk, self.pcm, self.level, self.sample_rate)
            else:
                if self.band_predict:
                    chunk = predict.encode(chunk)
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
        """Write one shard file whole (atomically, see ``files.LocalStore.write``)."""
        self.store.write(self.shard_key(shard), self.encode_shard(windows))

    # -- reading -----------------------------------------------------------------------

    def read_sorted(self, windows: np.ndarray, out: np.ndarray, rows: np.ndarray | None = None,
                    keep_differences: bool = False) -> None:
        """Fill ``out[rows[i]]`` with window ``windows[i]`` (``rows`` default: 0, 1, ...);
        with ``keep_differences=True``, with the window as stored (see ``delta_axes``;
        ``out`` then has ``stored_window_shape`` windows).

        ``windows`` must be sorted and lie inside the cache. Each shard touched is opened
        once, and each chunk touched is read and decompressed once (a window asked for
        twice, twice). A missing shard file or chunk raises :class:`ChunkError`.
        """
        rows = np.arange(windows.size) if rows is None else rows
        shards = windows // self.shard_windows
        groups = [g for g in np.split(np.arange(windows.size), np.flatnonzero(np.diff(shards)) + 1) if g.size]
        opened = self._fetch_ahead(shards, windows, groups)
        for group in groups:
            shard = int(shards[group[0]])
            handle = opened.pop(shard, None)
            for attempt in range(3):
                try:
                    self._read_from_shard(shard, windows[group], out, rows[group], keep_differences, handle)
                    break
                except ObjectChanged as exc:  # a writer replaced the object between two reads: again
                    handle = None
                    if attempt == 2:
                        raise ChunkError(f"shard file {exc.key}", int(windows[group[0]]), int(windows[group[-1]]),
                                         exc.reason) from None

    def _fetch_ahead(self, shards: np.ndarray, windows: np.ndarray, groups: list) -> dict:
        """For a store with parallel requests (an object store): open every shard the
        batch touches and fetch every chunk it needs, all at once, before decoding. The
        handles then serve those reads from memory; anything that failed here is simply
        read again below, which reports it. A local store has no ``open_many``: nothing."""
        open_many = getattr(self.store, "open_many", None)
        if open_many is None or not groups:
            return {}
        ids = [int(shards[g[0]]) for g in groups]
        handles = open_many([self.shard_key(i) for i in ids])
        wanted, opened = {}, {}
        for shard, group in zip(ids, groups):
            key = self.shard_key(shard)
            handle = handles.get(key)
            if handle is None:
                continue
            opened[shard] = handle
            first = shard * self.shard_windows
            try:
                index = self._read_index(handle, key, first)
            except ChunkError:
                continue
            chunks = np.unique((windows[group] - first) // self.chunk_windows)
            wanted[handle] = [(int(o), int(n)) for o, n in index[chunks] if o != EMPTY]
        self.store.prefetch(wanted)
        return opened

    def _read_from_shard(self, shard: int, windows: np.ndarray, out: np.ndarray, rows: np.ndarray,
                         keep_differences: bool, handle=None) -> None:
        from .files import CacheFileError

        key = self.shard_key(shard)
        first = shard * self.shard_windows
        if handle is None:
            try:
                handle = self.store.open(key)
            except CacheFileError as exc:
                raise ChunkError(f"shard file {key}", int(windows[0]), int(windows[-1]), exc.reason) from None
        with handle:
            index = self._read_index(handle, key, first)
            local = windows - first
            chunk_of = local // self.chunk_windows
            if self.chunk_windows == 1:  # straight into the output
                for row, c in zip(rows, chunk_of):
                    self._read_chunk(handle, key, index, int(c), out[row], first, keep_differences)
                return
            bounds = np.flatnonzero(np.diff(chunk_of)) + 1
            shape = self.stored_window_shape if keep_differences else self.window_shape
            buffer = np.empty((self.chunk_windows, *shape), self.dtype)
            for group in np.split(np.arange(rows.size), bounds):  # a chunk is decoded once
                c = int(chunk_of[group[0]])
                self._read_chunk(handle, key, index, c, buffer, first, keep_differences)
                out[rows[group]] = buffer[local[group] - c * self.chunk_windows]

    def _read_index(self, handle, key: str, first: int) -> np.ndarray:
        import google_crc32c

        size = self.chunks_per_shard * 16
        raw = handle.pread(handle.size - size - CRC_BYTES, size + CRC_BYTES) if handle.size >= size + CRC_BYTES else b""
        if len(raw) != size + CRC_BYTES or google_crc32c.value(raw[:size]) != int.from_bytes(raw[size:], "little"):
            raise ChunkError(f"shard file {key}", first, first + self.shard_windows - 1,
                             "has a damaged index or is truncated")
        return np.frombuffer(raw, "<u8", self.chunks_per_shard * 2).reshape(-1, 2)

    def _read_chunk(self, handle, key: str, index: np.ndarray, chunk: int, dest: np.ndarray,
                    shard_start: int, keep_differences: bool) -> None:
        """Decompress one chunk into ``dest``, undoing its deltas on the way, while the chunk
        is in cache (one undo over a whole batch afterwards was 3x slower per window)."""
        import google_crc32c

        offset, nbytes = (int(v) for v in index[chunk])
        where = f"chunk {chunk} of shard file {key}"
        if offset == EMPTY:
            raise ChunkError(where, *self._window_range(shard_start, chunk), "was never written (the shard is incomplete)")
        if offset + nbytes > handle.size or nbytes < CRC_BYTES:
            raise ChunkError(where, *self._window_range(shard_start, chunk), "lies outside its file (truncated)")
        raw = handle.pread(offset, nbytes)
        data = raw[:-CRC_BYTES]
        if len(raw) != nbytes or google_crc32c.value(data) != int.from_bytes(raw[-CRC_BYTES:], "little"):
            raise ChunkError(where, *self._window_range(shard_start, chunk), "is damaged (CRC32C mismatch)")
        undo = () if keep_differences else self.delta_axes
        predicted = self.band_predict and not keep_differences
        if predicted:  # dest is (..., n_mels, frames); the stored chunk has header rows too
            plain = np.empty((*dest.shape[:-2], *self.stored_window_shape), self.dtype)
        else:
            plain = np.empty_like(dest) if undo else dest
        if self.pcm is not None:
            from .pcm import decode

            try:
                decode(data, self.pcm, dest)
            except Exception as exc:  # noqa: BLE001 - a bad stream, whatever the decoder raises for it
                raise ChunkError(where, *self._window_range(shard_start, chunk),
                                 f"is damaged ({self.pcm}: {exc})") from exc
            return
        decompressor = _decompressor()  # outside the try: a missing module is no damage
        try:
            plain.reshape(-1).view(np.uint8)[:] = np.frombuffer(
                decompressor.decompress(data, max_output_size=plain.nbytes), np.uint8)
        except Exception as exc:  # noqa: BLE001 - a bad frame, whatever zstd raises for it
            raise ChunkError(where, *self._window_range(shard_start, chunk), f"is damaged (zstd: {exc})") from exc
        if predicted:
            predict.decode(plain, out=dest)
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
