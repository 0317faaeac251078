"""The on-disk layout of a cache (format version 2), its storage options and its metadata.

A cache is a folder that is a Zarr v3 group:

- ``specs``: (N, n_mels, frames) uint8 (rounded) or float16, sharded (``shards.py``);
  every inner chunk carries a CRC32C, so ``verify`` can name a damaged one.
- ``labels``: (N,) int32, each window's primary class.
- ``label_offsets`` (N + 1,) int64 and ``label_values`` (M,) int32: each window's full
  label set (primary first, then the secondary labels), window ``i`` holding
  ``label_values[label_offsets[i]:label_offsets[i + 1]]``.
- ``windows.parquet`` and ``recordings.parquet`` beside the arrays.
- group attributes: format version, cache id, state, the SpectrogramConfig and its
  fingerprint, storage options, class names, counts, per-band statistics and the exact
  integer sums they come from, provenance.

``labels`` and the label-set arrays are written whole, one chunk each, when a build
finishes; so are the tables. Shard files only ever grow at the end (a partly filled last
shard is rewritten with its old windows unchanged). So the files always hold the last
finished state as a prefix, and a reader that pins the counts of the attributes it read
stays consistent while another process appends (see ``reader.py``).

Everything here is plain data: the metadata JSON chirpid-io writes is generated from
these functions, so what ``open`` validates and what ``build`` writes cannot drift apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from ..errors import CacheError, ConfigError

FORMAT_VERSION = 2
GROUP_META = "zarr.json"
SPECS = "specs"
LABELS = "labels"
LABEL_OFFSETS = "label_offsets"
LABEL_VALUES = "label_values"
WINDOWS_TABLE = "windows.parquet"
RECORDINGS_TABLE = "recordings.parquet"
JOURNAL = "build-journal.jsonl"
LOCK = "build.lock"
#: The largest metadata file read: far above any real one, small enough to refuse junk fast.
META_LIMIT = 64 << 20

STATES = ("building", "complete")
#: ``StorageOptions.delta`` -> the chunk axes differenced, in order (1: mel, 2: frame)
DELTA_AXES = {"none": (), "band": (1,), "band+time": (1, 2)}
#: ``StorageOptions.delta`` for a predictor chosen per mel band (``chirpid.band_predict``)
PER_BAND = "per-band"
DELTAS = (*DELTA_AXES, PER_BAND)
COMPRESSORS = ("zstd",)


@dataclass(frozen=True)
class StorageOptions:
    """How ``specs`` is chunked and compressed; the defaults were chosen by measurement
    (``benchmarks/storage_corpora.py --sweep``, README "Storage").

    - ``chunk_windows``: windows per compressed chunk, the unit of a read. One, so a random
      batch decompresses only the windows it asks for.
    - ``shard_windows``: windows per shard file, the unit of an atomic write.
    - ``compressor`` and ``level``: zstd at level 3 (levels 9 and 19 save at most 1% and
      write 1.7-38x slower).
    - ``delta`` (uint8 only): store differences that zstd packs far tighter than the image
      (the ``chirpid.band_delta`` codec): ``"band+time"`` each value's difference from the
      band below, then from the frame before; ``"band"`` the first only; ``"none"``;
      ``"per-band"`` one of those four predictors chosen per mel band and window, as PNG
      chooses a filter per row (the ``chirpid.band_predict`` codec): 1-2% fewer bytes,
      slower CPU reads (README "Storage").
    """

    chunk_windows: int = field(default=1, metadata={"help": "windows per compressed chunk (the unit of a read)"})
    shard_windows: int = field(default=256, metadata={"help": "windows per shard file (the unit of a write)"})
    compressor: str = field(default="zstd", metadata={"help": "compressor of each chunk", "choices": COMPRESSORS})
    level: int = field(default=3, metadata={"help": "zstd level (1-22)"})
    delta: str = field(default="band+time", metadata={"help": "uint8: store differences along bands, then frames "
                                                              "('per-band': a predictor chosen per band)",
                                                      "choices": DELTAS})

    def __post_init__(self):
        for name in ("chunk_windows", "shard_windows", "level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"StorageOptions.{name} must be an integer, got {value!r}")
        if self.chunk_windows <= 0 or self.shard_windows % self.chunk_windows:
            raise ConfigError(
                f"StorageOptions: shard_windows ({self.shard_windows}) must be a positive multiple of "
                f"chunk_windows ({self.chunk_windows})"
            )
        if self.shard_windows > 1 << 16:
            raise ConfigError(f"StorageOptions.shard_windows ({self.shard_windows}) is above 65536 windows "
                              "per file; use fewer")
        if isinstance(self.delta, bool):  # caches written before "band+time" stored a flag
            object.__setattr__(self, "delta", "band" if self.delta else "none")
        if self.delta not in DELTAS:
            raise ConfigError(f"StorageOptions.delta: unknown {self.delta!r}; use {', '.join(map(repr, DELTAS))}")
        if self.compressor not in COMPRESSORS:
            raise ConfigError(f"StorageOptions.compressor: unknown {self.compressor!r}; use "
                              f"{', '.join(map(repr, COMPRESSORS))}")
        if not 1 <= self.level <= 22:
            raise ConfigError(f"StorageOptions.level must lie in 1..22 (zstd levels), got {self.level}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StorageOptions":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown StorageOptions fields: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def delta_axes(self, dtype: str) -> tuple[int, ...]:
        """Chunk axes differenced by ``chirpid.band_delta`` (() for ``"per-band"``)."""
        # differences of integers are exact; of float16 they would round, so none there
        return DELTA_AXES.get(self.delta, ()) if dtype == "uint8" else ()

    def band_predict(self, dtype: str) -> bool:
        """Whether chunks go through ``chirpid.band_predict`` (``delta="per-band"``, uint8)."""
        return self.delta == PER_BAND and dtype == "uint8"


#: What a cache stores (attribute ``store``): fixed windows' images, or whole recordings.
STORES = ("spectrogram", "waveform")
WAVES = "waves"
#: ``WaveformStorage.codec`` values (``pcm.METHODS``; kept here so metadata needs no zarr)
PCM_METHODS = ("flac", "delta-zstd")


@dataclass(frozen=True)
class WaveformStorage:
    """How a waveform cache's ``waves`` array is chunked and compressed (README
    "Waveform cache"; ``benchmarks/waveform_codecs.py`` measured the choices).

    - ``codec``: ``"flac"`` (about 0.46 of the int16 PCM bytes on the bundled recordings,
      0.30 on narrow-band ones; decodes about 1,400 audio-s per CPU-s) or ``"delta-zstd"``
      (0.68 / 0.61, about 3x faster to decode).
    - ``chunk_seconds``: audio per chunk row, the unit of a read: a 5 s crop decodes 5-6 s.
    - ``shard_chunks``: rows per shard file, the unit of an atomic write.
    """

    codec: str = field(default="flac", metadata={"help": "lossless codec of each chunk", "choices": PCM_METHODS})
    chunk_seconds: float = field(default=1.0, metadata={"help": "seconds of audio per chunk (the unit of a read)"})
    shard_chunks: int = field(default=256, metadata={"help": "chunks per shard file (the unit of a write)"})
    level: int = field(default=3, metadata={"help": "zstd level of delta-zstd (1-22)"})

    def __post_init__(self):
        if self.codec not in PCM_METHODS:
            raise ConfigError(f"WaveformStorage.codec: unknown {self.codec!r}; use {', '.join(map(repr, PCM_METHODS))}")
        if isinstance(self.chunk_seconds, bool) or not isinstance(self.chunk_seconds, (int, float)) or not (
                0.05 <= self.chunk_seconds <= 60):
            raise ConfigError(f"WaveformStorage.chunk_seconds must lie in [0.05, 60], got {self.chunk_seconds!r}")
        for name, low, high in (("shard_chunks", 1, 1 << 16), ("level", 1, 22)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"WaveformStorage.{name} must be an integer in [{low}, {high}], got {value!r}")

    # the names the shard code reads for either kind of storage
    chunk_windows = 1
    compressor = "zstd"

    @property
    def shard_windows(self) -> int:
        return self.shard_chunks

    def chunk_samples(self, sample_rate: int) -> int:
        return int(round(self.chunk_seconds * sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WaveformStorage":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown WaveformStorage fields: {', '.join(unknown)}")
        return cls(**data)

    def delta_axes(self, dtype: str) -> tuple[int, ...]:
        return ()

    def band_predict(self, dtype: str) -> bool:
        return False


@dataclass(frozen=True)
class Layout:
    """The main array of a cache: its name, one row's shape, dtype and storage.

    ``spectrogram``: ``specs`` (N, n_mels, frames), a row per window. ``waveform``:
    ``waves`` (N, chunk_samples) int16, a row per chunk of a recording's audio (each
    recording starts a new row; its last row is zero-padded; ``recordings.parquet``
    gives its first row and exact ``samples``).
    """

    kind: str
    array: str
    row_shape: tuple[int, ...]
    dtype: str
    storage: object  #: StorageOptions or WaveformStorage
    sample_rate: int

    @classmethod
    def of(cls, kind: str, config, storage) -> "Layout":
        if kind == "waveform":
            storage = storage if isinstance(storage, WaveformStorage) else WaveformStorage()
            return cls(kind, WAVES, (storage.chunk_samples(config.sample_rate),), "int16", storage,
                       config.sample_rate)
        if kind != "spectrogram":
            raise ConfigError(f"unknown store {kind!r}; use one of {', '.join(STORES)}")
        storage = storage if isinstance(storage, StorageOptions) else StorageOptions()
        return cls(kind, SPECS, tuple(config.shape), config.storage_dtype, storage, config.sample_rate)

    @classmethod
    def from_attrs(cls, attrs: dict, config) -> "Layout":
        kind = attrs.get("store", "spectrogram")
        options = WaveformStorage if kind == "waveform" else StorageOptions
        return cls.of(kind, config, options.from_dict(attrs["storage"]))

    def metadata(self, n_rows: int) -> dict:
        """The array's ``zarr.json`` for ``n_rows`` rows."""
        if self.kind == "waveform":
            return waves_metadata(n_rows, self.row_shape[0], self.storage, self.sample_rate)
        return specs_metadata(n_rows, self.row_shape, self.dtype, self.storage)


