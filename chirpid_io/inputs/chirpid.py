"""``chirpid``: the old ChirpID recording table, and its class map.

The table has ``filename, class_id, author`` and optionally ``primary_label,
scientific_name, common_name, usable_segments``; the class map ``class_id,
scientific_name, common_name``. The label is the class map's scientific name for
``class_id`` (else the row's ``scientific_name`` or ``primary_label``); the group is
``author`` (the recordist). ``filename`` resolves as ``audio_root/filename``, or, when that
does not exist and the row has ``primary_label``, as ``audio_root/primary_label/filename``
(BirdCLEF's ``train_short_audio`` layout). With the class map, every class of the map is a
class name; ChirpID ids are alphabetical by scientific name, so label indices then equal
the old ``class_id`` values. Kept in table order, the order in which the old per-class
cap filled.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import ManifestError
from ..text import shown
from .base import Manifest, preview
from .paths import Root
from .rows import RowCollector
from .tables import Table, parse_class_id, read_table

NAME = "chirpid"
COLUMNS = ("filename", "class_id", "author")
CLASS_MAP_COLUMNS = ("class_id", "scientific_name")


def detect(table: Table) -> bool:
    return all(c in table.columns for c in COLUMNS)


def read(table: Table, audio_root, class_map=None, allow_outside_root: bool = False) -> Manifest:
    table.require(COLUMNS, "a ChirpID recording table")
    table.check_types({"path": "filename", "class_id": "class_id", "group": "author"})
    names = read_class_map(class_map) if class_map is not None else None
    name_column = next((c for c in ("scientific_name", "primary_label") if c in table.columns), None)
    if names is None and name_column is None:
        raise ManifestError(f"{shown(table.path)}: no class names: the table has no 'scientific_name' or "
                            "'primary_label' column. Fix: pass the class map CSV (class_id, scientific_name, "
                            "common_name) as class_map / --class-map")
    collector = RowCollector(table, Root(audio_root, "audio root", allow_outside_root), "filename")
    by_id: dict[int, tuple[str, int]] = {}  # class_id -> (name, first row) without a map
    used = {"filename", "class_id", "author"}
    for i, row in enumerate(table.rows):
        entry = table.cell(i, "filename", "the recording's file name")
        if entry.lower().endswith(".png"):
            raise ManifestError(f"{table.where(i)}, column 'filename': '{shown(entry)}' is a spectrogram PNG in a "
                                "recording table. Fix: list audio files here; an old PNG set is read as a whole")
        class_id = class_id_of(table, i)
        if names is not None:
            if class_id not in names:
                raise ManifestError(f"{table.where(i)}, column 'class_id': {class_id} is not in the class map "
                                    f"{shown(class_map)} (ids {preview(sorted(names))}). Fix: add it to the class "
                                    "map or remove the row")
            label = names[class_id]
        else:
            label = table.cell(i, name_column, "the species name")
            first = by_id.setdefault(class_id, (label, i))
            if first[0] != label:
                raise ManifestError(f"{table.where(i)}: class_id {class_id} is {label!r} here but {first[0]!r} in "
                                    f"data row {first[1] + 1}. Fix: make each class_id name one species, or pass "
                                    "the class map")
        primary = row.get("primary_label")
        collector.add(i, entry, label, row.get("author"), source=table.source_values(i, used),
                      alternative=f"{primary}/{entry}" if primary else None)
    class_names = list(names.values()) if names is not None else [r.label for r in collector.recordings]
    return collector.manifest(NAME, class_names)


def class_id_of(table: Table, i: int) -> int:
    return parse_class_id(table.cell(i, "class_id", "the integer class id"), table.where(i))


def read_class_map(path) -> dict[int, str]:
    """class_id -> scientific name, from the old class map CSV (or Parquet)."""
    table = read_table(Path(path))
    table.require(CLASS_MAP_COLUMNS, "a ChirpID class map")
    names: dict[int, str] = {}
    rows_of: dict[str, int] = {}
    for i in range(len(table.rows)):
        class_id = class_id_of(table, i)
        name = table.cell(i, "scientific_name", "the species name")
        if class_id in names:
            raise ManifestError(f"{table.where(i)}, column 'class_id': {class_id} appears twice. Fix: give each "
                                "class one row")
        if name in rows_of:
            raise ManifestError(f"{table.where(i)}, column 'scientific_name': {name!r} also names data row "
                                f"{rows_of[name] + 1}. Fix: give each class one row")
        names[class_id] = name
        rows_of[name] = i
    if not names:
        raise ManifestError(f"{shown(table.path)}: the class map has no rows. Fix: list the classes")
    return names


def read_class_list(path) -> list[str]:
    """Class names from a table: an old class map (its scientific names), or a column
    ``primary_label`` (BirdCLEF's taxonomy.csv), ``label`` or ``class_name``."""
    table = read_table(Path(path))
    if all(c in table.columns for c in CLASS_MAP_COLUMNS):
        return list(read_class_map(path).values())
    column = next((c for c in ("primary_label", "label", "class_name") if c in table.columns), None)
    if column is None:
        raise ManifestError(f"{shown(path)}: a class map needs a column 'primary_label', 'label' or 'class_name' (or "
                            "ChirpID's class_id, scientific_name); it has " + ", ".join(map(repr, table.columns)))
    names = [table.cell(i, column, "the class name") for i in range(len(table.rows))]
    doubled = sorted(n for n, count in Counter(names).items() if count > 1)
    if doubled:
        raise ManifestError(f"{shown(path)}: class(es) {preview(doubled)} are listed twice. Fix: list each once")
    if not names:
        raise ManifestError(f"{shown(path)}: the class map has no rows. Fix: list the classes")
    return names
