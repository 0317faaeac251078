"""What ``predict`` reads: audio files, folders of them (searched recursively, links
followed), and tables listing them (a CSV/Parquet with a ``path`` or ``filename`` column,
relative to the table's folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ManifestError
from ..text import shown


@dataclass(frozen=True)
class Source:
    """One recording to predict: ``name`` is how outputs call it (the path as given,
    or relative to the folder or table it came from), ``path`` where to read it."""

    name: str
    path: Path


def list_sources(items) -> list[Source]:
    """Every recording named by ``items`` (files, folders, tables), each once, in order."""
    from ..decoders import AUDIO_EXTENSIONS
    from ..inputs.paths import walk_files
    from ..inputs.tables import TABLE_EXTENSIONS, read_table

    out: list[Source] = []
    seen: set[str] = set()

    def add(name: str, path: Path) -> None:
        if name not in seen:
            seen.add(name)
            out.append(Source(name, path))

    for item in items:
        item = Path(item)
        if item.is_dir():
            for path in sorted(walk_files(os.fspath(item))):
                if path.lower().endswith(AUDIO_EXTENSIONS):
                    add(os.path.join(os.fspath(item), os.path.relpath(path, item)), Path(path))
        elif item.suffix.lower() in TABLE_EXTENSIONS:
            table = read_table(item)
            column = next((c for c in ("path", "filename") if c in table.columns), None)
            if column is None:
                raise ManifestError(f"{shown(item)}: a table of recordings to predict needs a 'path' or 'filename' "
                                    f"column (it has {', '.join(map(repr, table.columns))})")
            for i in range(len(table.rows)):
                entry = table.cell(i, column, "the recording's path")
                add(entry, item.parent / entry)
        else:
            add(os.fspath(item), item)  # a missing file is reported as an error of its own
    if not out:
        raise ManifestError("no recording to predict: the folders given hold no audio files. Fix: name audio files, "
                            "folders of them, or a table with a 'path' column")
    return out
