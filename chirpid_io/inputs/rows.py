"""From table rows to recordings: the steps every table kind shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import ManifestError
from ..text import shown
from .base import Manifest, Recording
from .paths import Root
from .tables import Table


class RowCollector:
    """Collects one recording per table row, checking what all table kinds check."""

    def __init__(self, table: Table, root: Root, path_column: str):
        self.table, self.root, self.path_column = table, root, path_column
        self.recordings: list[Recording] = []
        self._rows_of: dict[str, int] = {}

    def add(self, i: int, entry: str, label: str, group: str | None, secondary=(), source=None,
            alternative: str | None = None) -> None:
        """Row ``i`` lists ``entry``; ``alternative`` is tried when ``entry`` does not exist
        (BirdCLEF 2021 names files without their class folder)."""
        where = f"{self.table.where(i)}, column {self.path_column!r}"
        path, rel = self.root.entry(entry, where)
        if alternative is not None and not Path(path).exists():
            alt_path, alt_rel = self.root.entry(alternative, where)
            if Path(alt_path).exists():
                path, rel = alt_path, alt_rel
        first = self._rows_of.setdefault(rel, i)
        if first != i:
            raise ManifestError(f"{self.table.where(i)}: '{shown(rel)}' is already listed in data row {first + 1}. "
                                "Fix: remove the duplicate row")
        self.recordings.append(Recording(Path(path), label, group or rel, rel, tuple(secondary), source or {},
                                         self.root.problem(path, rel)))

    def manifest(self, kind: str, class_names, notes=()) -> Manifest:
        if not self.recordings:
            raise ManifestError(f"{shown(self.table.path)}: the table has no rows. Fix: list one recording per row")
        return Manifest(kind, Path(self.root.real), self.recordings, list(class_names), notes=list(notes))


def known_secondary(recordings: list[Recording], class_names, column: str) -> tuple[list[Recording], list[str]]:
    """Recordings with their secondary labels cut to known classes (and the primary left
    out), and a note counting the labels that name no class, so none vanish unsaid."""
    known = set(class_names)
    unknown: Counter = Counter()
    out = []
    for rec in recordings:
        kept = []
        for name in rec.secondary:
            if name == rec.label or name in kept:
                continue
            if name in known:
                kept.append(name)
            else:
                unknown[name] += 1
        out.append(rec if tuple(kept) == rec.secondary else _replace(rec, secondary=tuple(kept)))
    notes = []
    if unknown:
        listed = ", ".join(f"{shown(n)} x{c}" for n, c in unknown.most_common(8))
        more = f", ... ({len(unknown)} names in all)" if len(unknown) > 8 else ""
        notes.append(f"{sum(unknown.values())} secondary label(s) name no class of this input ({listed}{more}): "
                     f"they stay in the {column!r} column of recordings.parquet but not in the windows' label "
                     "sets. Fix: pass --class-map with every class to keep them")
    return out, notes


def _replace(rec: Recording, **changes) -> Recording:
    from dataclasses import replace

    return replace(rec, **changes)
