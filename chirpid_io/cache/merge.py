"""merge_cache: the parts of a sharded build joined into the cache one build would make.

Parts (``build-cache --part I/N``) hold disjoint recordings, each row carrying its position
in the whole input (``manifest_index``). The merge writes a new cache with the ordinary
writer, taking the recordings of every part in that order: so windows, labels, label
sets, table rows and statistics (exact integer sums, recomputed from the stored values)
equal those of a single-process build of the same input, and the shard files are
byte-identical (the same windows encoded the same way). Stored values are copied as they
are: nothing is recomputed from audio. The merge is crash-safe and resumable like any
build (the writer's journal): run the same command again after a kill.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..text import shown
from .build import BuildReport
from .reader import Cache, open_cache
from .writer import BASE_COLUMNS, RECORDING_COLUMNS, CacheWriter

#: Columns the writer fills in itself; the rest of RECORDING_COLUMNS are the row's own.
WRITER_COLUMNS = ("recording_id", "label", "first_window", "n_windows", "labels")
ROW_ORDER = tuple(c for c in RECORDING_COLUMNS if c not in WRITER_COLUMNS)


def merge_cache(out, parts, *, progress: bool | None = None) -> BuildReport:
    """Merge the part caches ``parts`` (paths or open caches) into a new cache ``out``."""
    from tqdm import tqdm

    started = time.perf_counter()
    caches = [p if isinstance(p, Cache) else open_cache(p) for p in parts]
    if not caches:
        raise CacheError("merge-cache needs at least one part")
    _check_parts(caches)
    first = caches[0]
    rows = []  # (manifest index, part, recording row)
    for k, cache in enumerate(caches):
        for row in cache.recordings.to_pylist():
            rows.append((row.get("manifest_index", -1), k, row))
    rows.sort(key=lambda item: (item[0], item[1]))
    report = BuildReport(Path(out), backend="merge", device="cpu")
    with CacheWriter(out, first.config, first.storage) as writer:
        report.notes += writer.notes
        writer.register_classes(first.class_names)
        done = writer.committed_paths()
        report.recordings_seen = len(rows)
        for _, k, row in tqdm(rows, unit="rec", desc="merge-cache", disable=None if progress is None else not progress):
            if row["path"] in done:
                report.recordings_already_cached += 1
                continue
            _copy(caches[k], row, writer, report)
        if first.kind == "waveform":  # exact integer sums: the parts' add up to one build's
            from .stats import BandSums

            writer.set_band_sums(sum((BandSums.from_dict(c.attrs["band_sums"]) for c in caches),
                                     BandSums.zero(first.config.n_mels)))
        if writer.changed or not writer.complete:
            writer.finish({"source": "merge-cache", "parts": [shown(c.path) for c in caches]})
        report.windows_total = writer.n_committed
    report.seconds = time.perf_counter() - started
    report.bytes_on_disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file() and not p.is_symlink())
    return report


def _copy(cache: Cache, row: dict, writer: CacheWriter, report: BuildReport) -> None:
    """One recording of a part, its stored windows as they are, into the writer."""
    base = {k: row[k] for k in ROW_ORDER if k in row}
    source = {k: v for k, v in row.items() if k not in BASE_COLUMNS and k not in WRITER_COLUMNS}
    first, n = row["first_window"], row["n_windows"]
    secondary = [name for name in (row.get("labels") or [])[1:]]
    if not n:
        writer.add_recording({**base, "source": source}, secondary=secondary)
        if row["status"] == "skipped":
            report.skipped.append((row["path"], row.get("reason") or ""))
        return
    windows = cache.windows.slice(first, n)
    images = cache.read(np.arange(first, first + n))
    writer.add_recording({**base, "source": source}, images, windows.column("start_seconds").to_numpy(),
                         windows.column("rms").to_numpy(), secondary=secondary)
    report.recordings_added += 1
    report.windows_added += n


def _check_parts(caches: list[Cache]) -> None:
    first = caches[0]
    for cache in caches[1:]:
        if cache.fingerprint != first.fingerprint:
            raise CacheError(f"{shown(cache.path)} was built with another recipe than {shown(first.path)} "
                             f"(fingerprints {cache.fingerprint} and {first.fingerprint}); parts of one build share one")
        if cache.storage != first.storage or cache.class_names != first.class_names:
            raise CacheError(f"{shown(cache.path)} and {shown(first.path)} are not parts of one build (their storage "
                             "options or class names differ); build every part from the same input and recipe")
    parts = [c.attrs.get("provenance", {}).get("part") for c in caches]
    if all(p is not None for p in parts):
        counts = {p[1] for p in parts}
        ids = sorted(p[0] for p in parts)
        if len(counts) != 1 or ids != list(range(counts.pop())):
            present = ", ".join(f"{i}/{n}" for i, n in parts)
            raise CacheError(f"the parts given are {present}: not every part of one sharded build, each once. Fix: "
                             "pass all the part folders (e.g. OUT/part-*), after every part finished")
    paths = {}
    for cache in caches:
        for path in cache.recordings.column("path").to_pylist():
            if path in paths:
                raise CacheError(f"recording {shown(path)} is in both {shown(paths[path])} and {shown(cache.path)}; "
                                 "parts of one build never overlap")
            paths[path] = cache.path