# --------------------------------------------------------------------------- array metadata


def specs_metadata(n_windows: int, window_shape: tuple[int, int], dtype: str, storage: StorageOptions) -> dict:
    """The ``specs/zarr.json`` document, as zarr-python writes it for these options."""
    filters = [{"name": "chirpid.band_delta", "configuration": {"axis": a}} for a in storage.delta_axes(dtype)]
    if storage.band_predict(dtype):
        filters = [{"name": "chirpid.band_predict"}]
    inner = [*filters, {"name": "bytes"} if dtype == "uint8" else {"name": "bytes", "configuration": {"endian": "little"}},
             {"name": "zstd", "configuration": {"level": storage.level, "checksum": False}}, {"name": "crc32c"}]
    return {
        "shape": [n_windows, *window_shape],
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [storage.shard_windows, *window_shape]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [storage.chunk_windows, *window_shape],
                "codecs": inner,
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end",
            },
        }],
        "attributes": {},
        "dimension_names": ["window", "mel", "frame"],
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def waves_metadata(n_rows: int, chunk_samples: int, storage: WaveformStorage, sample_rate: int) -> dict:
    """The ``waves/zarr.json`` document: int16 rows, each inner chunk ``bytes`` (little
    endian) -> ``chirpid.pcm`` -> CRC32C, sharded as ``specs`` is."""
    pcm = {"name": "chirpid.pcm", "configuration": {"method": storage.codec, "level": storage.level,
                                                   "sample_rate": sample_rate}}
    return {
        "shape": [n_rows, chunk_samples],
        "data_type": "int16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [storage.shard_chunks, chunk_samples]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [1, chunk_samples],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, pcm, {"name": "crc32c"}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end",
            },
        }],
        "attributes": {},
        "dimension_names": ["chunk", "sample"],
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def vector_metadata(length: int, dtype: str, fill_value: int, dimension: str) -> dict:
    """``zarr.json`` of a 1-d array stored as one chunk (``c/0``): bytes, zstd, CRC32C."""
    return {
        "shape": [length],
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(length, 1)]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                   {"name": "zstd", "configuration": {"level": 3, "checksum": False}}, {"name": "crc32c"}],
        "attributes": {},
        "dimension_names": [dimension],
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def group_metadata(attrs: dict) -> dict:
    return {"zarr_format": 3, "node_type": "group", "attributes": attrs}


