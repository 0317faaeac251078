"""The inputs of ``chirpid-io build-cache``: one normalised list of recordings.

Four kinds of input become one :class:`Manifest`:

``folder``
    A folder with one sub-folder per class; audio files (.wav .flac .ogg .mp3, any case)
    are found recursively inside each class folder. Hidden files and folders and non-audio
    files are ignored; a class folder may be empty (its class still gets an index).
    Without group information, a recording's group is its relative path, so grouped
    splits fall back to recording level.
``chirpid``
    The old ChirpID recording table (``filename, class_id, author``, optionally
    ``primary_label, scientific_name, common_name, usable_segments``) with an optional
    class map (``class_id, scientific_name, common_name``) and an audio root. The label is
    the class map's scientific name for ``class_id`` (else the row's ``scientific_name``
    or ``primary_label``); the group is ``author`` (the recordist).
``table``
    Any CSV or Parquet table with ``path, label`` and optional ``group`` columns; relative
    paths resolve under an audio root (default: the table's folder).
``legacy_png``
    An old spectrogram set: a CSV of ``filename, class_id, author`` whose filenames are
    PNG windows, next to a folder of PNGs. It is only detected and validated here; the
    cache builder imports it with ``chirpid_io.legacy.read_legacy_dataset(csv, png_dir)``.

Everything is checked before any audio is touched: a missing column, an unknown class,
a duplicate path, an empty input, or a path that escapes its root (``..``, an absolute
path elsewhere, a symlink pointing out) raises :class:`ManifestError` naming the file,
the column or the data row (1-based, the header not counted) and the fix. A listed file
that does not exist is *not* an error: it is kept, and the builder records it as skipped
with its reason, so one lost file never stops a build.
"""

from __future__ import annotations

import bisect
import csv
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .errors import ManifestError
from .text import shown

__all__ = [
    "AUDIO_EXTENSIONS",
    "Manifest",
    "ManifestError",
    "Recording",
    "discover",
    "from_chirpid_csv",
    "from_folder",
    "from_legacy_csv",
    "from_table",
    "samples_dir",
]

#: File name endings treated as audio in a folder-per-class input (compared lower-cased).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")
#: A folder input whose root holds this table (with ``path, label``) is read as a table.
FOLDER_MANIFEST = "manifest.csv"

TABLE_COLUMNS = ("path", "label")
CHIRPID_COLUMNS = ("filename", "class_id", "author")
CLASS_MAP_COLUMNS = ("class_id", "scientific_name")


@dataclass(frozen=True)
class Recording:
    """One input recording.

    ``path`` is absolute and resolved (symlinks followed) and lies under the manifest's
    root; it may not exist. ``relpath`` is the POSIX path relative to the root as the
    input named it. ``group`` is what grouped splits keep together (recordist, bird,
    source); ``label`` is the class name.
    """

    path: Path
    label: str
    group: str
    relpath: str


@dataclass
class Manifest:
    """The recordings of one input, in a deterministic order.

    ``kind`` is "folder", "chirpid", "table" or "legacy_png". ``class_names`` is sorted
    (code-point order) and may hold classes without recordings (an empty class folder, a
    class-map entry nobody recorded), so label indices do not depend on what was found.
    ``legacy`` is ``(csv, png_dir)`` for a "legacy_png" input, whose ``recordings`` is
    empty (its windows are imported, not decoded), else None.
    """

    kind: str
    root: Path
    recordings: list[Recording]
    class_names: list[str]
    legacy: tuple[Path, Path] | None = None

    def __post_init__(self) -> None:
        # Label indices are positions in class_names, so the order is the contract.
        self.class_names = sorted(set(self.class_names))
        known = set(self.class_names)
        for rec in self.recordings:
            if rec.label not in known:
                raise ManifestError(
                    f"recording {rec.relpath!r} has label {rec.label!r}, which is not among "
                    f"the manifest's class names; add it to class_names"
                )

    def __len__(self) -> int:
        return len(self.recordings)

    def label_index(self, label: str) -> int:
        """The integer class index of ``label`` (its position in ``class_names``)."""
        i = bisect.bisect_left(self.class_names, label)
        if i == len(self.class_names) or self.class_names[i] != label:
            raise ManifestError(
                f"unknown label {label!r}; the classes are {_preview(self.class_names)}"
            )
        return i


