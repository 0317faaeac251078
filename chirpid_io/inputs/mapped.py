"""``table``: any CSV or Parquet table, its columns named by a :class:`ColumnMap`.

By default the columns are ``path, label`` and optionally ``group`` (and a folder's
``manifest.csv`` is such a table); any other layout names its columns explicitly
(``--path-column``, ``--label-column``, ``--group-column``, ``--labels-column``, or
``columns=ColumnMap(...)``). Relative paths resolve under an audio root (default: the
table's folder). Every column not named is kept with the recording.
"""

from __future__ import annotations

from ..errors import ManifestError
from ..text import shown
from .base import ColumnMap, Manifest
from .paths import Root
from .rows import RowCollector, known_secondary
from .tables import Table

NAME = "table"
DEFAULT = ColumnMap()


def detect(table: Table) -> bool:
    return all(c in table.columns for c in (DEFAULT.path, DEFAULT.label))


def read(table: Table, audio_root, columns: ColumnMap | None = None, class_list=None,
         allow_outside_root: bool = False) -> Manifest:
    columns = columns or DEFAULT
    table.require([columns.path, columns.label], "a path, label table")
    for role in ("group", "labels"):
        name = getattr(columns, role)
        if name is not None and name not in table.columns and not (role == "group" and name == DEFAULT.group):
            raise ManifestError(f"{shown(table.path)}: no column {name!r} for --{role}-column (it has "
                                f"{', '.join(map(repr, table.columns))})")
    group = columns.group if columns.group in table.columns else None
    table.check_types({"path": columns.path, "label": columns.label, "group": group, "labels": columns.labels})
    collector = RowCollector(table, Root(audio_root, "audio root", allow_outside_root), columns.path)
    used = {columns.path, columns.label, group} - {None}  # the labels column stays, as the source had it
    for i, row in enumerate(table.rows):
        collector.add(i, table.cell(i, columns.path, "the recording's path relative to the audio root"),
                      table.cell(i, columns.label, "the class name"), row.get(group) if group else None,
                      table.label_list(i, columns.labels) if columns.labels else (), table.source_values(i, used))
    recordings = collector.recordings
    names = list(class_list) if class_list is not None else [r.label for r in recordings]
    unknown = sorted({r.label for r in recordings} - set(names))
    if unknown:
        raise ManifestError(f"{shown(table.path)}: label(s) {', '.join(map(repr, unknown[:8]))} are not in the class "
                            "map. Fix: add them to the class map, or leave --class-map out")
    notes = []
    if columns.labels:
        collector.recordings, notes = known_secondary(recordings, names, columns.labels)
    return collector.manifest(NAME, names, notes)
