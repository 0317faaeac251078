"""``legacy_png``: an old ChirpID spectrogram set, read by this one reader.

The set is a per-window CSV (``spectrograms.csv``: ``filename, class_id, author``, one row
per PNG window, in the order the old code wrote them), the PNGs (8-bit grayscale,
313 wide x 224 high, row 0 the lowest mel band), usually ``classes.csv`` (``class_id,
scientific_name, common_name``) and ``recordings.csv`` (one row per recording:
``primary_label, scientific_name, common_name, filename, author, usable_segments,
class_id``), all written by the old ``legacy_preprocess``.

The PNG file names are never parsed (two recordings of different classes may share a
stem, and the number in a name counts windows over the whole set). Windows belong to
recordings by the set's own tables: the old code wrote them recording by recording, so
the window rows are ``recordings.csv``'s recordings in order, each taking its
``usable_segments`` rows; a class that disagrees is refused. Without ``recordings.csv``
(a hand-made set), consecutive rows of one class and author form one recording. A
window's ``start_seconds`` is its position within its recording times the window length:
the old set does not record where a window started (dropped quiet windows leave no trace),
so this is ordinal, not exact.

Class names: the ``class_map`` given (``--class-map``), else ``classes.csv`` beside the
window table, else ``recordings.csv``'s scientific names, else the ids as text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ManifestError
from ..text import shown
from .base import Manifest, Recording
from .chirpid import COLUMNS, class_id_of, read_class_map
from .paths import Root, hidden
from .tables import Table, read_table

NAME = "legacy_png"
WINDOWS_CSV, CLASSES_CSV, RECORDINGS_CSV, PNG_DIR = "spectrograms.csv", "classes.csv", "recordings.csv", "spectrograms"
#: The old recordings table's columns the import needs; a recordings.csv with none of them is another table.
OLD_RECORDING_COLUMNS = ("filename", "usable_segments", "class_id")
#: ``LegacySet.grouping`` when a recordings.csv of another kind lies beside the set.
OTHER_TABLE = "consecutive rows (recordings.csv is another table)"
#: The old recipe's image: 224 mel bands x 313 frames (PNG: 313 wide, 224 high).
HEIGHT, WIDTH = 224, 313


def detect(table: Table) -> bool:
    first = next((row.get("filename") for row in table.rows if row.get("filename")), "")
    return all(c in table.columns for c in COLUMNS) and first.lower().endswith(".png")


@dataclass
class LegacyRecording:
    """One recording of an old set: its windows are rows ``rows`` of the window table."""

    relpath: str
    class_id: int
    author: str
    rows: list[int] = field(default_factory=list)


@dataclass
class LegacySet:
    """An old PNG/CSV set: its window rows, class names and recordings (no pixels yet)."""

    csv_path: Path
    png_dir: Path
    filenames: list[str]  #: per window row, the PNG's name in ``png_dir``
    class_ids: np.ndarray  #: per window row, the old class_id
    authors: list[str]  #: per window row
    class_names: dict[int, str]  #: class_id -> name
    recordings: list[LegacyRecording]
    grouping: str  #: "recordings.csv", "consecutive rows" or OTHER_TABLE

    def images(self, rows, workers: int | None = None) -> np.ndarray:
        """The PNG pixels of window rows ``rows``: (len, 224, 313) uint8, decoded by
        Pillow on ``workers`` threads (it releases the GIL while it inflates)."""
        from concurrent.futures import ThreadPoolExecutor

        rows = list(rows)
        out = np.empty((len(rows), HEIGHT, WIDTH), dtype=np.uint8)

        def read(k: int) -> None:
            from PIL import Image

            path = self.png_dir / self.filenames[rows[k]]
            try:
                with Image.open(path) as img:
                    if img.size != (WIDTH, HEIGHT):
                        raise ManifestError(
                            f"{shown(path)}: {img.size[0]} wide x {img.size[1]} high, expected {WIDTH} x {HEIGHT} "
                            "(313 frames x 224 mel bands). Fix: remove its row; it was not made with the old recipe")
                    out[k] = np.asarray(img if img.mode == "L" else img.convert("L"))
            except OSError as exc:
                raise ManifestError(f"{shown(path)}: not a readable PNG ({exc}). Fix: restore it or remove its row") from None

        workers = workers or min(8, os.cpu_count() or 1)
        if len(rows) <= 1:
            for k in range(len(rows)):
                read(k)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(read, range(len(rows))))
        return out


def read_set(csv_path, png_dir=None, class_map=None) -> LegacySet:
    """Read and validate an old set (see the module docstring); raises ManifestError
    naming the file, the row and the fix."""
    table = read_table(Path(csv_path))
    table.require(COLUMNS, "an old PNG window table")
    filenames, class_ids, authors = [], [], []
    for i in range(len(table.rows)):
        entry = table.cell(i, "filename", "the PNG file name")
        if not entry.lower().endswith(".png"):
            raise ManifestError(f"{table.where(i)}, column 'filename': '{shown(entry)}' is not a .png in an old PNG "
                                "window table. Fix: list only the PNG windows")
        filenames.append(entry)
        class_ids.append(class_id_of(table, i))
        authors.append(table.rows[i].get("author") or "unknown")
    if not filenames:
        raise ManifestError(f"{shown(table.path)}: the table has no rows. Fix: list one PNG window per row")
    folder = Path(png_dir) if png_dir is not None else _find_png_dir(table, filenames[0])
    base = Root(folder, "PNG folder")
    missing, rows_of = [], {}
    for i, entry in enumerate(filenames):
        path, rel = base.entry(entry, f"{table.where(i)}, column 'filename'")
        first = rows_of.setdefault(rel, i)
        if first != i:
            raise ManifestError(f"{table.where(i)}: '{shown(rel)}' is already listed in data row {first + 1}. Fix: "
                                "remove the duplicate row")
        if not os.path.isfile(path):
            missing.append(path)
    if missing:
        raise ManifestError(f"{shown(missing[0])}: listed in {shown(table.path)} but missing ({len(missing)} of "
                            f"{len(filenames)} PNGs missing). Fix: restore the file(s), pass the folder that holds "
                            "them as the PNG folder (--audio-root), or remove their rows")
    home = table.path.parent
    recordings_table = read_table(home / RECORDINGS_CSV) if (home / RECORDINGS_CSV).is_file() else None
    other_table = recordings_table is not None and not set(OLD_RECORDING_COLUMNS) & set(recordings_table.columns)
    if other_table:  # a table of another kind that happens to share the name (none of the old columns)
        recordings_table = None
    names = _class_names(class_map, home, recordings_table, class_ids)
    unknown = sorted(set(class_ids) - set(names))
    if unknown:
        raise ManifestError(f"{shown(table.path)}: class_id(s) {unknown[:8]} are not in the class map. Fix: add them")
    ids = np.asarray(class_ids, dtype=np.int64)
    if recordings_table is not None:
        recordings, grouping = _by_recordings_table(recordings_table, table, ids, authors), "recordings.csv"
    else:
        recordings, grouping = _by_consecutive_rows(ids, authors), OTHER_TABLE if other_table else "consecutive rows"
    return LegacySet(table.path.resolve(), Path(base.real), filenames, ids, authors, names, recordings, grouping)


def read(table: Table, png_dir=None, class_map=None) -> Manifest:
    """The manifest of an old set: its recordings (without audio) and the set itself."""
    legacy = read_set(table.path, png_dir, class_map)
    recordings = [Recording(legacy.png_dir / rec.relpath, legacy.class_names[rec.class_id], rec.author, rec.relpath)
                  for rec in legacy.recordings]
    beside = (f"the {RECORDINGS_CSV} beside it is not an old recordings table (none of its columns "
              f"{', '.join(OLD_RECORDING_COLUMNS)}), so it was not used" if legacy.grouping == OTHER_TABLE
              else f"no {RECORDINGS_CSV} beside it")
    notes = [] if legacy.grouping == "recordings.csv" else [
        f"{shown(table.path)}: {beside}; consecutive windows of one class and author are taken as one recording"]
    return Manifest(NAME, legacy.png_dir, recordings, list(legacy.class_names.values()), legacy=legacy, notes=notes)


def _by_recordings_table(recordings: Table, windows: Table, ids: np.ndarray, authors) -> list[LegacyRecording]:
    recordings.require(OLD_RECORDING_COLUMNS, "an old recordings table")
    out, row = [], 0
    for i in range(len(recordings.rows)):
        rel = recordings.cell(i, "filename", "the recording's file name")
        try:
            count = int(recordings.cell(i, "usable_segments", "the number of its PNG windows"))
        except ValueError:
            count = -1
        if count < 0:
            raise ManifestError(f"{recordings.where(i)}, column 'usable_segments': not a count of windows")
        class_id = class_id_of(recordings, i)
        rows = list(range(row, row + count))
        if row + count > len(ids) or any(ids[r] != class_id for r in rows):
            bad = next((r for r in rows if r >= len(ids) or ids[r] != class_id), row)
            raise ManifestError(
                f"{recordings.where(i)}: its {count} window(s) should be rows {row + 1}-{row + count} of "
                f"{shown(windows.path)}, but data row {bad + 1} is " + (f"of class_id {ids[bad]}, not {class_id}"
                if bad < len(ids) else "past the end") + ". Fix: restore the old set's tables as they were written, "
                f"or remove {RECORDINGS_CSV} to group windows by consecutive class and author")
        out.append(LegacyRecording(rel, class_id, recordings.rows[i].get("author") or "unknown", rows))
        row += count
    if row != len(ids):
        raise ManifestError(f"{shown(recordings.path)}: its usable_segments add up to {row} windows, "
                            f"{shown(windows.path)} lists {len(ids)}. Fix: restore the tables as the old code wrote "
                            f"them, or remove {RECORDINGS_CSV}")
    return out


def _by_consecutive_rows(ids: np.ndarray, authors) -> list[LegacyRecording]:
    out: list[LegacyRecording] = []
    for row, (class_id, author) in enumerate(zip(ids.tolist(), authors)):
        if not out or (out[-1].class_id, out[-1].author) != (class_id, author):
            out.append(LegacyRecording(f"recording-{len(out) + 1:05d}", class_id, author))
        out[-1].rows.append(row)
    return out


def _class_names(class_map, home: Path, recordings: Table | None, class_ids) -> dict[int, str]:
    if class_map is not None:
        return read_class_map(class_map)
    if (home / CLASSES_CSV).is_file():
        return read_class_map(home / CLASSES_CSV)
    if recordings is not None and "scientific_name" in recordings.columns:
        names = {}
        for i in range(len(recordings.rows)):
            names.setdefault(class_id_of(recordings, i), recordings.cell(i, "scientific_name", "the species name"))
        if set(class_ids) <= set(names):
            return names
    return {i: str(i) for i in sorted(set(class_ids))}


def _find_png_dir(table: Table, first: str) -> Path:
    """The CSV's folder, or its one sub-folder, that holds the first listed PNG."""
    home = table.path.parent
    if (home / first).is_file():
        return home
    holders = sorted(d for d in home.iterdir() if d.is_dir() and not hidden(d.name) and (d / first).is_file())
    if len(holders) == 1:
        return holders[0]
    found = f"it is in {len(holders)} sub-folders" if holders else "no sub-folder holds it"
    raise ManifestError(f"{shown(table.path)}: cannot tell which folder holds the PNGs ('{shown(first)}' is not next to "
                        f"the CSV and {found}). Fix: pass the PNG folder as audio_root / --audio-root")