def dumps(document: dict) -> bytes:
    return json.dumps(document, indent=2, allow_nan=False).encode()


def loads(raw: bytes, where: str) -> dict:
    """Parse a metadata file; anything but a JSON object is a CacheError naming ``where``."""
    try:
        document = json.loads(raw.decode("utf-8"))  # NaN parses: the checks below name it
    except (UnicodeDecodeError, ValueError) as exc:
        raise CacheError(f"{where}: not valid JSON ({_short(exc)}); the file is damaged or truncated. "
                         "Fix: rebuild the cache (build-cache --overwrite)") from None
    if not isinstance(document, dict):
        raise CacheError(f"{where}: holds a JSON {type(document).__name__}, not an object; the file is damaged. "
                         "Fix: rebuild the cache (build-cache --overwrite)")
    return document


# --------------------------------------------------------------------------- attribute checks


def attribute_problems(attrs: dict) -> list[str]:
    """What is wrong with a cache's group attributes, one finding per line ([] if nothing).

    Checks the keys and their types, the config against its fingerprint and the storage
    options; for a cache that finished at least once, also counts and statistics (finite,
    one value per mel band, counts that add up).
    """
    from ..config import SpectrogramConfig

    problems = []
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version < FORMAT_VERSION:
            return [f"cache format {version} was written by an older chirpid-io; this one reads format "
                    f"{FORMAT_VERSION}. Fix: rebuild it with `chirpid-io build-cache SOURCE OUT --overwrite`"]
        return [f"format_version is {version!r}, this chirpid-io reads format {FORMAT_VERSION}"]
    for key, kind in (("cache_id", str), ("state", str), ("config", dict), ("fingerprint", str), ("storage", dict),
                      ("class_names", list)):
        if not isinstance(attrs.get(key), kind):
            problems.append(f"attribute {key!r} is missing or not a {kind.__name__}")
    if problems:
        return problems
    if attrs["state"] not in STATES:
        problems.append(f"attribute 'state' is {attrs['state']!r}, not one of {STATES}")
    try:
        config = SpectrogramConfig.from_dict(attrs["config"])
    except (ConfigError, TypeError) as exc:
        return problems + [f"attribute 'config' is not a valid SpectrogramConfig ({exc})"]
    if config.fingerprint() != attrs["fingerprint"]:
        problems.append(f"attribute 'fingerprint' ({attrs['fingerprint']}) does not match the config it is stored "
                        f"with ({config.fingerprint()}): the attributes were edited")
    kind = attrs.get("store", "spectrogram")
    if kind not in STORES:
        problems.append(f"attribute 'store' is {kind!r}, not one of {', '.join(STORES)}")
    try:
        (WaveformStorage if kind == "waveform" else StorageOptions).from_dict(attrs["storage"])
    except (ConfigError, TypeError) as exc:
        problems.append(f"attribute 'storage' is not valid ({exc})")
    names = attrs["class_names"]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        problems.append("attribute 'class_names' must be distinct strings")
    if "counts" in attrs:
        problems += _snapshot_problems(attrs, config.n_mels, len(names))
    elif attrs["state"] == "complete":
        problems.append("a complete cache has no 'counts' attribute")
    return problems


