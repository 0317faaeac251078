"""CacheWriter: appends spectrogram windows to a cache, shard by shard, crash-safely.

Why it never loses data:
- ``specs`` is written one whole shard file at a time, through a temporary name, fsync
  and a rename (``shards.py``, or zarr's local store for other codecs), so a file is
  either old or new, never torn.
- After each shard, one JSON line is appended (and fsync'd) to the build journal naming
  the recordings whose windows are now all on disk. The journal, not the arrays, says
  what is done: a shard written but not journaled is simply written again, identically.
- On restart the writer reloads the journal (ignoring a torn last line), reads back the
  committed windows of the partly filled shard, and continues from the first
  recording not committed. Appending to a finished cache is the same operation.
- An exclusive ``flock`` on ``build.lock`` refuses a second writer; the kernel drops it
  when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import SpectrogramConfig
from ..errors import CacheError, FingerprintMismatchError
from . import format as fmt
from .shards import ShardCodec
from .stats import band_moments, merge

class CacheWriter:
    """Open (or create) the cache at ``path`` for writing; use as a context manager."""

    def __init__(self, path, config: SpectrogramConfig, storage: fmt.StorageOptions | None = None):
        import zarr

        self.path = Path(path)
        self.config = config
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = _acquire_lock(self.path / fmt.LOCK)
        self.group = zarr.open_group(self.path, mode="a", zarr_format=3)
        if fmt.SPECS in self.group:
            self._check_compatible()
            self.storage = fmt.StorageOptions(**self.group.attrs["storage"])
        else:
            self.storage = storage or fmt.StorageOptions()
            self._create_arrays()
        self.specs = fmt.open_specs(self.path, mode="r+")
        self._shards = ShardCodec.for_array(self.specs)  # None: write through zarr
        for stale in self.path.glob(f"{fmt.SPECS}/c/*/0/.0.tmp-*"):  # from a killed build;
            stale.unlink()  # we hold the lock, so no other writer owns it
        self.labels = self.group[fmt.LABELS]
        self._journal_path = self.path / fmt.JOURNAL
        self._load_journal()
        # windows [buffer_start, n_committed) are on disk and are read back so the next
        # write of their shard rewrites it whole
        shard = self.storage.shard_windows
        self._buffer_start = (self.n_committed // shard) * shard
        self._images = [self.specs[self._buffer_start : self.n_committed]]
        self._labels = [self.labels[self._buffer_start : self.n_committed]]
        self._n_added = self.n_committed
        self._written_end = self.n_committed
        self._pending_recordings: list[dict] = []
        self._pending_windows: list[list] = []
        self.changed = False  # set by the first add_recording

    # -- state ------------------------------------------------------------------------
    def _create_arrays(self) -> None:
        import zarr

        c, s = self.config, self.storage
        dtype = c.storage_dtype
        zarr.create_array(
            self.group.store, name=fmt.SPECS, shape=(0, c.n_mels, c.frames), dtype=dtype,
            chunks=(s.chunk_windows, c.n_mels, c.frames), shards=(s.shard_windows, c.n_mels, c.frames),
            dimension_names=("window", "mel", "frame"), fill_value=0, **s.codecs(dtype),
        )
        zarr.create_array(
            self.group.store, name=fmt.LABELS, shape=(0,), dtype="int32",
            chunks=(s.shard_windows,), dimension_names=("window",), fill_value=-1,
        )
        self.group.attrs.update({
            "format_version": fmt.FORMAT_VERSION,
            "state": "building",
            "config": c.to_dict(),
            "fingerprint": c.fingerprint(),
            "storage": s.__dict__,
            "class_names": [],
        })

    def _check_compatible(self) -> None:
        attrs = self.group.attrs
        if attrs.get("format_version") != fmt.FORMAT_VERSION:
            raise CacheError(
                f"{self.path}: cache format {attrs.get('format_version')} cannot be extended by "
                f"this chirpid-io (format {fmt.FORMAT_VERSION}); build a new cache"
            )
        built_with = SpectrogramConfig.from_dict(attrs["config"])
        if built_with.fingerprint() != self.config.fingerprint():
            raise FingerprintMismatchError(f"cache {self.path}", built_with.diff(self.config))

    def _load_journal(self) -> None:
        self.recordings: list[dict] = []
        self.window_rows: list[list] = []  # [recording_id, label, start_seconds, rms] each
        self.shard_moments: dict[str, dict] = {}
        self.class_names: list[str] = list(self.group.attrs.get("class_names", []))
        if not self._journal_path.exists():
            self.n_committed = 0
            return
        raw = self._journal_path.read_bytes()
        good_end = 0
        for line in raw.splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a torn last line from a crash: everything after it is not committed
            if not line.endswith(b"\n"):
                break
            self.recordings.extend(entry["recordings"])
            self.window_rows.extend(entry["windows"])
            self.shard_moments.update(entry["moments"])
            self.class_names = entry["class_names"]
            good_end += len(line)
        if good_end < len(raw):
            with open(self._journal_path, "r+b") as f:
                f.truncate(good_end)
        self.n_committed = len(self.window_rows)

    @property
    def complete(self) -> bool:
        """True when the last build finished and nothing was added since."""
        return self.group.attrs.get("state") == "complete"

    def committed_paths(self) -> set[str]:
        return {r["path"] for r in self.recordings}

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.class_names, 0)
        for row in self.window_rows:
            counts[self.class_names[row[1]]] += 1
        for rec in self._pending_recordings:
            counts[rec["class_name"]] += rec["n_windows"]
        return counts

    # -- writing ----------------------------------------------------------------------
    def add_recording(self, row: dict, images=None, start_seconds=(), rms=()) -> None:
        """Queue one recording's row and its windows (stored dtype), in build order.

        ``row`` needs ``path``, ``class_name`` and whatever else describes the recording
        (status, reason, duration...); ids, labels and window positions are filled here.
        """
        self.changed = True
        if self.group.attrs.get("state") != "building":
            self.group.attrs["state"] = "building"  # readers refuse the cache until finish()
        label = self._label_of(row["class_name"])
        n = 0 if images is None else len(images)
        row = {**row, "recording_id": len(self.recordings) + len(self._pending_recordings),
               "label": label, "first_window": self._n_added, "n_windows": n}
        self._pending_recordings.append(row)
        if n:
            self._images.append(np.asarray(images, dtype=self.config.storage_dtype))
            self._labels.append(np.full(n, label, dtype=np.int32))
            self._pending_windows.extend(
                [row["recording_id"], label, float(s), float(e)] for s, e in zip(start_seconds, rms)
            )
            self._n_added += n
        shard = self.storage.shard_windows
        while self._n_added - self._buffer_start >= shard:
            self._flush(self._buffer_start + shard)
        self._commit({}, self._written_end)  # commits rows whose windows are all on disk

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
        """Write windows [buffer_start, end) as one shard region and commit what it completes."""
        images = np.concatenate(self._images)
        labels = np.concatenate(self._labels)
        count = end - self._buffer_start
        self._grow(end)
        if self._shards is not None:
            self._shards.write_shard(self._buffer_start // self.storage.shard_windows, images[:count])
        else:
            self.specs[self._buffer_start : end] = images[:count]
        self.labels[self._buffer_start : end] = labels[:count]
        scale = 1 / 255 if self.config.storage_dtype == "uint8" else 1.0
        shard_index = self._buffer_start // self.storage.shard_windows
        moments = {str(shard_index): band_moments(images[:count], scale)}
        self._images, self._labels = [images[count:]], [labels[count:]]
        self._buffer_start = end if count == self.storage.shard_windows else self._buffer_start
        self._written_end = end
        self._commit(moments, end)

    def _grow(self, n: int) -> None:
        # each array on its own: a crash may have come between the two resizes
        for array in (self.specs, self.labels):
            if array.shape[0] < n:
                array.resize((n, *array.shape[1:]))

    def _resize(self, n: int) -> None:
        for array in (self.specs, self.labels):
            if array.shape[0] != n:
                array.resize((n, *array.shape[1:]))

    def _commit(self, moments: dict, written_end: int) -> None:
        done = []
        while self._pending_recordings:
            rec = self._pending_recordings[0]
            if rec["first_window"] + rec["n_windows"] > written_end:
                break
            done.append(self._pending_recordings.pop(0))
        new_end = done[-1]["first_window"] + done[-1]["n_windows"] if done else self.n_committed
        new_windows = self._pending_windows[: new_end - self.n_committed]
        if not done and not moments:
            return
        entry = {"recordings": done, "windows": new_windows, "moments": moments,
                 "class_names": self.class_names, "time": time.time()}
        with open(self._journal_path, "ab") as f:
            f.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        del self._pending_windows[: len(new_windows)]
        self.recordings.extend(done)
        self.window_rows.extend(new_windows)
        self.shard_moments.update(moments)
        self.n_committed = new_end

    def finish(self, provenance: dict | None = None) -> None:
        """Write the last partial shard, the tables and the attributes; mark complete."""
        if self._n_added > self._buffer_start:
            self._resize(self._n_added)
            self._flush(self._n_added)
        else:
            self._commit({}, self._written_end)
        if self._pending_recordings:
            raise CacheError(f"{self.path}: internal error, recordings left uncommitted")
        self._resize(self.n_committed)
        self._write_tables()
        n_shards = -(-self.n_committed // self.storage.shard_windows)
        stats = merge([self.shard_moments[str(i)] for i in range(n_shards)], self.config.n_mels)
        ok = [r for r in self.recordings if r["n_windows"] > 0]
        self.group.attrs.update({
            "state": "complete",
            "class_names": self.class_names,
            "stats": stats,
            "counts": {
                "windows": self.n_committed,
                "recordings": len(self.recordings),
                "recordings_with_windows": len(ok),
                "skipped_recordings": sum(r["status"] != "ok" for r in self.recordings),
                "per_class": self.class_counts(),
            },
            "provenance": {"tool": "chirpid-io", "version": __version__,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})},
        })

    def _write_tables(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        recs = self.recordings
        by_id = {r["recording_id"]: r for r in recs}
        columns = list(zip(*self.window_rows)) if self.window_rows else [[], [], [], []]
        rec_ids = np.asarray(columns[0], dtype=np.int64)
        windows = pa.table({
            "window_id": pa.array(np.arange(len(rec_ids), dtype=np.int64)),
            "recording_id": pa.array(rec_ids),
            "path": pa.array([by_id[i]["path"] for i in rec_ids], pa.string()),
            "label": pa.array(np.asarray(columns[1], dtype=np.int32)),
            "class_name": pa.array([self.class_names[l] for l in columns[1]], pa.string()),
            "group": pa.array([by_id[i].get("group", "") for i in rec_ids], pa.string()),
            "start_seconds": pa.array(np.asarray(columns[2], dtype=np.float64)),
            "rms": pa.array(np.asarray(columns[3], dtype=np.float32)),
        })
        recordings = pa.Table.from_pylist(recs)
        for table, name in ((windows, fmt.WINDOWS_TABLE), (recordings, fmt.RECORDINGS_TABLE)):
            tmp = self.path / f".{name}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.path / name)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _acquire_lock(path: Path):
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise CacheError(
            f"{path.parent}: another build ({owner}) is writing this cache; wait for it to "
            "finish or stop it, then run the command again"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle
