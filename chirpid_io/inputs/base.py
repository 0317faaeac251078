"""What every input kind produces: a :class:`Manifest` of :class:`Recording` objects."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ManifestError
from ..text import shown


@dataclass(frozen=True)
class Recording:
    """One input recording.

    ``path`` is where to read it (absolute; it may be reached through symbolic links and
    may not exist: the builder then records why it was skipped). ``relpath`` is the POSIX
    path relative to the input's root as the input names it. ``label`` is the primary
    class; ``secondary`` the other classes heard in it (known classes only). ``group`` is
    what grouped splits keep together (recordist, site). ``source`` holds the input's
    other columns (rating, latitude, ...), typed, for ``recordings.parquet`` and the
    window rows. ``problem`` is a reason known before decoding (a dangling link, the same
    file listed twice through a link): the builder skips the recording with it.
    """

    path: Path
    label: str
    group: str
    relpath: str
    secondary: tuple[str, ...] = ()
    source: Mapping[str, object] = field(default_factory=dict)
    problem: str = ""
    index: int = -1  #: position in the whole input (what merged parts are ordered by)


@dataclass
class Manifest:
    """The recordings of one input, in a deterministic order.

    ``kind`` names the input kind (``chirpid_io.inputs.KINDS``). ``class_names`` is sorted
    (code-point order) and may hold classes without recordings (an empty class folder, a
    class-map entry nobody recorded), so label indices do not depend on what was found.
    ``legacy`` is the old PNG set's reader (``inputs.legacy_png.LegacySet``) for a
    "legacy_png" input, whose ``recordings`` are its recordings without audio.
    ``notes`` are things the user should read (unknown secondary labels, links).
    """

    kind: str
    root: Path
    recordings: list[Recording]
    class_names: list[str]
    legacy: object | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Label indices are positions in class_names, so the order is the contract.
        self.class_names = sorted(set(self.class_names))
        known = set(self.class_names)
        for rec in self.recordings:
            if rec.label not in known:
                raise ManifestError(
                    f"recording {shown(rec.relpath)!r} has label {rec.label!r}, which is not among "
                    f"the manifest's class names; add it to class_names"
                )

    def __len__(self) -> int:
        return len(self.recordings)

    def label_index(self, label: str) -> int:
        """The integer class index of ``label`` (its position in ``class_names``)."""
        i = bisect.bisect_left(self.class_names, label)
        if i == len(self.class_names) or self.class_names[i] != label:
            raise ManifestError(f"unknown label {label!r}; the classes are {preview(self.class_names)}")
        return i


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a table mean what, for a table in no known layout.

    ``path``: the recording's file (relative to the audio root); ``label``: its class;
    ``group`` (optional): what grouped splits keep together; ``labels`` (optional): its
    other classes, as a list column or a text like ``"['a', 'b']"`` or ``"a b"``.
    """

    path: str = "path"
    label: str = "label"
    group: str | None = "group"
    labels: str | None = None

    @classmethod
    def of(cls, value) -> "ColumnMap | None":
        if value is None or isinstance(value, ColumnMap):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ManifestError(f"unknown column roles {', '.join(unknown)}; use path, label, group, labels")
            return cls(**value)
        raise ManifestError(f"columns must be a ColumnMap or a mapping of role to column, got {type(value).__name__}")


def preview(items: Iterable[object], limit: int = 8) -> str:
    items = list(items)
    text = ", ".join(f"'{shown(x)}'" if isinstance(x, str) else repr(x) for x in items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")