def samples_dir() -> Path:
    """The bundled sample recordings (a folder-per-class set with a ``manifest.csv``)."""
    return Path(__file__).resolve().parent / "data" / "samples"


# --------------------------------------------------------------------------- entry points


def discover(
    source: str | os.PathLike,
    *,
    audio_root: str | os.PathLike | None = None,
    class_map: str | os.PathLike | None = None,
) -> Manifest:
    """Read ``source``, deciding its kind from what it is.

    A directory is a folder-per-class set, unless its root holds a ``manifest.csv`` with
    ``path, label`` columns: then that table is read (groups come from it) with the
    directory as root. A .csv/.parquet file is a ``path, label`` table, or a ChirpID
    ``filename, class_id, author`` table: a recording table ("chirpid") or, when its
    filenames are .png, an old spectrogram set ("legacy_png", whose PNG folder is
    ``audio_root``, else found next to the CSV). ``audio_root`` defaults to the table's
    folder; ``class_map`` applies to ChirpID tables only.

    Raises ManifestError for a bad input (see the module docstring). A listed file that
    does not exist is kept: the builder records it as skipped, with the reason.
    """
    source = Path(source)
    if source.is_dir():
        if audio_root is not None or class_map is not None:
            raise ManifestError(
                f"{source}: audio_root and class_map apply to tables, not to a folder; "
                f"leave them out (the folder is the root)"
            )
        listing = source / FOLDER_MANIFEST
        if listing.is_file():
            table = _read_table(listing)
            if all(c in table.columns for c in TABLE_COLUMNS):
                return _table_manifest(table, source)
        return from_folder(source)
    table = _read_table(source)
    if all(c in table.columns for c in TABLE_COLUMNS):
        if class_map is not None:
            raise ManifestError(
                f"{source}: class_map applies to ChirpID tables (filename, class_id, author), "
                f"not to a path, label table; leave it out"
            )
        return _table_manifest(table, audio_root if audio_root is not None else source.parent)
    if all(c in table.columns for c in CHIRPID_COLUMNS):
        if _first_filename_is_png(table):
            return _legacy_manifest(table, audio_root, class_map)
        root = audio_root if audio_root is not None else source.parent
        return _chirpid_manifest(table, root, class_map)
    raise ManifestError(
        f"{source}: columns {_preview(table.columns)} match no known input. Fix: give the "
        f"table columns 'path' and 'label' (optionally 'group'), or use a ChirpID table "
        f"with 'filename', 'class_id' and 'author'"
    )


def from_folder(root: str | os.PathLike) -> Manifest:
    """A folder with one sub-folder per class (see the module docstring).

    Sorted by class, then relative path. Refused when no class folder holds any audio.
    """
    base = _Root(root, "folder")
    classes = []
    found: list[tuple[str, str, str]] = []  # (label, relpath, lexical path)
    loose = 0  # audio files directly in the root: they have no class
    with os.scandir(base.abs) as entries:
        for entry in entries:
            if _hidden(entry.name):
                continue
            if entry.is_dir():
                classes.append(entry.name)
                found.extend((entry.name, rel, p) for rel, p in _audio_files(base.abs, entry.name))
            elif _is_audio(entry.name):
                loose += 1
    if not found:
        if not classes:
            hint = (
                f"it holds {loose} audio file(s) but no class sub-folders"
                if loose
                else "it holds no class sub-folders"
            )
        else:
            hint = f"its {len(classes)} class folder(s) hold no audio files"
        raise ManifestError(
            f"{base.abs}: no recordings found; {hint}. Fix: put the recordings in one "
            f"sub-folder per class (e.g. {os.path.join(base.abs, 'great_tit', 'rec1.wav')}), with "
            f"extensions {', '.join(AUDIO_EXTENSIONS)}"
        )
    found.sort(key=lambda item: (item[0], item[1]))
    recordings = []
    seen: dict[str, str] = {}
    for label, rel, lexical in found:
        real = base.resolve(lexical, f"{base.abs}: {rel}", "this file")
        if real in seen:
            raise ManifestError(
                f"{base.abs}: {rel} and {seen[real]} are the same file ({real}) through a "
                f"symlink. Fix: remove one of them"
            )
        seen[real] = rel
        recordings.append(Recording(Path(real), label, rel, rel))
    return Manifest("folder", Path(base.real), recordings, classes)


