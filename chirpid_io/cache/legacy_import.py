"""Importing an old PNG/CSV set into a cache, without recomputing anything.

The set is read by its one reader (``chirpid_io.inputs.legacy_png``), which groups its
windows into recordings by the set's own tables. Each recording's PNGs are decoded when
it is stored, so memory stays bounded whatever the set's size. The PNGs hold
``uint8(value * 255)`` (truncated, not rounded): they are stored unchanged, so the loader
yields exactly what the old training read. A window's ``start_seconds`` is its position
in its recording times the window length (ordinal: the old set does not record where a
window started), and its RMS is unknown (NaN).
"""

from __future__ import annotations

import numpy as np

from ..errors import ManifestError
from ..inputs.legacy_png import HEIGHT, WIDTH, LegacySet


def import_legacy(legacy: LegacySet, todo, writer, report, progress=None) -> None:
    """Add the recordings ``todo`` (a manifest's, not yet in the cache) of ``legacy``."""
    from tqdm import tqdm

    config = writer.config
    if config.shape != (HEIGHT, WIDTH) or config.storage_dtype != "uint8":
        raise ManifestError(
            f"{legacy.csv_path}: old PNG windows are {HEIGHT} x {WIDTH} uint8 images of the chirpid recipe; this "
            f"cache's recipe gives {config.shape[0]} x {config.shape[1]} {config.storage_dtype}. Fix: import it with "
            "the default recipe (--preset chirpid)")
    by_path = {rec.relpath: rec for rec in legacy.recordings}
    bar = tqdm(todo, unit="rec", desc="import", disable=None if progress is None else not progress)
    for recording in bar:
        old = by_path[recording.relpath]
        row = {"path": old.relpath, "class_name": legacy.class_names[old.class_id], "group": old.author,
               "manifest_index": recording.index}
        if not old.rows:
            writer.add_recording({**row, "status": "skipped", "reason": "the old set holds no window of it"})
            report.skipped.append((old.relpath, "the old set holds no window of it"))
            continue
        images = legacy.images(old.rows)
        starts = np.arange(len(old.rows)) * config.hop_seconds
        writer.add_recording({**row, "status": "ok", "reason": "imported from PNG", "png_files": [
            legacy.filenames[r] for r in old.rows]}, images, starts, np.full(len(old.rows), np.nan))
        report.recordings_added += 1
        report.windows_added += len(old.rows)
