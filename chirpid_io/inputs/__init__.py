"""The inputs of ``chirpid-io build-cache``: each kind one module, all giving one Manifest.

==============  ========================================================================
kind            what it is (module)
==============  ========================================================================
``folder``      one sub-folder per class (``folder.py``)
``table``       any CSV/Parquet table: ``path, label[, group]``, or columns named with a
                ``ColumnMap`` / ``--path-column`` etc. (``mapped.py``)
``birdclef``    a BirdCLEF 2021-2025 ``train.csv`` / ``train_metadata.csv``
                (``primary_label, secondary_labels, filename, author, ...``; ``birdclef.py``)
``chirpid``     the old ChirpID recording table ``filename, class_id, author`` with its
                class map (``chirpid.py``)
``legacy_png``  an old ChirpID PNG/CSV spectrogram set, imported without recomputing
                (``legacy_png.py``)
==============  ========================================================================

Everything is checked before any audio is touched: a missing column, a column of the wrong
type, an unknown class, a duplicate row, an empty input, or a path a table writes outside
its root raises :class:`~chirpid_io.errors.ManifestError` naming the file, the column or
the data row (1-based, the header not counted) and the fix. A listed file that does not
exist, or a link that leads nowhere, is not an error: the builder records that recording
as skipped with its reason, so one lost file never stops a build.

A new input kind is one module with ``NAME``, ``detect(table)`` and ``read(...)``, and one
entry in :data:`KINDS`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ManifestError
from ..text import shown
from . import birdclef, chirpid, folder, legacy_png, mapped
from .base import ColumnMap, Manifest, Recording
from .tables import read_table

#: Table kinds in the order their columns are tried (the first that fits reads the table).
KINDS = {m.NAME: m for m in (legacy_png, chirpid, birdclef, mapped)}
ALL_KINDS = (folder.NAME, *KINDS)
#: A folder input whose root holds this table (with ``path, label``) is read as that table.
FOLDER_MANIFEST = "manifest.csv"

__all__ = ["ALL_KINDS", "ColumnMap", "KINDS", "Manifest", "Recording", "discover", "samples_dir"]


def discover(source, *, audio_root=None, class_map=None, columns=None, kind: str | None = None,
             allow_outside_root: bool = False) -> Manifest:
    """Read ``source`` as the kind it is (or as ``kind``).

    ``source``: a folder (folder-per-class, or a table ``manifest.csv`` in its root) or a
    .csv/.parquet table, whose kind is told by its columns (see the module docstring).
    ``audio_root``: the folder a table's paths are relative to (default: the table's
    folder); for an old PNG set, the folder of its PNGs. ``class_map``: the old ChirpID
    class map, or for other tables a list of every class (BirdCLEF's ``taxonomy.csv``).
    ``columns``: a :class:`ColumnMap` (or a mapping) naming the columns of a table in no
    known layout. ``allow_outside_root``: let a table list files outside the audio root.
    """
    source = Path(source)
    columns = ColumnMap.of(columns)
    if kind is not None and kind not in ALL_KINDS:
        raise ManifestError(f"unknown input kind {kind!r}; choose one of {', '.join(ALL_KINDS)}")
    if source.is_dir():
        if class_map is not None or columns is not None:
            raise ManifestError(f"{shown(source)}: a class map and column names apply to tables, not to a folder; "
                                "leave them out (the folder is the root)")
        listing = source / FOLDER_MANIFEST
        if kind in (None, mapped.NAME) and listing.is_file():
            table = read_table(listing)
            if mapped.detect(table):
                return mapped.read(table, source, allow_outside_root=allow_outside_root)
        if kind not in (None, folder.NAME):
            raise ManifestError(f"{shown(source)}: is a folder, not a {kind} table")
        return folder.read(source)
    if kind == folder.NAME:
        raise ManifestError(f"{shown(source)}: is not a folder")
    table = read_table(source)
    root = audio_root if audio_root is not None else source.parent
    if columns is not None or kind == mapped.NAME:
        return mapped.read(table, root, columns, _class_list(class_map), allow_outside_root)
    chosen = KINDS[kind] if kind is not None else next((m for m in KINDS.values() if m.detect(table)), None)
    if chosen is None:
        raise ManifestError(
            f"{shown(source)}: columns {', '.join(map(repr, table.columns[:12]))} match no known input. Fix: name the "
            "columns with --path-column and --label-column (and --group-column, --labels-column), or use one of: "
            "'path, label[, group]'; BirdCLEF's 'primary_label, filename[, secondary_labels, author]'; ChirpID's "
            "'filename, class_id, author'")
    if chosen is legacy_png:
        return legacy_png.read(table, audio_root, class_map)
    if chosen is chirpid:
        return chirpid.read(table, root, class_map, allow_outside_root)
    if chosen is birdclef:
        return birdclef.read(table, root, _class_list(class_map), allow_outside_root)
    return mapped.read(table, root, None, _class_list(class_map), allow_outside_root)


def samples_dir() -> Path:
    """The bundled sample recordings (a folder-per-class set with a ``manifest.csv``)."""
    return Path(__file__).resolve().parent.parent / "data" / "samples"


def _class_list(class_map) -> list[str] | None:
    return None if class_map is None else chirpid.read_class_list(class_map)

