"""The on-disk layout of a cache (format version 1) and the codecs of its arrays.

A cache is a directory holding a Zarr v3 group:

- ``specs``  (N, n_mels, frames) uint8 (rounded) or float16, sharded; each inner chunk
  carries a CRC32C so ``verify`` can name a damaged chunk.
- ``labels`` (N,) int32.
- ``windows.parquet`` and ``recordings.parquet`` beside the arrays.
- group attributes: format version, the SpectrogramConfig and its fingerprint, class
  names, per-band statistics, counts, provenance, and ``state`` ("building"/"complete").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
SPECS = "specs"
LABELS = "labels"
WINDOWS_TABLE = "windows.parquet"
RECORDINGS_TABLE = "recordings.parquet"
JOURNAL = "build-journal.jsonl"
LOCK = "build.lock"


def open_specs(path, mode: str = "r"):
    """The ``specs`` array (registering the band-delta codec first, for uninstalled copies)."""
    import zarr

    from .codec import register

    register()
    return zarr.open_array(Path(path) / SPECS, mode=mode)


#: ``StorageOptions.delta`` -> the chunk axes differenced, in order (1: mel, 2: frame)
DELTA_AXES = {"none": (), "band": (1,), "band+time": (1, 2)}


@dataclass(frozen=True)
class StorageOptions:
    """How ``specs`` is chunked and compressed; the defaults were chosen by measurement
    (``benchmarks/test_storage.py``, README "Storage").

    ``chunk_windows`` windows form one compressed chunk, the unit of a read: one, so a
    random batch decompresses only the windows it asks for (``shards.py`` reads them
    without zarr's per-chunk overhead); ``shard_windows`` windows form one file, the unit
    of an atomic write.
    ``delta`` (uint8 only) stores differences that zstd packs far tighter than the
    image (the ``chirpid.band_delta`` codec): ``"band+time"`` each value's difference from
    the band below, then from the frame before; ``"band"`` the first only; ``"none"``.
    """

    chunk_windows: int = 1
    shard_windows: int = 256
    compressor: str = "zstd"  # "zstd", "blosc-lz4" or "blosc-zstd"
    level: int = 3
    delta: str = "band+time"

    def __post_init__(self):
        from ..errors import ConfigError

        if self.chunk_windows <= 0 or self.shard_windows % self.chunk_windows:
            raise ConfigError(
                f"shard_windows ({self.shard_windows}) must be a positive multiple of "
                f"chunk_windows ({self.chunk_windows})"
            )
        if isinstance(self.delta, bool):  # caches written before "band+time" stored a flag
            object.__setattr__(self, "delta", "band" if self.delta else "none")
        if self.delta not in DELTA_AXES:
            raise ConfigError(f"unknown delta {self.delta!r}: use {', '.join(map(repr, DELTA_AXES))}")
        if self.compressor not in ("zstd", "blosc-lz4", "blosc-zstd"):
            raise ConfigError(f"unknown compressor {self.compressor!r}: use zstd, blosc-lz4 or blosc-zstd")

    def codecs(self, dtype: str) -> dict:
        """Keyword arguments for ``zarr.create_array`` (filters and compressors)."""
        import zarr.codecs as zc

        from .codec import BandDelta

        # differences of integers are exact; of float16 they would round, so no delta there
        filters = [BandDelta(axis=a) for a in DELTA_AXES[self.delta]] if dtype == "uint8" else []
        if self.compressor == "zstd":
            compressors = [zc.ZstdCodec(level=self.level)]
        else:
            shuffle = "bitshuffle" if dtype == "float16" else "shuffle"
            compressors = [zc.BloscCodec(cname=self.compressor[6:], clevel=self.level, shuffle=shuffle)]
        return {"filters": filters, "compressors": compressors + [zc.Crc32cCodec()]}
