"""open_cache: a finished cache as arrays and tables, read lazily and in coalesced batches."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from ..config import SpectrogramConfig
from ..errors import CacheError, FingerprintMismatchError
from . import format as fmt


class Cache:
    """A read-only view of a finished cache.

    Cheap to create and to pickle (for DataLoader workers): the Zarr arrays and the
    tables open on first use, in whichever process uses them.
    """

    def __init__(self, path, config: SpectrogramConfig | None = None):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise CacheError(f"{self.path}: not a chirpid-io cache (no zarr.json); build one with "
                             f"`chirpid-io build-cache SOURCE {self.path}`")
        attrs = dict(zarr.open_group(self.path, mode="r").attrs)
        if attrs.get("format_version") != fmt.FORMAT_VERSION:
            raise CacheError(f"{self.path}: cache format {attrs.get('format_version')!r}, this "
                             f"chirpid-io reads format {fmt.FORMAT_VERSION}; rebuild the cache")
        if attrs.get("state") != "complete":
            raise CacheError(f"{self.path}: the build did not finish; run the same "
                             "`chirpid-io build-cache` command again to complete it")
        self.attrs = attrs
        self.config = SpectrogramConfig.from_dict(attrs["config"])
        if config is not None and config.fingerprint() != self.config.fingerprint():
            raise FingerprintMismatchError(f"cache {self.path}", self.config.diff(config))
        self.fingerprint: str = attrs["fingerprint"]
        self.class_names: list[str] = list(attrs["class_names"])
        self.stats = {k: np.asarray(attrs["stats"][k], dtype=np.float64) for k in ("mean", "std")}
        self.chunk_windows: int = attrs["storage"]["chunk_windows"]
        self.shard_windows: int = attrs["storage"]["shard_windows"]
        #: multiply stored values by this to get the recipe's [0, 1] images
        self.value_scale = 1 / 255 if self.config.storage_dtype == "uint8" else 1.0
        self._length = int(attrs["counts"]["windows"])

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return (f"Cache({str(self.path)!r}, windows={len(self)}, classes={len(self.class_names)}, "
                f"dtype={self.config.storage_dtype})")

    def __getstate__(self):
        # only plain data crosses process boundaries; arrays reopen lazily on the other side
        return {k: v for k, v in self.__dict__.items() if k not in ("specs", "labels", "windows", "recordings", "_shards")}

    @cached_property
    def specs(self):
        """(N, n_mels, frames) Zarr array in the stored dtype; slicing reads from disk."""
        return fmt.open_specs(self.path, mode="r")

    @cached_property
    def labels(self) -> np.ndarray:
        import zarr

        return zarr.open_array(self.path / fmt.LABELS, mode="r")[:].astype(np.int64)

    @cached_property
    def windows(self):
        """One row per window (pyarrow.Table): window_id, recording_id, path, label,
        class_name, group, start_seconds, rms."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / fmt.WINDOWS_TABLE)

    @cached_property
    def recordings(self):
        """One row per input recording (pyarrow.Table), skipped ones with their reason."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / fmt.RECORDINGS_TABLE)

    @cached_property
    def _shards(self):
        """Direct shard reads for the codecs chirpid-io writes; None means read through zarr."""
        from .shards import ShardCodec

        return ShardCodec.for_array(self.specs)

    @property
    def delta_axes(self) -> tuple[int, ...]:
        """Axes of a (window, mel, frame) batch that ``read(..., residuals=True)`` leaves
        differenced, in the order they were differenced: (1, 2), (1,) or () for none."""
        return self._shards.delta_axes if self._shards is not None else ()

    def read(self, indices, *, residuals: bool = False) -> np.ndarray:
        """Windows at ``indices`` (in that order), stored dtype, (len, n_mels, frames).

        ``residuals=True`` skips undoing the stored differences (:attr:`delta_axes`):
        values come back as stored, wrapping uint8 differences, for a caller that undoes
        them elsewhere (the loader, with cumulative sums on the GPU, saving the CPU about
        0.1 ms per window). Without ``delta_axes`` it changes nothing.

        The indices are sorted, so every chunk touched is read and decompressed once
        however the batch is ordered. Shard files in the default codecs are read directly
        (``shards.py``: zarr's per-chunk overhead was 4 ms per window); others through
        zarr, one slice per run of consecutive chunks (zarr's orthogonal indexing
        decompressed a chunk once per selected window).
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window index out of range for a cache of {len(self)} windows")
        if self._shards is not None:  # straight into the output, in the order asked for
            out = np.empty((indices.size, *self.config.shape), dtype=self.config.storage_dtype)
            order = np.argsort(indices, kind="stable")
            try:
                self._shards.read_sorted(indices[order], out, order, keep_differences=residuals)
            except CacheError as exc:
                raise CacheError(f"{exc}; `chirpid-io verify {self.path}` lists every damaged chunk") from exc
            return out
        unique, inverse = np.unique(indices, return_inverse=True)
        out = np.empty((unique.size, *self.config.shape), dtype=self.config.storage_dtype)
        chunk_ids = unique // self.chunk_windows
        runs = np.split(np.arange(unique.size), np.flatnonzero(np.diff(chunk_ids) > 1) + 1)
        for run in runs:
            if run.size:
                low, high = int(unique[run[0]]), int(unique[run[-1]]) + 1
                out[run] = self._slice(low, high)[unique[run] - low]
        return out[inverse]

    def _slice(self, low: int, high: int) -> np.ndarray:
        try:
            return self.specs[low:high]
        except Exception as exc:  # a failed checksum or a truncated shard: name the place
            raise CacheError(
                f"{self.path}: windows {low}-{high - 1} could not be read "
                f"({type(exc).__name__}: {exc}); `chirpid-io verify {self.path}` lists every "
                "damaged chunk"
            ) from exc


def open_cache(path, config: SpectrogramConfig | None = None) -> Cache:
    """Open a finished cache; with ``config``, refuse one built with another config."""
    return Cache(path, config)