def from_table(path: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> Manifest:
    """A CSV or Parquet table with ``path, label`` and optional ``group`` columns.

    Relative paths resolve under ``audio_root`` (default: the table's folder); absolute
    paths must lie under it too. An empty ``group`` cell makes the recording its own
    group. Kept in table order.
    """
    path = Path(path)
    table = _read_table(path)
    return _table_manifest(table, audio_root if audio_root is not None else path.parent)


def from_chirpid_csv(
    csv_path: str | os.PathLike,
    audio_root: str | os.PathLike,
    class_map: str | os.PathLike | None = None,
) -> Manifest:
    """The old ChirpID recording table (see the module docstring).

    ``filename`` resolves as ``audio_root/filename``, or, when that file does not exist
    and the table has ``primary_label``, as ``audio_root/primary_label/filename`` (the
    BirdCLEF ``train_short_audio`` layout). With ``class_map`` every class of the map is
    a class name; since ChirpID ids are alphabetical by scientific name, the label
    indices then equal the old ``class_id`` values. Kept in table order, which is the
    order in which the old per-class cap filled.
    """
    return _chirpid_manifest(_read_table(Path(csv_path)), audio_root, class_map)


def from_legacy_csv(
    csv_path: str | os.PathLike,
    png_dir: str | os.PathLike | None = None,
    class_map: str | os.PathLike | None = None,
) -> Manifest:
    """An old PNG/CSV spectrogram set: validate it and return a "legacy_png" marker.

    ``png_dir`` defaults to the CSV's folder or the one sub-folder of it that holds the
    listed PNGs. ``class_names`` comes from ``class_map`` when given, else it is left
    empty for the legacy reader to fill.
    """
    return _legacy_manifest(_read_table(Path(csv_path)), png_dir, class_map)


# --------------------------------------------------------------------------- the kinds


def _table_manifest(table: _Table, audio_root: str | os.PathLike) -> Manifest:
    _require(table, TABLE_COLUMNS, "a path, label table")
    base = _Root(audio_root, "audio root")
    has_group = "group" in table.columns
    recordings = []
    seen: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        entry = _cell(table, i, "path", "the recording's path relative to the audio root")
        label = _cell(table, i, "label", "the class name")
        real, rel = base.entry(entry, f"{table.where(i)}, column 'path'")
        _unique(table, i, real, seen)
        group = (row.get("group") or "") if has_group else ""
        recordings.append(Recording(Path(real), label, group or rel, rel))
    _nonempty(table, recordings)
    return Manifest("table", Path(base.real), recordings, [r.label for r in recordings])


def _chirpid_manifest(
    table: _Table, audio_root: str | os.PathLike, class_map: str | os.PathLike | None
) -> Manifest:
    _require(table, CHIRPID_COLUMNS, "a ChirpID recording table")
    base = _Root(audio_root, "audio root")
    names = _read_class_map(class_map) if class_map is not None else None
    name_columns = [c for c in ("scientific_name", "primary_label") if c in table.columns]
    name_column = name_columns[0] if name_columns else None
    if names is None and name_column is None:
        raise ManifestError(
            f"{table.path}: no class names: the table has no 'scientific_name' or "
            f"'primary_label' column. Fix: pass the class map CSV (class_id, "
            f"scientific_name, common_name) as class_map / --class-map"
        )
    by_id: dict[int, tuple[str, int]] = {}  # class_id -> (name, first row) without a map
    recordings = []
    seen: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        entry = _cell(table, i, "filename", "the recording's file name")
        if entry.lower().endswith(".png"):
            raise ManifestError(
                f"{table.where(i)}, column 'filename': {entry!r} is a spectrogram PNG in a "
                f"recording table. Fix: list audio files here; an old PNG set is read as a "
                f"whole with from_legacy_csv"
            )
        class_id = _class_id(table, i)
        if names is not None:
            if class_id not in names:
                raise ManifestError(
                    f"{table.where(i)}, column 'class_id': {class_id} is not in the class map "
                    f"{class_map} (ids {_preview(sorted(names))}). Fix: add it to the class "
                    f"map or remove the row"
                )
            label = names[class_id]
        else:
            label = _cell(table, i, name_column, "the species name")
            first = by_id.setdefault(class_id, (label, i))
            if first[0] != label:
                raise ManifestError(
                    f"{table.where(i)}: class_id {class_id} is {label!r} here but "
                    f"{first[0]!r} in data row {first[1] + 1}. Fix: make each class_id "
                    f"name one species, or pass the class map"
                )
        where = f"{table.where(i)}, column 'filename'"
        real, rel = base.entry(entry, where)
        if row.get("primary_label") and not os.path.exists(real):
            alt = base.entry(f"{row['primary_label']}/{entry}", where)
            if os.path.exists(alt[0]):
                real, rel = alt
        _unique(table, i, real, seen)
        recordings.append(Recording(Path(real), label, row.get("author") or rel, rel))
    _nonempty(table, recordings)
    class_names = list(names.values()) if names is not None else [r.label for r in recordings]
    return Manifest("chirpid", Path(base.real), recordings, class_names)


def _legacy_manifest(
    table: _Table, png_dir: str | os.PathLike | None, class_map: str | os.PathLike | None
) -> Manifest:
    _require(table, CHIRPID_COLUMNS, "an old PNG window table")
    names = _read_class_map(class_map) if class_map is not None else None
    entries = []
    for i in range(len(table.rows)):
        entry = _cell(table, i, "filename", "the PNG file name")
        if not entry.lower().endswith(".png"):
            raise ManifestError(
                f"{table.where(i)}, column 'filename': {entry!r} is not a .png in an old "
                f"PNG window table. Fix: list only the PNG windows"
            )
        class_id = _class_id(table, i)
        if names is not None and class_id not in names:
            raise ManifestError(
                f"{table.where(i)}, column 'class_id': {class_id} is not in the class map "
                f"{class_map}. Fix: add it to the class map or remove the row"
            )
        entries.append((i, entry))
    if not entries:
        _nonempty(table, [])
    folder = Path(png_dir) if png_dir is not None else _find_png_dir(table, entries[0][1])
    base = _Root(folder, "PNG folder")
    any_found = False
    seen: dict[str, int] = {}
    for i, entry in entries:
        real, _ = base.entry(entry, f"{table.where(i)}, column 'filename'")
        _unique(table, i, real, seen)
        any_found = any_found or os.path.isfile(real)
    if not any_found:
        raise ManifestError(
            f"{table.path}: none of the {len(entries)} listed PNGs is in {base.abs}. Fix: "
            f"pass the folder that holds them as the PNG folder (--audio-root)"
        )
    class_names = list(names.values()) if names is not None else []
    png_root = Path(base.real)
    legacy = (table.path.resolve(), png_root)
    return Manifest("legacy_png", png_root, [], class_names, legacy=legacy)


def _find_png_dir(table: _Table, first: str) -> Path:
    """The CSV's folder, or its one sub-folder, that holds the first listed PNG."""
    home = table.path.parent
    if (home / first).is_file():
        return home
    holders = sorted(
        d for d in home.iterdir() if d.is_dir() and not _hidden(d.name) and (d / first).is_file()
    )
    if len(holders) == 1:
        return holders[0]
    found = f"it is in {len(holders)} sub-folders" if holders else "no sub-folder holds it"
    raise ManifestError(
        f"{table.path}: cannot tell which folder holds the PNGs ({first!r} is not next to the "
        f"CSV and {found}). Fix: pass the PNG folder as audio_root / --audio-root"
    )


def _first_filename_is_png(table: _Table) -> bool:
    first = next((row.get("filename") for row in table.rows if row.get("filename")), "")
    return first.lower().endswith(".png")


def _read_class_map(path: str | os.PathLike) -> dict[int, str]:
    """class_id -> scientific name, from the old class map CSV (or Parquet)."""
    table = _read_table(Path(path))
    _require(table, CLASS_MAP_COLUMNS, "a ChirpID class map")
    names: dict[int, str] = {}
    rows_of: dict[str, int] = {}
    for i in range(len(table.rows)):
        class_id = _class_id(table, i)
        name = _cell(table, i, "scientific_name", "the species name")
        if class_id in names:
            raise ManifestError(
                f"{table.where(i)}, column 'class_id': {class_id} appears twice. Fix: give "
                f"each class one row"
            )
        if name in rows_of:
            raise ManifestError(
                f"{table.where(i)}, column 'scientific_name': {name!r} also names data row "
                f"{rows_of[name] + 1}. Fix: give each class one row"
            )
        names[class_id] = name
        rows_of[name] = i
    if not names:
        raise ManifestError(f"{table.path}: the class map has no rows. Fix: list the classes")
    return names


# --------------------------------------------------------------------------- tables


class _Table(NamedTuple):
    """A table read as text: stripped string cells, None where a cell is empty or null."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str | None]]
    lines: list[int] | None  #: the file line each CSV row starts on; None for Parquet

    def where(self, i: int) -> str:
        """Data row ``i`` (0-based) as users count it: 1-based, the header not counted."""
        line = f" (line {self.lines[i]})" if self.lines is not None else ""
        return f"{self.path}, data row {i + 1}{line}"


def _read_table(path: Path) -> _Table:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ManifestError(f"{path}: {what}. Fix: pass an existing .csv or .parquet table")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    raise ManifestError(
        f"{path}: not a table (expected one of {', '.join(TABLE_EXTENSIONS)}). Fix: pass a "
        f"folder of class sub-folders, or a CSV/Parquet table"
    )


def _read_csv(path: Path) -> _Table:
    # The csv module keeps every cell as text: a spreadsheet's "007" or "1e3" label stays
    # what the user typed, which type-inferring readers would not promise.
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ManifestError(
                    f"{path}: the file is empty. Fix: write a header row and one row per recording"
                )
            columns = _columns(path, header)
            rows, lines = [], []
            start = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    if len(cells) > len(columns):
                        raise ManifestError(
                            f"{path}, data row {len(rows) + 1} (line {start}): {len(cells)} "
                            f"cells but {len(columns)} columns. Fix: quote values that "
                            f"contain commas"
                        )
                    rows.append({c: (v.strip() or None) for c, v in zip(columns, cells)})
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text. Fix: save the table as UTF-8 CSV") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a readable CSV ({exc}). Fix: check its quoting") from None
    return _Table(path, columns, rows, lines)


#: Arrow types a Parquet column of each meaning may have; anything else (a float label
#: column, where NaN would become the class "nan"; integer paths) is refused.
_TEXT_TYPES = ("string", "large_string")
_PARQUET_TYPES = {
    "path": _TEXT_TYPES, "filename": _TEXT_TYPES,
    "label": _TEXT_TYPES + ("integer",), "class_id": ("integer",), "primary_label": _TEXT_TYPES,
    "group": _TEXT_TYPES + ("integer",), "author": _TEXT_TYPES + ("integer",),
}


def _read_parquet(path: Path) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{shown(path)}: not a readable Parquet file ({exc})") from None
    columns = _columns(path, data.column_names)
    for name, allowed in _PARQUET_TYPES.items():
        if name in columns:
            kind = data.schema.field(name).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            family = "integer" if pa.types.is_integer(kind) else str(kind)
            if family not in allowed:
                want = " or ".join("integers" if a == "integer" else "text" for a in dict.fromkeys(
                    "integer" if a == "integer" else "text" for a in allowed))
                raise ManifestError(
                    f"{shown(path)}, column {name!r}: has type {kind}, it must hold {want}. Fix: write the "
                    f"column as {want} (a float column turns missing values into NaN)")
    rows = [
        {c: _text(v) for c, v in zip(columns, values)}
        for values in zip(*(data.column(i).to_pylist() for i in range(data.num_columns)))
    ]
    return _Table(path, columns, rows, None)


def _columns(path: Path, header: Iterable[str]) -> list[str]:
    columns = [str(c).strip() for c in header]
    doubled = sorted({c for c in columns if columns.count(c) > 1})
    if doubled:
        raise ManifestError(
            f"{path}: column(s) {_preview(doubled)} appear more than once. Fix: rename or "
            f"remove the duplicates"
        )
    return columns


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a Parquet float column of ids, as pandas writes with NaNs
    text = str(value).strip()
    return text or None


def _require(table: _Table, required: Iterable[str], what: str) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ManifestError(
            f"{table.path}: missing column(s) {_preview(missing)} for {what} (it has "
            f"{_preview(table.columns)}). Fix: add or rename the column(s)"
        )


def _cell(table: _Table, i: int, column: str, meaning: str) -> str:
    value = table.rows[i].get(column)
    if value is None:
        raise ManifestError(
            f"{table.where(i)}, column {column!r}: empty. Fix: fill in {meaning}, or remove "
            f"the row"
        )
    return value


def _class_id(table: _Table, i: int) -> int:
    return parse_class_id(_cell(table, i, "class_id", "the integer class id"), table.where(i))


def parse_class_id(text: str, where: str) -> int:
    """An old table's integer ``class_id`` ("3" or "3.0"); ``where`` names file and row."""
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise ManifestError(
            f"{where}, column 'class_id': {text!r} is not an integer. Fix: use the "
            f"class map's integer ids"
        )
    return int(number)


def _unique(table: _Table, i: int, real: str, seen: dict[str, int]) -> None:
    if real in seen:
        raise ManifestError(
            f"{table.where(i)}: {real} is already listed in data row {seen[real] + 1}. Fix: "
            f"remove the duplicate row"
        )
    seen[real] = i


def _nonempty(table: _Table, recordings: list) -> None:
    if not recordings:
        raise ManifestError(
            f"{table.path}: the table has no rows. Fix: list one recording per row"
        )


# --------------------------------------------------------------------------- paths


class _Root:
    """A root folder that every listed file must resolve into.

    Paths are handled as strings with a cache of resolved folders: pathlib and a full
    ``realpath`` per file made a 60 000-row table take ~10 s; this takes ~1 s.
    """

    def __init__(self, root: str | os.PathLike, what: str):
        self.abs = os.path.abspath(root)
        if not os.path.isdir(self.abs):
            state = "is a file" if os.path.exists(self.abs) else "does not exist"
            raise ManifestError(f"{self.abs}: the {what} {state}. Fix: pass an existing folder")
        self.real = os.path.realpath(self.abs)
        self._folders: dict[str, str] = {}  # lexical folder -> resolved folder

    def entry(self, entry: str, where: str) -> tuple[str, str]:
        """A listed path as (resolved path, relpath); refused when it leaves the root.

        ``..`` is collapsed before symlinks are followed, so ``a/../b.wav`` means
        ``root/b.wav`` whatever ``a`` is.
        """
        joined = entry if os.path.isabs(entry) else os.path.join(self.abs, entry)
        lexical = os.path.normpath(joined)
        rel = _relative(lexical, self.abs)
        if rel is None:
            rel = _relative(lexical, self.real)  # absolute entries may name the real root
        if rel is None:
            raise ManifestError(
                f"{where}: {entry!r} lies outside the audio root {self.abs}. Fix: move the "
                f"file under the root, or pass a root that contains it"
            )
        if rel == ".":
            raise ManifestError(f"{where}: {entry!r} names the root folder itself, not a file")
        return self.resolve(lexical, where, repr(entry)), rel

    def resolve(self, lexical: str, where: str, what: str) -> str:
        """Follow symlinks; refuse a target outside the root (a link pointing out)."""
        folder, name = os.path.split(lexical)
        try:
            real_folder = self._folders.get(folder)
            if real_folder is None:
                real_folder = self._folders[folder] = os.path.realpath(folder)
            real = os.path.join(real_folder, name)
            try:
                is_link = stat.S_ISLNK(os.lstat(real).st_mode)
            except FileNotFoundError:
                is_link = False  # a missing file is the builder's to report
            except OSError:
                is_link = True  # let realpath decide
            if is_link:
                real = os.path.realpath(real)
        except ValueError as exc:  # an embedded NUL byte
            raise ManifestError(f"{where}: {what} is not a usable path ({exc})") from None
        if _relative(real, self.real) is None:
            raise ManifestError(
                f"{where}: {what} is a symlink to {real}, outside the root {self.real}. Fix: "
                f"copy the file under the root, or pass a root that contains its target"
            )
        return real


def _relative(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` as POSIX text ("." for base itself), None if outside."""
    if path == base:
        return "."
    prefix = base if base.endswith(os.sep) else base + os.sep
    if not path.startswith(prefix):
        return None
    return path[len(prefix):].replace(os.sep, "/")


def _audio_files(root: str, class_dir: str) -> list[tuple[str, str]]:
    """(relpath, lexical path) of every audio file below one class folder."""
    out = []
    # followlinks=False: a symlinked sub-folder could loop or lead anywhere.
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, class_dir), followlinks=False):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in filenames:
            if not _hidden(name) and _is_audio(name):
                path = os.path.join(dirpath, name)
                out.append((_relative(path, root), path))
    return out


def _hidden(name: str) -> bool:
    return name.startswith(".")  # also macOS "._x.wav" resource forks


def _is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def _preview(items: Iterable[object], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
