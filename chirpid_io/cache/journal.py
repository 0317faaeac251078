"""The build journal: one JSON line per commit, the record of work not yet in the tables.

Each line (an :class:`Entry`) names the recordings whose windows are all on disk, the
rows of those windows, their exact per-band sums and the class names so far; its
``first_window`` is where its windows start, so consecutive lines chain. A line is
appended and fsync'd after the shard files it describes, so the journal never claims a
window that is not on disk.

What is the truth: for a cache that finished at least once, its attributes and tables
(the last finished state); the journal adds what was committed since, during an append.
So a journal that is missing, damaged or disagrees with the finished state is rebuilt
from that state (:func:`base_entry`), never trusted over it. Damage in lines *after* the
finished state (an unfinished append) stops the build with the line number: those lines
are the only record of their windows. A torn last line (no newline: the process died
while writing it) is dropped, as it never committed anything.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

from .stats import BandSums

VERSION = 2
RECORDING_KEYS = {"path": str, "class_name": str, "status": str, "recording_id": int, "label": int,
                  "first_window": int, "n_windows": int}


@dataclass
class Entry:
    """One journal line."""

    first_window: int
    recordings: list[dict]
    windows: list[list]  #: [recording_id, label, start_seconds, rms, [secondary label ids]] each
    sums: BandSums
    class_names: list[str]
    time: float = field(default_factory=time.time)
    line: int = 0  #: 1-based line number in the file (0 for an entry not read from a file)

    @property
    def end(self) -> int:
        return self.first_window + len(self.windows)

    def to_line(self) -> bytes:
        record = {"v": VERSION, "first_window": self.first_window, "recordings": self.recordings,
                  "windows": self.windows, "sums": self.sums.to_dict(), "class_names": self.class_names,
                  "time": self.time}
        return json.dumps(record, separators=(",", ":"), allow_nan=True).encode() + b"\n"


@dataclass
class Reading:
    """What a journal file holds: its valid entries in order, and what went wrong."""

    entries: list[Entry]
    good_bytes: int  #: length of the valid prefix (a torn last line is cut off here)
    torn: bool = False  #: the last line had no newline and did not parse: dropped
    damaged: tuple[int, str] | None = None  #: (line number, what is wrong) of the first bad line
    lines_after_damage: int = 0  #: complete lines after the damaged one


def read_journal(raw: bytes, n_mels: int) -> Reading:
    """Parse a journal's bytes; stops at the first damaged line (see :class:`Reading`)."""
    entries: list[Entry] = []
    good = 0
    lines = raw.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if last and not line.endswith(b"\n"):
            try:
                json.loads(line)
            except ValueError:
                return Reading(entries, good, torn=True)
        expected = entries[-1].end if entries else None
        entry, problem = parse_entry(line, n_mels, expected)
        if problem is not None:
            after = sum(1 for rest in lines[number:] if rest.endswith(b"\n"))
            return Reading(entries, good, damaged=(number, problem), lines_after_damage=after)
        entry.line = number
        entries.append(entry)
        good += len(line)
    return Reading(entries, good)


def parse_entry(line: bytes, n_mels: int, expected_first: int | None) -> tuple[Entry | None, str | None]:
    """(entry, None), or (None, what is wrong) for a line that is not a valid entry."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        return None, f"not JSON ({str(exc)[:80]})"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if record.get("v") != VERSION:
        return None, f"journal version {record.get('v')!r}, expected {VERSION}"
    missing = [k for k in ("first_window", "recordings", "windows", "sums", "class_names") if k not in record]
    if missing:
        return None, f"missing key(s) {', '.join(missing)}"
    first = record["first_window"]
    if type(first) is not int or first < 0:
        return None, f"first_window is {first!r}"
    if expected_first is not None and first != expected_first:
        return None, f"starts at window {first}, the line before ends at window {expected_first}"
    names = record["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None, "class_names is not a list of strings"
    recordings = record["recordings"]
    if not isinstance(recordings, list) or not recordings:
        return None, "recordings is not a non-empty list"
    for rec in recordings:
        if not isinstance(rec, dict):
            return None, "a recording is not an object"
        for key, kind in RECORDING_KEYS.items():
            if type(rec.get(key)) is not kind:
                return None, f"recording field {key!r} is {rec.get(key)!r}, not a {kind.__name__}"
    windows = record["windows"]
    if not isinstance(windows, list) or len(windows) != sum(r["n_windows"] for r in recordings):
        return None, "windows do not match the recordings' n_windows"
    ids = {r["recording_id"] for r in recordings}
    for row in windows:
        if (not isinstance(row, list) or len(row) != 5 or type(row[0]) is not int or row[0] not in ids
                or type(row[1]) is not int or not 0 <= row[1] < len(names) or not _number(row[2])
                or not _number(row[3]) or not isinstance(row[4], list)
                or not all(type(v) is int and 0 <= v < len(names) for v in row[4])):
            return None, f"window row {str(row)[:60]} is not [recording_id, label, start, rms, labels]"
    try:
        sums = BandSums.from_dict(record["sums"])
    except (KeyError, TypeError, ValueError):
        return None, "sums is not {count, sum, sum_sq}"
    if len(sums.sum) != n_mels or len(sums.sum_sq) != n_mels:
        return None, f"sums hold {len(sums.sum)} bands, the cache has {n_mels}"
    stamp = record.get("time", 0.0)
    return Entry(first, recordings, windows, sums, list(names), float(stamp) if _number(stamp) else 0.0), None


def base_entry(recordings: list[dict], windows: list[list], sums: BandSums, class_names: list[str]) -> Entry:
    """One entry that stands for a whole finished state (used to rebuild a journal)."""
    return Entry(0, recordings, windows, sums, list(class_names))


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and (
        math.isfinite(value) or math.isnan(value))
