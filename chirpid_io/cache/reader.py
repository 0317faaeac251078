"""open_cache: the last finished state of a cache, validated, pinned, and read in batches.

Opening checks what the attributes claim against the files before anything acts on it:
the metadata must be readable JSON with the keys and types of format 2, the fingerprint
must match the stored config, the ``specs`` array must have the config's dtype and window
shape and at least as many windows as counted, every shard file the count implies must be
present, ``labels`` must be as long as counted and name known classes, and the statistics
must be finite. A cache that fails any check is refused with the file and the finding
(``verify`` lists them all), so nothing downstream trains on zeros, NaNs or a count of
10**12.

A ``Cache`` pins the counts it read: it serves exactly those windows, table rows and
label sets even if another process appends and finishes meanwhile (appends only add at
the end of every file; see ``format.py``). While an append runs, a new ``Cache`` opens the
last finished state. Only a cache that never finished is refused, with whether a build is
running now or was interrupted.

``path`` may be an object-store URL (``s3://bucket/prefix``, ``gs://``, ``az://``): the
same checks and reads go through ``objects.ObjectStore`` (``files.open_store``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..config import SpectrogramConfig
from ..errors import CacheError, FingerprintMismatchError
from ..kernels import value_scale
from ..text import shown
from . import format as fmt
from .files import CacheFileError, open_store
from .shards import ChunkError, ShardCodec
from .vectors import read_table, read_vector

#: What a message about damage ends with.
VERIFY_HINT = "`chirpid-io verify {path}` lists every finding; rebuild with `build-cache ... --overwrite`"


class Cache:
    """A read-only view of a cache's last finished state.

    Cheap to pickle (for DataLoader workers): tables and label sets load on first use, in
    whichever process uses them.
    """

    def __init__(self, path, config: SpectrogramConfig | None = None):
        self.store = open_store(path)
        self.path = self.store.root  # a Path, or an ObjectURL (a str) for an object store
        attrs = _open_attrs(self.store)
        self.attrs = attrs
        self.config = SpectrogramConfig.from_dict(attrs["config"])
        if config is not None and config.fingerprint() != self.config.fingerprint():
            raise FingerprintMismatchError(f"cache {shown(self.path)}", self.config.diff(config))
        self.cache_id: str = attrs["cache_id"]
        self.fingerprint: str = attrs["fingerprint"]
        #: the main array: ``specs`` (a window per row) or ``waves`` (a chunk of audio per row)
        self.layout = fmt.Layout.from_attrs(attrs, self.config)
        #: "spectrogram" or "waveform"
        self.kind: str = self.layout.kind
        self.storage = self.layout.storage
        counts = attrs["counts"]
        self._length = counts["windows"]
        self._n_recordings = counts["recordings"]
        #: class names as of the pinned state (an append only adds at the end)
        self.class_names: list[str] = list(attrs["class_names"])
        self.stats = {k: np.asarray(attrs["stats"][k], dtype=np.float64) for k in ("mean", "std")}
        #: windows the statistics were computed over (their count is of values per band)
        self.stats_windows = int(attrs["stats"].get("count", 0) or 0) // self.config.frames
        self.chunk_windows: int = self.storage.chunk_windows
        self.shard_windows: int = self.storage.shard_windows
        #: multiply stored values by this to get the recipe's [0, 1] images
        self.value_scale = value_scale(self.config.storage_dtype)
        self._shards = ShardCodec.for_layout(self.store, self.layout)
        problem = specs_problem(self.store, self.layout, self._length)
        if problem is None:
            n_missing, first = missing_shards(self.store, self._shards, self._length)
            if n_missing:
                problem = (f"{n_missing} of the {self._shards.n_shards(self._length)} shard files its "
                           f"{self._length} windows need are missing or unusable (first: {first})")
        if problem is not None:
            raise CacheError(f"{shown(self.path)}: {problem}; " + VERIFY_HINT.format(path=shown(self.path)))
        labels = _damage_as_cache_error(read_vector, self.store, fmt.LABELS, "int32", self._length)
        labels = labels[: self._length].astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            bad = int(((labels < 0) | (labels >= len(self.class_names))).sum())
            raise CacheError(f"{shown(self.path / fmt.LABELS)}: {bad} label(s) outside the {len(self.class_names)} "
                             "classes; " + VERIFY_HINT.format(path=shown(self.path)))
        #: (N,) int64 primary class of each window
        self.labels = labels

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return (f"Cache({str(self.path)!r}, windows={len(self)}, classes={len(self.class_names)}, "
                f"dtype={self.config.storage_dtype})")

    def __getstate__(self):
        # only plain data crosses process boundaries; tables reopen lazily on the other side
        return {k: v for k, v in self.__dict__.items()
                if k not in ("windows", "recordings", "label_sets", "specs", "_spans")}

    @cached_property
    def windows(self):
        """One row per window (pyarrow.Table): window_id, recording_id, path, label,
        class_name, labels (the label set, primary first), group, start_seconds, rms."""
        return _damage_as_cache_error(read_table, self.store, fmt.WINDOWS_TABLE, self._length).slice(0, self._length)

    @cached_property
    def recordings(self):
        """One row per input recording (pyarrow.Table), skipped ones with their reason."""
        table = _damage_as_cache_error(read_table, self.store, fmt.RECORDINGS_TABLE, self._n_recordings)
        return table.slice(0, self._n_recordings)

    @cached_property
    def label_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets (N + 1,) int64, values (M,) int32)``: window ``i``'s classes are
        ``values[offsets[i]:offsets[i + 1]]``, its primary class first."""
        n = self._length
        offsets = _damage_as_cache_error(read_vector, self.store, fmt.LABEL_OFFSETS, "int64", n + 1)[: n + 1]
        if offsets[0] != 0 or np.any(np.diff(offsets) < 1):
            raise CacheError(f"{shown(self.path / fmt.LABEL_OFFSETS)}: offsets are not increasing; "
                             + VERIFY_HINT.format(path=shown(self.path)))
        values = _damage_as_cache_error(read_vector, self.store, fmt.LABEL_VALUES, "int32", int(offsets[-1]))
        values = values[: int(offsets[-1])]
        if (values.size and (values.min() < 0 or values.max() >= len(self.class_names))) or not np.array_equal(
                values[offsets[:-1]], self.labels):
            raise CacheError(f"{shown(self.path / fmt.LABEL_VALUES)}: label sets disagree with the labels or name "
                             "unknown classes; " + VERIFY_HINT.format(path=shown(self.path)))
        return offsets, values

    def multi_hot(self, indices, secondary_weight: float = 1.0) -> np.ndarray:
        """(len(indices), n_classes) float32 targets: 1 for each window's primary class,
        ``secondary_weight`` for its other classes, 0 elsewhere."""
        offsets, values = self.label_sets
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        sizes = offsets[indices + 1] - offsets[indices]
        rows = np.repeat(np.arange(indices.size), sizes)
        # position of every label of every asked window in ``values``, without a Python loop
        within = np.arange(rows.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        out = np.zeros((indices.size, len(self.class_names)), dtype=np.float32)
        out[rows, values[np.repeat(offsets[indices], sizes) + within]] = secondary_weight
        out[np.arange(indices.size), self.labels[indices]] = 1.0
        return out

    @property
    def delta_axes(self) -> tuple[int, ...]:
        """Axes of a (window, mel, frame) batch that ``read(..., residuals=True)`` leaves
        differenced, in the order they were differenced: (1, 2), (1,) or () for none
        (also for ``delta="per-band"``, whose stored form :meth:`undo_residuals` undoes)."""
        return self._shards.delta_axes

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """Shape of one window as ``read(..., residuals=True)`` gives it: ``config.shape``,
        or (n_mels + header rows, frames) for ``delta="per-band"`` (``predict.py``)."""
        return self._shards.stored_window_shape

    def undo_residuals(self, x):
        """A torch batch as ``read(..., residuals=True)`` gives it (on any device) -> the
        windows: int32 in 0..255 for uint8 caches (wrapping sums in int32: CUDA has no
        uint8 cumsum), ``x`` itself when nothing is stored as differences."""
        import torch

        if self._shards.band_predict:
            from .predict import undo_stored

            return undo_stored(x)
        for axis in reversed(self.delta_axes):  # last differenced first
            x = torch.cumsum(x, dim=axis, dtype=torch.int32).bitwise_and_(255)
        return x

    def read(self, indices, *, residuals: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Windows at ``indices`` (in that order), stored dtype, (len, n_mels, frames); of
        a waveform cache, chunk rows of int16 audio (len, chunk_samples).

        ``residuals=True`` skips undoing the stored differences (:attr:`delta_axes`):
        values come back as stored, wrapping uint8 differences, (len, *stored_shape), for
        a caller that undoes them elsewhere (the loader, on the GPU: :meth:`undo_residuals`).
        ``out``: an array of that shape and dtype to fill (e.g. in shared memory) instead
        of a new one.

        The indices are sorted, so every chunk touched is read and decompressed once
        however the batch is ordered; shard files are read directly (``shards.py``).
        A damaged or missing chunk raises CacheError naming the windows and the file.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window index out of range for a cache of {len(self)} windows")
        dtype = self.layout.dtype
        shape = (indices.size, *(self.stored_shape if residuals else self.layout.row_shape))
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != np.dtype(dtype):
            raise ValueError(f"out must be {shape} {dtype}, got {out.shape} {out.dtype}")
        order = np.argsort(indices, kind="stable")
        try:
            self._shards.read_sorted(indices[order], out, order, keep_differences=residuals)
        except ChunkError as exc:
            raise CacheError(f"{shown(self.path)}: {exc}; " + VERIFY_HINT.format(path=shown(self.path))) from None
        return out

    @cached_property
    def specs(self):
        """The main array (``specs``, or ``waves`` of a waveform cache) through zarr-python
        (for interoperability; ``read`` is faster and refuses missing chunks where zarr
        returns zeros)."""
        import zarr

        from . import pcm
        from .codec import register

        register()
        pcm.register()
        if self.store.kind != "local":
            return zarr.open_array(self.store.zarr_store(self.layout.array), mode="r")
        return zarr.open_array(self.path / self.layout.array, mode="r")

    # -- waveform caches ---------------------------------------------------------------
    @property
    def chunk_samples(self) -> int:
        """Samples per row of a waveform cache."""
        self._need_waveform("chunk_samples")
        return self.layout.row_shape[0]

    def wave_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(first row, samples) int64 of every recording with audio in a waveform cache,
        in cache order: a recording's audio is rows ``first .. first + ceil(samples /
        chunk_samples)``, its last row zero-padded."""
        self._need_waveform("wave_spans")
        if "_spans" not in self.__dict__:
            table = self.recordings
            first = np.asarray(table.column("first_window").to_numpy(zero_copy_only=False), dtype=np.int64)
            rows = np.asarray(table.column("n_windows").to_numpy(zero_copy_only=False), dtype=np.int64)
            samples = table.column("samples").to_numpy(zero_copy_only=False) if "samples" in table.column_names \
                else np.zeros(len(rows))
            keep = rows > 0
            first, rows = first[keep], rows[keep]
            samples = np.asarray(np.nan_to_num(samples[keep].astype(np.float64)), dtype=np.int64)
            width = self.chunk_samples
            if np.any(-(-samples // width) != rows) or np.any(first + rows > len(self)):
                raise CacheError(f"{shown(self.path / fmt.RECORDINGS_TABLE)}: recordings' sample counts disagree "
                                 "with their rows; " + VERIFY_HINT.format(path=shown(self.path)))
            self._spans = (first, samples)
        return self._spans

    def recordings_of_rows(self, rows=None) -> np.ndarray | None:
        """Positions in :meth:`wave_spans` of the recordings that own ``rows`` (None: all)."""
        if rows is None:
            return None
        first, samples = self.wave_spans()
        rows = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        owner = np.searchsorted(first, rows, side="right") - 1
        return np.unique(owner[owner >= 0])

    def _need_waveform(self, what: str) -> None:
        if self.kind != "waveform":
            raise CacheError(f"{shown(self.path)}: {what} needs a waveform cache, this one stores spectrograms "
                             "(build one with `chirpid-io build-cache SOURCE OUT --store waveform`)")


def open_cache(path, config: SpectrogramConfig | None = None) -> Cache:
    """Open a cache's last finished state; with ``config``, refuse one built with another config."""
    return Cache(path, config)


# --------------------------------------------------------------------------- checks


def _open_attrs(store) -> dict:
    root = store.root
    if store.kind == "local" and not root.exists():
        raise CacheError(f"{shown(root)}: no such folder; build a cache with `chirpid-io build-cache SOURCE {shown(root)}`")
    problem = store.check(fmt.GROUP_META)
    if problem == "is missing":
        raise CacheError(f"{shown(root)}: not a chirpid-io cache (no zarr.json); build one with "
                         f"`chirpid-io build-cache SOURCE {shown(root)}`")
    if problem is not None:
        raise CacheError(f"{shown(root / fmt.GROUP_META)}: {problem}; " + VERIFY_HINT.format(path=shown(root)))
    document = fmt.loads(store.read(fmt.GROUP_META, fmt.META_LIMIT), shown(root / fmt.GROUP_META))
    attrs = document.get("attributes")
    if document.get("node_type") != "group" or not isinstance(attrs, dict):
        raise CacheError(f"{shown(root / fmt.GROUP_META)}: not the metadata of a chirpid-io cache (no group attributes)")
    problems = fmt.attribute_problems(attrs)
    if problems:
        first = problems[0]
        raise CacheError(f"{shown(root)}: {first}" + ("" if "Fix:" in first else "; " + VERIFY_HINT.format(path=shown(root))))
    if "counts" not in attrs:
        raise CacheError(f"{shown(root)}: the first build of this cache has not finished: {store.build_status()}. "
                         "Run the same `chirpid-io build-cache` command again to complete it")
    return attrs


def specs_problem(store, layout: fmt.Layout, n_windows: int) -> str | None:
    """What is wrong with the main array's ``zarr.json`` (``specs`` or ``waves``), or None."""
    key = f"{layout.array}/zarr.json"
    try:
        meta = fmt.loads(store.read(key, fmt.META_LIMIT), key)
    except CacheError as exc:
        return str(exc)
    expected = layout.metadata(0)
    shape = meta.get("shape")
    if meta.get("data_type") != expected["data_type"]:
        return (f"{key} says data_type {meta.get('data_type')!r}, the cache's config says "
                f"{expected['data_type']!r}")
    rows = list(layout.row_shape)
    if not isinstance(shape, list) or len(shape) != 1 + len(rows) or shape[1:] != rows:
        return f"{key} says shape {shape!r}, the config gives rows of {rows}"
    if not isinstance(shape[0], int) or shape[0] < n_windows:
        return f"{key} holds {shape[0]!r} windows, the attributes count {n_windows}"
    for field in ("chunk_grid", "codecs", "fill_value", "chunk_key_encoding"):
        if meta.get(field) != expected[field]:
            return f"{key}: its {field} is not what the cache's storage options say"
    return None


def missing_shards(store, codec: ShardCodec, n_windows: int) -> tuple[int, str | None]:
    """(how many of the shard files ``n_windows`` need are missing or unusable, and the
    first of them with what is wrong with it); one folder listing, so a count of 10**12
    costs nothing."""
    needed = codec.n_shards(n_windows)
    names = sorted(int(n) for n in store.listdir(f"{codec.array}/c") if n.isdigit() and int(n) < needed)
    present, first = 0, None
    for i, problem in zip(names, store.check_many([codec.shard_key(i) for i in names])):
        if problem is None:
            present += 1
        elif first is None:
            first = f"{codec.shard_key(i)} {problem}"
    if present == needed:
        return 0, None
    gap = next((i for i in range(needed) if i >= len(names) or names[i] != i), None)
    if gap is not None and (first is None or gap < int(first.split("/")[2])):
        first = f"{codec.shard_key(gap)} is missing"
    return needed - present, first


def _damage_as_cache_error(function, *args):
    try:
        return function(*args)
    except CacheFileError as exc:
        raise CacheError(f"{exc}; " + VERIFY_HINT.format(path=shown(exc.root))) from None
