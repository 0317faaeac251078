"""verify_cache: check everything a cache claims against what its files hold.

Findings, each naming the file and what is wrong:
- the folder: any symbolic link, FIFO, socket or device inside it;
- the metadata: unreadable or truncated JSON, missing keys, wrong types, a negative or
  impossible count, a fingerprint that does not match the config, NaN or Inf statistics;
- ``specs``: dtype or window shape other than the config's, fewer windows than counted,
  shard files missing, chunks never written, chunks failing their CRC32C or not
  decompressing; and the per-band sums recomputed from every stored value must equal the
  stored ones exactly, and the statistics must be the ones they give;
- ``labels`` and the label sets: length, classes outside the class list, label sets
  whose first entry is not the window's label, per-class counts;
- the tables: readable, one row per window and per recording, ids in order, labels and
  recording window ranges that agree with the arrays.

Work is capped by what is on disk: shards are read only where their files exist, so a
count of 10**12 in ``zarr.json`` is reported, not iterated. Never raises for damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CacheError
from ..text import shown
from . import format as fmt
from .files import CacheFileError, open_store
from .reader import missing_shards, specs_problem
from .shards import ChunkError, ShardCodec
from .stats import BandSums, band_sums
from .vectors import read_table, read_vector


@dataclass
class VerifyReport:
    path: str
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(path_or_cache, progress: bool | None = False) -> VerifyReport:
    """Check a cache (a path or an open ``Cache``); every finding goes into the report."""
    path = getattr(path_or_cache, "path", path_or_cache)
    store = open_store(path)  # a folder, or an object-store URL
    report = VerifyReport(str(path) if store.kind == "local" else str(store.root))
    problems = report.problems
    if store.kind == "local" and not store.root.is_dir():
        problems.append(f"{shown(store.root)}: no such folder")
        return report
    for key, kind in store.walk():
        if kind in ("symlink", "special"):
            what = "a symbolic link" if kind == "symlink" else "not a regular file or folder"
            problems.append(f"{key}: is {what}; a cache holds only regular files inside its own folder")
    try:
        document = fmt.loads(store.read(fmt.GROUP_META, fmt.META_LIMIT), fmt.GROUP_META)
        attrs = document.get("attributes")
        if not isinstance(attrs, dict):
            raise CacheError(f"{fmt.GROUP_META}: has no attributes object")
    except CacheError as exc:
        problems.append(_relative(str(exc), store))
        return report
    found = fmt.attribute_problems(attrs)
    problems += [f"{fmt.GROUP_META}: {p}" for p in found]
    if "counts" not in attrs or any("config" in p or "storage" in p or "format" in p for p in found):
        if "counts" not in attrs and not found:
            problems.append(f"{fmt.GROUP_META}: the cache never finished a build (no counts)")
        return report
    from ..config import SpectrogramConfig

    config = SpectrogramConfig.from_dict(attrs["config"])
    layout = fmt.Layout.from_attrs(attrs, config)
    counts = attrs["counts"] if isinstance(attrs.get("counts"), dict) else {}
    n = counts.get("windows") if isinstance(counts.get("windows"), int) and counts.get("windows") >= 0 else 0
    n_recordings = counts.get("recordings") if isinstance(counts.get("recordings"), int) else 0
    complete = attrs.get("state") == "complete"
    names = list(attrs.get("class_names", []))
    codec = ShardCodec.for_layout(store, layout)

    problem = specs_problem(store, layout, n)
    if problem:
        problems.append(problem)
    labels = _check_labels(store, n, names, counts, complete, problems)
    _check_tables(store, n, n_recordings, labels, names, complete, problems)
    sums = _check_shards(store, codec, n, config, layout, report, progress)
    if layout.kind == "waveform":
        # the statistics come from mel windows of the audio, which a kernel on another
        # device may round differently by a level: not re-derived here
        sums = None
    if sums is not None and isinstance(attrs.get("band_sums"), dict):
        try:
            stored = BandSums.from_dict(attrs["band_sums"])
        except (KeyError, TypeError, ValueError):
            stored = None
        if stored is not None and stored != sums:
            differ = sum(a != b for a, b in zip(stored.sum + stored.sum_sq, sums.sum + sums.sum_sq))
            problems.append(f"{fmt.GROUP_META}: band_sums disagree with the stored windows ({differ} of "
                            f"{2 * config.n_mels} sums differ, count {stored.count} vs {sums.count})")
        elif stored is not None and isinstance(attrs.get("stats"), dict):
            expected = sums.stats(config.storage_dtype)
            for key in ("mean", "std"):
                if attrs["stats"].get(key) != expected[key]:
                    problems.append(f"{fmt.GROUP_META}: stats.{key} is not what the stored windows give")
    return report


def _check_labels(store, n: int, names: list[str], counts: dict, complete: bool, problems: list[str]):
    labels = None
    try:
        labels = read_vector(store, fmt.LABELS, "int32", n)
        if complete and labels.size != n:
            problems.append(f"{fmt.LABELS}: holds {labels.size} labels for {n} windows")
        labels = labels[:n].astype(np.int64)
        bad = (labels < 0) | (labels >= len(names))
        if bad.any():
            problems.append(f"{fmt.LABELS}: {int(bad.sum())} label(s) outside the {len(names)} classes "
                            f"(first at window {int(np.flatnonzero(bad)[0])})")
        elif isinstance(counts.get("per_class"), dict):
            actual = dict(zip(names, np.bincount(labels, minlength=len(names)).tolist()))
            if {k: v for k, v in counts["per_class"].items()} != actual:
                problems.append(f"{fmt.GROUP_META}: counts.per_class disagrees with the labels")
    except CacheError as exc:
        problems.append(_relative(str(exc), store))
        return None
    try:
        offsets = read_vector(store, fmt.LABEL_OFFSETS, "int64", n + 1)[: n + 1]
        if offsets[0] != 0 or np.any(np.diff(offsets) < 1):
            problems.append(f"{fmt.LABEL_OFFSETS}: offsets do not increase from 0 (every window has a label)")
        else:
            values = read_vector(store, fmt.LABEL_VALUES, "int32", int(offsets[-1]))[: int(offsets[-1])]
            if values.size and (values.min() < 0 or values.max() >= len(names)):
                problems.append(f"{fmt.LABEL_VALUES}: label sets name classes outside the {len(names)} classes")
            elif not bad.any() and not np.array_equal(values[offsets[:-1]], labels):
                problems.append(f"{fmt.LABEL_VALUES}: a window's label set does not start with its label")
    except CacheError as exc:
        problems.append(_relative(str(exc), store))
    return None if bad.any() else labels


def _check_tables(store, n: int, n_recordings: int, labels, names, complete: bool, problems: list[str]) -> None:
    try:
        windows = read_table(store, fmt.WINDOWS_TABLE, n)
        if complete and windows.num_rows != n:
            problems.append(f"{fmt.WINDOWS_TABLE}: has {windows.num_rows} rows for {n} windows")
        windows = windows.slice(0, n)
        missing = [c for c in ("window_id", "recording_id", "label", "class_name") if c not in windows.column_names]
        if missing:
            problems.append(f"{fmt.WINDOWS_TABLE}: missing column(s) {', '.join(missing)}")
            return
        if not np.array_equal(windows.column("window_id").to_numpy(), np.arange(n)):
            problems.append(f"{fmt.WINDOWS_TABLE}: window_id is not 0..{n - 1} in order")
        if labels is not None and not np.array_equal(windows.column("label").to_numpy(), labels):
            problems.append(f"{fmt.WINDOWS_TABLE}: its labels disagree with the labels array")
        recordings = read_table(store, fmt.RECORDINGS_TABLE, n_recordings)
        if complete and recordings.num_rows != n_recordings:
            problems.append(f"{fmt.RECORDINGS_TABLE}: has {recordings.num_rows} rows, counts.recordings says "
                            f"{n_recordings}")
        recordings = recordings.slice(0, n_recordings)
        first = recordings.column("first_window").to_numpy()
        sizes = recordings.column("n_windows").to_numpy()
        if int(sizes.sum()) != n:
            problems.append(f"{fmt.RECORDINGS_TABLE}: window counts add up to {int(sizes.sum())}, not {n}")
        elif not np.array_equal(first, np.concatenate([[0], np.cumsum(sizes)[:-1]]) if sizes.size else first):
            problems.append(f"{fmt.RECORDINGS_TABLE}: first_window does not follow the window counts")
        else:
            expected = np.repeat(recordings.column("recording_id").to_numpy(), sizes)
            if not np.array_equal(windows.column("recording_id").to_numpy(), expected):
                problems.append(f"{fmt.WINDOWS_TABLE}: recording_id disagrees with {fmt.RECORDINGS_TABLE}")
    except (CacheError, KeyError) as exc:
        problems.append(_relative(str(exc), store))


def _check_shards(store, codec: ShardCodec, n: int, config, layout, report: VerifyReport,
                  progress) -> BandSums | None:
    """Read every chunk of every shard file present; the exact band sums of what was read
    (None when anything could not be read)."""
    from tqdm import tqdm

    n_missing, first = missing_shards(store, codec, n)
    present = [int(name) for name in store.listdir(f"{layout.array}/c") if name.isdigit()]
    needed = codec.n_shards(n)
    if n_missing:
        report.problems.append(f"{layout.array}: {n_missing} of the {needed} shard files the counts imply are missing "
                               f"or unusable (first: {first})")
    total = BandSums.zero(config.n_mels)
    readable = True
    candidates = sorted(i for i in present if i < needed)
    shards = [i for i, problem in zip(candidates, store.check_many([codec.shard_key(i) for i in candidates]))
              if problem is None]
    buffer = np.empty((codec.shard_windows, *layout.row_shape), layout.dtype)
    for shard in tqdm(shards, desc="verify", unit="shard", disable=None if progress is None else not progress):
        low, high = shard * codec.shard_windows, min((shard + 1) * codec.shard_windows, n)
        out = buffer[: high - low]
        try:
            codec.read_sorted(np.arange(low, high), out)
            report.chunks_checked += -(-(high - low) // codec.chunk_windows)
            if layout.kind == "spectrogram":
                total = total + band_sums(out)
            continue
        except (ChunkError, CacheFileError, ValueError):
            readable = False
        for start in range(low, high, codec.chunk_windows):  # narrow it down to the chunks
            stop = min(start + codec.chunk_windows, high)
            try:
                codec.read_sorted(np.arange(start, stop), buffer[: stop - start])
            except (ChunkError, CacheFileError) as exc:
                report.problems.append(str(exc))
                if "index" in str(exc):
                    break
            report.chunks_checked += 1
    return total if readable and not n_missing else None


def _relative(message: str, store) -> str:
    return message.replace(f"{shown(store.root)}/", "").replace(f"{store.location}/", "")