def _snapshot_problems(attrs: dict, n_mels: int, n_classes: int) -> list[str]:
    problems = []
    counts = attrs["counts"]
    if not isinstance(counts, dict):
        return ["attribute 'counts' is not an object"]
    for key in ("windows", "recordings", "skipped_recordings"):
        value = counts.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"counts.{key} is {value!r}, not a count (an integer >= 0)")
    per_class = counts.get("per_class")
    if not isinstance(per_class, dict) or not all(isinstance(v, int) and v >= 0 for v in per_class.values()):
        problems.append("counts.per_class is not a mapping of class name to count")
    elif not problems and sum(per_class.values()) != counts["windows"]:
        problems.append(f"counts.per_class adds up to {sum(per_class.values())}, counts.windows says {counts['windows']}")
    stats = attrs.get("stats")
    if not isinstance(stats, dict):
        return problems + ["attribute 'stats' is missing"]
    for key in ("mean", "std"):
        values = stats.get(key)
        if not isinstance(values, list) or len(values) != n_mels:
            problems.append(f"stats.{key} must hold {n_mels} values (one per mel band)")
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            bad = sum(1 for v in values if not (isinstance(v, (int, float)) and math.isfinite(v)))
            problems.append(f"stats.{key} holds {bad} non-finite or non-numeric value(s) (NaN or Inf)")
        elif key == "std" and min(values) < 0:
            problems.append("stats.std holds negative values")
    sums = attrs.get("band_sums")
    if not isinstance(sums, dict) or not all(
            isinstance(sums.get(k), list) and len(sums[k]) == n_mels and all(type(v) is int for v in sums[k])
            for k in ("sum", "sum_sq")) or type(sums.get("count")) is not int:
        problems.append(f"attribute 'band_sums' must hold 'count' and {n_mels} integer 'sum' and 'sum_sq' values")
    return problems


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
