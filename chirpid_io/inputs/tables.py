"""Tables as inputs: CSV and Parquet read the same way, cells checked where they are used.

Cells of the columns an input kind uses (path, label, group...) are stripped text, None
where empty. Every other column is kept for ``recordings.parquet`` and the window rows with
a type: Parquet's own, or for CSV one inferred per column (integers if every non-empty cell
is one, else numbers, else text), so ``rating >= 4`` works on the cache's tables.

Errors name the file and the data row as users count it (1-based, the header not counted,
with the CSV line), and say how to fix it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ManifestError
from ..text import shown
from .base import preview

TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")

#: Arrow types a Parquet column of each meaning may have; anything else (a float label
#: column, where NaN would become the class "nan"; integer paths) is refused.
_TEXT = ("text",)
ROLE_TYPES = {"path": _TEXT, "label": ("text", "integer"), "group": ("text", "integer"),
              "class_id": ("integer",), "labels": ("text", "list")}


@dataclass
class Table:
    """A table read from ``path``: column names, rows of text cells, typed source values."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str | None]]
    lines: list[int] | None  #: the file line each CSV row starts on; None for Parquet
    typed: dict[str, list] | None = None  #: Parquet: each column's values as Parquet has them
    lists: dict[str, list] | None = None  #: Parquet: list columns' values

    def where(self, i: int) -> str:
        """Data row ``i`` (0-based) as users count it: 1-based, the header not counted."""
        line = f" (line {self.lines[i]})" if self.lines is not None else ""
        return f"{shown(self.path)}, data row {i + 1}{line}"

    def require(self, columns, what: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ManifestError(
                f"{shown(self.path)}: missing column(s) {preview(missing)} for {what} (it has "
                f"{preview(self.columns)}). Fix: add or rename the column(s), or name yours with "
                "--path-column/--label-column")

    def cell(self, i: int, column: str, meaning: str) -> str:
        value = self.rows[i].get(column)
        if value is None:
            raise ManifestError(f"{self.where(i)}, column {column!r}: empty. Fix: fill in {meaning}, or remove the row")
        return value

    def check_types(self, roles: dict[str, str | None]) -> None:
        """Refuse a Parquet column whose type does not fit its role (CSV cells are text)."""
        if self.typed is None:
            return
        for role, column in roles.items():
            if column is None or column not in self.columns:
                continue
            family = self._families[column]
            allowed = ROLE_TYPES[role]
            if family not in allowed:
                want = " or ".join({"text": "text", "integer": "integers", "list": "lists of text"}[a] for a in allowed)
                raise ManifestError(
                    f"{shown(self.path)}, column {column!r}: has type {self._types[column]}, it must hold {want}. "
                    f"Fix: write the column as {want} (a float column turns missing values into NaN)")

    def source_values(self, i: int, skip: set[str]) -> dict[str, object]:
        """Row ``i``'s other columns, typed (see the module docstring)."""
        if self.typed is not None:
            return {c: _plain(self.typed[c][i]) for c in self.columns if c not in skip}
        inferred = self._inferred()
        return {c: inferred[c](self.rows[i].get(c)) for c in self.columns if c not in skip}

    def _inferred(self):
        if not hasattr(self, "_converters"):
            self._converters = {c: _converter([r.get(c) for r in self.rows]) for c in self.columns}
        return self._converters

    def label_list(self, i: int, column: str) -> list[str]:
        """The labels in a list cell: a Parquet list, or a text ``"['a', 'b']"``, ``"a b"``, ``"a;b"``."""
        if self.lists is not None and column in self.lists:
            value = self.lists[column][i]
            if value is None:
                return []
            if not all(isinstance(v, (str, int)) for v in value):
                raise ManifestError(f"{self.where(i)}, column {column!r}: a list of labels must hold text")
            return [str(v).strip() for v in value if str(v).strip()]
        return parse_label_list(self.rows[i].get(column), f"{self.where(i)}, column {column!r}")


def read_table(path: Path) -> Table:
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ManifestError(f"{shown(path)}: {what}. Fix: pass an existing .csv or .parquet table")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    raise ManifestError(f"{shown(path)}: not a table (expected one of {', '.join(TABLE_EXTENSIONS)}). Fix: pass a "
                        "folder of class sub-folders, or a CSV/Parquet table")


def parse_class_id(text: str, where: str) -> int:
    """An old table's integer ``class_id`` ("3" or "3.0"); ``where`` names file and row."""
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise ManifestError(f"{where}, column 'class_id': {text!r} is not an integer. Fix: use the class map's "
                            "integer ids")
    return int(number)


_QUOTED = re.compile(r"""'([^']*)'|"([^"]*)\"""")
#: Longest label-list cell read: far more than any real one, small enough to refuse junk.
_LIST_LIMIT = 100_000


def parse_label_list(text: str | None, where: str) -> list[str]:
    """Labels from a cell: ``"['banana', 'houspa']"`` (BirdCLEF's Python-list text), ``"[]"``,
    or names separated by spaces, commas or semicolons. Parsed as text, never evaluated."""
    if text is None:
        return []
    if len(text) > _LIST_LIMIT:
        raise ManifestError(f"{where}: a label list of {len(text)} characters; that is not a list of labels")
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        if not inner:
            return []
        found = [a or b for a, b in _QUOTED.findall(inner)]
        if found:
            return [f.strip() for f in found if f.strip()]
        text = inner
    return [part for part in re.split(r"[\s,;]+", text) if part]


def _read_csv(path: Path) -> Table:
    # The csv module keeps every cell as text: a spreadsheet's "007" or "1e3" label stays
    # what the user typed, which type-inferring readers would not promise.
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ManifestError(f"{shown(path)}: the file is empty. Fix: write a header row and one row per recording")
            columns = _columns(path, header)
            rows, lines = [], []
            start = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    if len(cells) > len(columns):
                        raise ManifestError(
                            f"{shown(path)}, data row {len(rows) + 1} (line {start}): {len(cells)} cells but "
                            f"{len(columns)} columns. Fix: quote values that contain commas")
                    rows.append({c: (v.strip() or None) for c, v in zip(columns, cells)})
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise ManifestError(f"{shown(path)}: not UTF-8 text. Fix: save the table as UTF-8 CSV") from None
    except csv.Error as exc:
        raise ManifestError(f"{shown(path)}: not a readable CSV ({exc}). Fix: check its quoting") from None
    return Table(path, columns, rows, lines)


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{shown(path)}: not a readable Parquet file ({str(exc)[:160]})") from None
    columns = _columns(path, data.column_names)
    typed, lists, families, types = {}, {}, {}, {}
    for name in columns:
        kind = data.schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        types[name] = str(kind)
        values = data.column(name).to_pylist()
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            families[name] = "list"
            lists[name] = values
        else:
            families[name] = ("integer" if pa.types.is_integer(kind) else
                              "text" if pa.types.is_string(kind) or pa.types.is_large_string(kind) else str(kind))
        typed[name] = values
    rows = [{c: _text(typed[c][i]) if families[c] != "list" else None for c in columns} for i in range(data.num_rows)]
    table = Table(path, columns, rows, None, typed=typed, lists=lists)
    table._families, table._types = families, types
    return table


def _columns(path: Path, header) -> list[str]:
    columns = [str(c).strip() for c in header]
    doubled = sorted({c for c in columns if columns.count(c) > 1})
    if doubled:
        raise ManifestError(f"{shown(path)}: column(s) {preview(doubled)} appear more than once. Fix: rename or "
                            "remove the duplicates")
    return columns


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _plain(value):
    """A Parquet value for our tables: scalars as they are, anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _converter(cells: list[str | None]):
    """How a CSV column's cells become values: int, float or text, whichever fits all."""
    present = [c for c in cells if c is not None]
    if any(re.match(r"[+-]?0\d", c) for c in present):  # "007" is a code, not the number 7
        return lambda c: c
    for kind in (int, float):
        try:
            for c in present:
                kind(c)
        except ValueError:
            continue
        if present and not (kind is float and all(c.lower() in ("nan", "inf", "-inf") for c in present)):
            return lambda c, kind=kind: None if c is None else kind(c)
    return lambda c: c

