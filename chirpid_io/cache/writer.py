"""CacheWriter: appends spectrogram windows to a cache, shard by shard, crash-safely.

Why it never loses data:
- ``specs`` is written one whole shard file at a time, through a temporary name, fsync and
  a rename (``files.LocalStore.write``), so a file is either old or new, never torn; a
  partly filled last shard is rewritten with its old windows unchanged.
- After each shard, one line is appended (and fsync'd) to the build journal naming the
  recordings whose windows are now all on disk (``journal.py``). A shard written but not
  journaled is simply written again, identically.
- A cache that finished once has its truth in its attributes and tables; the writer starts
  from that state and adds the journal's later lines on top. A journal that is missing,
  damaged or disagrees is rebuilt from the finished state (and said so in ``notes``); damage
  in lines after it stops the build with the line number. Nothing a writer does can leave
  a cache with fewer windows than it had, except ``build-cache --overwrite``.
- ``labels``, the label sets, the tables and finally the attributes are rewritten whole,
  in that order, when the build finishes. Until the attributes say otherwise, readers see
  the last finished state (``reader.py``), even while an append runs.
- One writer at a time (``lock.py``; on an object store a lock object, ``objects.py``).

On an object store (``s3://...``, ``objects.py``) the same holds with whole-object puts in
place of renames and one object per journal line in place of an appended file.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import SpectrogramConfig
from ..errors import CacheError, ConfigError, FingerprintMismatchError
from ..text import shown
from . import format as fmt
from .files import open_store
from .journal import Entry, base_entry, read_journal
from .shards import ShardCodec
from .stats import BandSums, band_sums
from .vectors import read_table, read_vector, write_table, write_vector

#: Columns of recordings.parquet the builder and the writer fill in; an input's own column
#: of the same name is kept as ``source_<name>``. The input's other columns (``source``) go
#: to both tables: on every window of the recording too.
BASE_COLUMNS = ("path", "class_name", "group", "manifest_index", "status", "reason", "duration_seconds", "sample_rate", "channels",
                "size_bytes", "content_hash", "recording_id", "label", "first_window", "n_windows", "labels",
                "png_files", "samples", "source")

#: Order of recordings.parquet's own columns.
RECORDING_COLUMNS = ("path", "class_name", "group", "manifest_index", "duration_seconds", "sample_rate", "channels",
                     "size_bytes", "content_hash", "status", "reason", "samples", "png_files", "recording_id", "label",
                     "first_window", "n_windows", "labels")


class CacheWriter:
    """Open (or create) the cache at ``path`` for writing; use as a context manager.

    ``storage`` applies to a new cache; for an existing one it must equal the stored
    options (or be None). A ``format.WaveformStorage`` makes (or must find) a waveform
    cache, whose rows are chunks of each recording's int16 audio (``add_windows`` then
    takes those rows, and the band sums of the recording's windows for the statistics).
    ``store`` ("spectrogram" or "waveform"; default: told by ``storage``, or the existing
    cache's) must match an existing cache. ``notes`` collects what the writer repaired on
    the way in.
    """

    def __init__(self, path, config: SpectrogramConfig,
                 storage: fmt.StorageOptions | fmt.WaveformStorage | None = None, store: str | None = None):
        self.store = open_store(path)
        self.path = self.store.root  # a Path, or the URL of a cache on an object store
        self.config = config
        self.notes: list[str] = []
        if self.store.kind == "local":
            _refuse_foreign_folder(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            _refuse_foreign_prefix(self.store)
        if store is not None and store not in fmt.STORES:
            raise ConfigError(f"unknown store {store!r}; use one of {', '.join(fmt.STORES)}")
        if store is not None and storage is not None and (store == "waveform") != isinstance(storage,
                                                                                         fmt.WaveformStorage):
            raise ConfigError(f"a {store} cache with {type(storage).__name__}: give the storage options of its kind")
        self._store_kind = store or (("waveform" if isinstance(storage, fmt.WaveformStorage) else "spectrogram")
                                     if storage is not None else None)
        self._lock = self.store.take_lock()
        try:
            self._open(storage)
        except BaseException:
            self._lock.close()
            raise

    # -- opening ------------------------------------------------------------------------
    def _open(self, storage) -> None:
        if self.store.exists(fmt.GROUP_META):
            self.attrs = _read_attrs(self.store)
            self._check_compatible(storage)
            self.layout = fmt.Layout.from_attrs(self.attrs, self.config)
        else:
            kind = self._store_kind or "spectrogram"
            self.layout = fmt.Layout.of(kind, self.config, storage)
            self.attrs = {
                "format_version": fmt.FORMAT_VERSION, "cache_id": uuid.uuid4().hex, "store": kind,
                "state": "building", "config": self.config.to_dict(), "fingerprint": self.config.fingerprint(),
                "storage": self.layout.storage.to_dict(), "class_names": [],
            }
            self._write_specs_metadata(0)
            self._write_attrs()
        self.storage = self.layout.storage
        self.kind = self.layout.kind
        self.codec = ShardCodec.for_layout(self.store, self.layout)
        self._remove_stale_temporaries()
        self._load_state()
        shard = self.storage.shard_windows
        # windows [buffer_start, n_committed) are on disk and are read back so the next
        # write of their shard rewrites it whole
        self._buffer_start = (self.n_committed // shard) * shard
        kept = np.empty((self.n_committed - self._buffer_start, *self.layout.row_shape), self.layout.dtype)
        if len(kept):
            self.codec.read_sorted(np.arange(self._buffer_start, self.n_committed), kept)
        self._images = [kept]
        self._n_added = self.n_committed
        self._written_end = self.n_committed
        self._specs_length = max(self.n_committed, 0)
        self._pending: list[dict] = []  # {"row", "windows", "sums", "open", "extra"} in build order
        self.changed = False  # set by the first add_recording

    def _check_compatible(self, storage) -> None:
        built_with = SpectrogramConfig.from_dict(self.attrs["config"])
        if built_with.fingerprint() != self.config.fingerprint():
            raise FingerprintMismatchError(
                f"cache {shown(self.path)}", built_with.diff(self.config),
                fix="Run with the config it was built with, start over in place with --overwrite (the old "
                    "cache is removed only once the new one is complete), or choose a new folder.")
        kind = self.attrs.get("store", "spectrogram")
        if self._store_kind is not None and self._store_kind != kind:
            asked = self._store_kind
            raise ConfigError(f"cache {shown(self.path)} is a {kind} cache; an append cannot make it a {asked} one. "
                              f"Fix: leave --store out (or give --store {kind}), or build into a new folder")
        if storage is not None and storage.to_dict() != self.attrs["storage"]:
            stored = type(storage).from_dict(self.attrs["storage"])
            differ = ", ".join(f"{k}: {getattr(stored, k)!r} there, {getattr(storage, k)!r} asked"
                               for k in stored.to_dict() if getattr(stored, k) != getattr(storage, k))
            raise ConfigError(f"cache {shown(self.path)} is stored with other StorageOptions ({differ}); an append "
                              "keeps the cache's own. Fix: leave the storage options out, or rebuild with --overwrite")

    def _load_state(self) -> None:
        """Committed recordings, window rows, sums and class names: the finished state
        (when there is one) plus the journal's later lines."""
        n_mels = self.config.n_mels
        raw = self.store.read(fmt.JOURNAL) if self.store.exists(fmt.JOURNAL) else b""
        reading = read_journal(raw, n_mels)
        journal = shown(self.store.describe(fmt.JOURNAL))
        counts = self.attrs.get("counts")
        entries = reading.entries
        if counts is None:  # never finished: the journal is all there is
            if reading.damaged:
                line, problem = reading.damaged
                raise CacheError(
                    f"{journal}: line {line} is damaged ({problem}). It and the {reading.lines_after_damage} line(s) "
                    "after it are the only record of windows already on disk, and this cache never finished, so "
                    f"there is nothing to rebuild them from. Fix: delete line {line} and every later line (their "
                    "recordings are built again), or start over with --overwrite")
        else:
            n_snap, r_snap = counts["windows"], counts["recordings"]
            pre = [e for e in entries if e.end <= n_snap and e.recordings[-1]["recording_id"] < r_snap]
            agrees = (bool(pre) and pre[-1].end == n_snap and pre[-1].recordings[-1]["recording_id"] == r_snap - 1
                      and sum((e.sums for e in pre), BandSums.zero(n_mels)).to_dict() == self.attrs["band_sums"]
                      and all(e.first_window == (pre[i - 1].end if i else 0) for i, e in enumerate(pre)))
            post = entries[len(pre):] if agrees else []
            if reading.damaged and agrees and reading.damaged[0] > (pre[-1].line if pre else 0):
                line, problem = reading.damaged
                raise CacheError(
                    f"{journal}: line {line} is damaged ({problem}). The finished cache ({n_snap} windows) is "
                    f"intact, but this line and the {reading.lines_after_damage} after it record an unfinished "
                    "append whose windows are on disk and cannot be matched to their recordings. Fix: delete "
                    f"line {line} and every later line (those recordings are built again), or rebuild with --overwrite")
            if not agrees:
                why = ("is missing" if not raw else f"line {reading.damaged[0]} is damaged ({reading.damaged[1]})"
                       if reading.damaged else "disagrees with the finished cache")
                self.notes.append(f"{journal} {why}: rebuilt it from the finished cache's attributes and tables "
                                  f"({n_snap} windows); an unfinished append, if any, is built again")
                entries = [self._entry_from_tables(n_snap, r_snap)]
                reading.torn = False
                self.store.write(fmt.JOURNAL, entries[0].to_line())
            else:
                entries = pre + post
        if reading.torn:  # a line cut short by a crash committed nothing
            self.store.truncate(fmt.JOURNAL, reading.good_bytes)
        self.recordings = [r for e in entries for r in e.recordings]
        self.window_rows = [w for e in entries for w in e.windows]
        self.sums = sum((e.sums for e in entries), BandSums.zero(n_mels))
        self.class_names = list(self.attrs.get("class_names", []))
        if entries and len(entries[-1].class_names) > len(self.class_names):
            self.class_names = list(entries[-1].class_names)
        self.n_committed = len(self.window_rows)
        self._floor = counts["windows"] if counts else 0  # never finish with fewer

    def _entry_from_tables(self, n_windows: int, n_recordings: int) -> Entry:
        """The finished state as one journal entry, from the attributes and the tables."""
        try:
            windows = read_table(self.store, fmt.WINDOWS_TABLE, n_windows).slice(0, n_windows)
            recordings = read_table(self.store, fmt.RECORDINGS_TABLE, n_recordings).slice(0, n_recordings)
            offsets = read_vector(self.store, fmt.LABEL_OFFSETS, "int64", n_windows + 1)[: n_windows + 1]
            values = read_vector(self.store, fmt.LABEL_VALUES, "int32", int(offsets[-1]))
        except CacheError as exc:
            raise CacheError(f"{exc}. The journal is unusable too, so the cache cannot be repaired; rebuild it "
                             "with --overwrite") from None
        rows = []
        columns = [windows.column(c).to_pylist() for c in ("recording_id", "label", "start_seconds", "rms")]
        for i, (rec, label, start, rms) in enumerate(zip(*columns)):
            rows.append([rec, label, start, rms, values[offsets[i] + 1 : offsets[i + 1]].tolist()])
        records = [{**{k: v for k, v in r.items() if k in BASE_COLUMNS},
                    "source": {k: v for k, v in r.items() if k not in BASE_COLUMNS}} for r in recordings.to_pylist()]
        return base_entry(records, rows, BandSums.from_dict(self.attrs["band_sums"]), self.attrs["class_names"])

    def _remove_stale_temporaries(self) -> None:
        # we hold the lock, so no other writer owns them: they are from a killed build
        array = self.layout.array
        for folder in ("", array, "labels", fmt.LABEL_OFFSETS, fmt.LABEL_VALUES):
            for key in self.store.stale_temporaries(folder):
                self.store.remove(key)
        for shard in self.store.listdir(f"{array}/c"):
            folder = self.codec.shard_key(int(shard)).rsplit("/", 1)[0] if shard.isdigit() else f"{array}/c/{shard}/0"
            for key in self.store.stale_temporaries(folder):
                self.store.remove(key)

    # -- state --------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True when the last build finished and nothing was added since."""
        return self.attrs.get("state") == "complete"

    @property
    def n_windows(self) -> int:
        """Windows in the cache once it finishes: committed plus queued."""
        return self._n_added

    def committed_paths(self) -> set[str]:
        return {r["path"] for r in self.recordings}

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.class_names, 0)
        for row in self.window_rows:
            counts[self.class_names[row[1]]] += 1
        for rec in self._pending:
            counts[rec["row"]["class_name"]] += rec["row"]["n_windows"]
        return counts

    # -- writing ------------------------------------------------------------------------
    def add_recording(self, row: dict, images=None, start_seconds=(), rms=(), secondary=()) -> None:
        """Queue one recording's row and its windows (stored dtype), in build order.

        ``row`` needs ``path``, ``class_name`` and whatever else describes the recording
        (status, reason, duration, source columns...); ids, labels and window positions
        are filled in here. ``secondary``: the recording's other class names (each window's
        label set is the primary class, then these).
        """
        self.start_recording(row, secondary)
        if images is not None and len(images):
            self.add_windows(images, start_seconds, rms)
        self.end_recording()

    def start_recording(self, row: dict, secondary=()) -> None:
        """Open a recording whose windows come in pieces (:meth:`add_windows`), for
        recordings too long to hold: its windows go to disk shard by shard, and it is
        committed only by :meth:`end_recording` (or dropped by :meth:`abort_recording`)."""
        if self._pending and self._pending[-1]["open"]:
            raise CacheError(f"{shown(self.path)}: internal error, a recording is already open")
        self.changed = True
        if self.attrs.get("state") != "building":
            self.attrs["state"] = "building"  # new readers see the last finished state until finish()
            self._write_attrs()
        label = self._label_of(row["class_name"])
        extra = []
        for name in secondary:
            index = self._label_of(name)
            if index != label and index not in extra:
                extra.append(index)
        recording_id = len(self.recordings) + len(self._pending)
        source = {(f"source_{k}" if k in BASE_COLUMNS else k): v for k, v in (row.get("source") or {}).items()}
        row = {**{k: v for k, v in row.items() if k != "source"}, "source": source,
               "recording_id": recording_id, "label": label, "first_window": self._n_added, "n_windows": 0,
               "labels": [self.class_names[i] for i in (label, *extra)]}
        self._pending.append({"row": row, "windows": [], "sums": BandSums.zero(self.config.n_mels), "open": True,
                              "extra": extra})

    def add_windows(self, images, start_seconds, rms, sums: BandSums | None = None) -> None:
        """Rows of the open recording (stored dtype), with their start times and RMS: its
        windows' images, or for a waveform cache chunks of its audio (then ``sums`` are
        the band sums of the windows those samples give, for the statistics; they may also
        come separately through :meth:`add_band_sums`)."""
        rec = self._pending[-1] if self._pending and self._pending[-1]["open"] else None
        if rec is None:
            raise CacheError(f"{shown(self.path)}: internal error, add_windows without an open recording")
        images = np.asarray(images, dtype=self.layout.dtype)
        if images.shape[1:] != self.layout.row_shape:
            raise ValueError(f"rows of shape {images.shape[1:]} for a cache of {self.layout.row_shape}")
        row, n = rec["row"], len(images)
        windows = [[row["recording_id"], row["label"], float(s), float(e), list(rec["extra"])]
                   for s, e in zip(start_seconds, rms)]
        if len(windows) != n:
            raise ValueError(f"{n} images but {len(windows)} start times / RMS values")
        if not n:
            return
        self._images.append(images)
        rec["windows"] += windows
        if self.kind == "spectrogram":
            rec["sums"] = rec["sums"] + band_sums(images)
        elif sums is not None:
            rec["sums"] = rec["sums"] + sums
        row["n_windows"] += n
        self._n_added += n
        shard = self.storage.shard_windows
        while self._n_added - self._buffer_start >= shard:
            self._flush(self._buffer_start + shard)

    def add_band_sums(self, sums: BandSums) -> None:
        """Band sums of the open recording's windows (waveform caches: the statistics)."""
        rec = self._pending[-1] if self._pending and self._pending[-1]["open"] else None
        if rec is None or self.kind != "waveform":
            raise CacheError(f"{shown(self.path)}: internal error, add_band_sums outside an open waveform recording")
        rec["sums"] = rec["sums"] + sums

    def set_band_sums(self, sums: BandSums) -> None:
        """Replace the statistics' sums before :meth:`finish` (merging waveform parts: their
        exact sums add up to a single build's, and their windows are not stored)."""
        self.sums = sums

    def end_recording(self, **updates) -> None:
        """Close the open recording (``updates`` complete its row: status, reason, duration...)
        and commit what is on disk."""
        rec = self._pending[-1]
        rec["row"].update(updates)
        rec["open"] = False
        self._commit(self._written_end)  # commits rows whose windows are all on disk

    def abort_recording(self) -> None:
        """Drop the open recording and its windows, as if it had never been started (its
        windows already in shard files are overwritten by the next ones)."""
        rec = self._pending.pop()
        first = rec["row"]["first_window"]
        if first >= self._buffer_start:  # its windows are all still in memory
            images = np.concatenate(self._images) if len(self._images) > 1 else self._images[0]
            self._images = [images[: first - self._buffer_start]]
        else:  # some went to disk: read back the committed start of the shard it began in
            start = (first // self.storage.shard_windows) * self.storage.shard_windows
            kept = np.empty((first - start, *self.layout.row_shape), self.layout.dtype)
            if len(kept):
                self.codec.read_sorted(np.arange(start, first), kept)
            self._images, self._buffer_start = [kept], start
        self._n_added = first
        self._written_end = min(self._written_end, first)

    def register_classes(self, names) -> None:
        """Give ``names`` label indices now (in order), so labels do not depend on which
        classes happen to yield windows first; known names keep their index."""
        for name in names:
            self._label_of(name)

    def _label_of(self, class_name: str) -> int:
        if class_name not in self.class_names:
            self.class_names.append(class_name)
        return self.class_names.index(class_name)

    def _flush(self, end: int) -> None:
        """Write windows [buffer_start, end) as one shard and commit what that completes."""
        images = np.concatenate(self._images) if len(self._images) > 1 else self._images[0]
        count = end - self._buffer_start
        if end > self._specs_length:
            self._write_specs_metadata(end)
        self.codec.write_shard(self._buffer_start // self.storage.shard_windows, images[:count])
        self._images = [images[count:]]
        self._buffer_start = end if count == self.storage.shard_windows else self._buffer_start
        self._written_end = end
        self._commit(end)

    def _commit(self, written_end: int) -> None:
        done = 0
        while done < len(self._pending):
            rec = self._pending[done]
            if rec["open"] or rec["row"]["first_window"] + rec["row"]["n_windows"] > written_end:
                break
            done += 1
        if not done:
            return
        batch, self._pending = self._pending[:done], self._pending[done:]
        entry = Entry(self.n_committed, [r["row"] for r in batch], [w for r in batch for w in r["windows"]],
                      sum((r["sums"] for r in batch), BandSums.zero(self.config.n_mels)), list(self.class_names))
        self.store.append(fmt.JOURNAL, entry.to_line())
        self.recordings.extend(entry.recordings)
        self.window_rows.extend(entry.windows)
        self.sums = self.sums + entry.sums
        self.n_committed = entry.end

    def finish(self, provenance: dict | None = None) -> None:
        """Write the last partial shard, the arrays, the tables and the attributes; mark complete."""
        if self._n_added > self._buffer_start and self._written_end < self._n_added:
            self._flush(self._n_added)
        self._commit(self._written_end)
        if self._pending:
            raise CacheError(f"{shown(self.path)}: internal error, recordings left uncommitted or open")
        n = self.n_committed
        if n == 0:
            raise CacheError(f"{shown(self.path)}: no window to store; nothing was finished")
        if n < self._floor:
            raise CacheError(f"{shown(self.path)}: internal error, the cache would shrink from {self._floor} to {n} "
                             "windows; nothing was changed")
        n_shards = self.codec.n_shards(n)
        for name in self.store.listdir(f"{self.layout.array}/c"):  # left by an earlier, longer, killed build
            if name.isdigit() and int(name) >= n_shards:
                self.store.remove(self.codec.shard_key(int(name)))
        labels = np.fromiter((w[1] for w in self.window_rows), np.int32, n)
        lengths = np.fromiter((1 + len(w[4]) for w in self.window_rows), np.int64, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.fromiter((v for w in self.window_rows for v in (w[1], *w[4])), np.int32, int(offsets[-1]))
        write_vector(self.store, fmt.LABELS, labels, -1, "window")
        write_vector(self.store, fmt.LABEL_OFFSETS, offsets, 0, "window_edge")
        write_vector(self.store, fmt.LABEL_VALUES, values, -1, "label")
        self._write_tables(labels, offsets, values)
        self._write_specs_metadata(n)
        any_label = np.bincount(values, minlength=len(self.class_names))
        self.attrs.update({
            "state": "complete",
            "class_names": list(self.class_names),
            "stats": self.sums.stats(self.config.storage_dtype),
            "band_sums": self.sums.to_dict(),
            "counts": {
                "windows": n,
                "recordings": len(self.recordings),
                "recordings_with_windows": sum(r["n_windows"] > 0 for r in self.recordings),
                "skipped_recordings": sum(r["status"] != "ok" for r in self.recordings),
                "per_class": {name: int(c) for name, c in zip(self.class_names,
                                                              np.bincount(labels, minlength=len(self.class_names)))},
                "per_class_any": {name: int(c) for name, c in zip(self.class_names, any_label)},
            },
            "provenance": {"tool": "chirpid-io", "version": __version__,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})},
        })
        self._write_attrs()

    def _write_tables(self, labels, offsets, values) -> None:
        import pyarrow as pa

        n = self.n_committed
        by_id = {r["recording_id"]: r for r in self.recordings}
        rec_ids = np.fromiter((w[0] for w in self.window_rows), np.int64, n)
        names = np.asarray(self.class_names, dtype=object)
        label_sets = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                              pa.array(names[values].tolist() if n else [], pa.string()))
        windows = {
            "window_id": pa.array(np.arange(n, dtype=np.int64)),
            "recording_id": pa.array(rec_ids),
            "path": pa.array([by_id[i]["path"] for i in rec_ids], pa.string()),
            "label": pa.array(labels),
            "class_name": pa.array(names[labels].tolist() if n else [], pa.string()),
            "labels": label_sets,
            "group": pa.array([by_id[i].get("group") or "" for i in rec_ids], pa.string()),
            "start_seconds": pa.array(np.fromiter((w[2] for w in self.window_rows), np.float64, n)),
            "rms": pa.array(np.fromiter((w[3] for w in self.window_rows), np.float32, n)),
        }
        source_columns = list(dict.fromkeys(k for r in self.recordings for k in r.get("source", {})))
        for key in source_columns:  # the input's own columns, on every window of the recording
            windows.setdefault(key, _column([by_id[i]["source"].get(key) for i in rec_ids]))
        write_table(self.store, fmt.WINDOWS_TABLE, pa.table(windows))
        flat = [{**{k: v for k, v in r.items() if k != "source"}, **r.get("source", {})} for r in self.recordings]
        seen = dict.fromkeys(k for r in flat for k in r)
        # the builder's own columns in one order however a row was filled in (whole, or
        # streamed and completed at its end; merge-cache), then the input's
        columns = [k for k in RECORDING_COLUMNS if k in seen] + [k for k in seen if k not in RECORDING_COLUMNS]
        write_table(self.store, fmt.RECORDINGS_TABLE, pa.table({k: _column([r.get(k) for r in flat]) for k in columns}))

    def _write_specs_metadata(self, n: int) -> None:
        self.store.write(f"{self.layout.array}/zarr.json", fmt.dumps(self.layout.metadata(n)))
        self._specs_length = n

    def _write_attrs(self) -> None:
        self.store.write(fmt.GROUP_META, fmt.dumps(fmt.group_metadata(self.attrs)))

    def close(self) -> None:
        self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _column(values: list):
    """One table column from Python values; text when the values mix kinds (an append from
    a table whose column was inferred as numbers, another's as text)."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _read_attrs(store) -> dict:
    document = fmt.loads(store.read(fmt.GROUP_META, fmt.META_LIMIT), shown(store.root / fmt.GROUP_META))
    attrs = document.get("attributes")
    if not isinstance(attrs, dict):
        raise CacheError(f"{shown(store.root / fmt.GROUP_META)}: has no attributes object; the file is damaged. "
                         "Fix: rebuild with --overwrite")
    problems = fmt.attribute_problems(attrs)
    if problems:
        raise CacheError(f"{shown(store.root)}: {problems[0]}" + ("" if "Fix:" in problems[0] else
                         "; `chirpid-io verify` lists every finding. Fix: rebuild with --overwrite"))
    return attrs


def _refuse_foreign_folder(path: Path) -> None:
    """A build never writes into a folder that holds something other than a cache."""
    if path.is_symlink() and not path.exists():
        raise CacheError(f"{shown(path)}: is a dangling symbolic link; remove it or choose another folder")
    if path.exists() and not path.is_dir():
        raise CacheError(f"{shown(path)}: is a file, not a folder; choose a folder for the cache")
    if path.is_dir() and not (path / fmt.GROUP_META).exists() and any(
            not name.startswith(".") and name != fmt.LOCK for name in _names(path)):
        raise CacheError(f"{shown(path)}: is a folder that holds other files and is not a chirpid-io cache; "
                         "a build writes only into a new or empty folder (or an existing cache). Fix: choose a new folder")


def _refuse_foreign_prefix(store) -> None:
    """The same for a prefix of an object store: only a cache's own objects may be there."""
    names = store.listdir("")
    if fmt.GROUP_META not in names and any(not n.startswith(".") and n != fmt.LOCK for n in names):
        raise CacheError(f"{shown(store.root)}: holds other objects and is not a chirpid-io cache; a build writes "
                         "only below a new or empty prefix (or an existing cache). Fix: choose a new prefix")


def _names(path: Path) -> list[str]:
    import os

    return os.listdir(path)
