"""``birdclef``: the metadata tables of Kaggle's BirdCLEF 2021-2025 (``train.csv``,
``train_metadata.csv``), the most common public bird-audio metadata.

Recognised by their columns: ``primary_label`` and ``filename``. ``filename`` is the
path under the audio root (2022 and later name the class folder, ``afrsil1/XC1.ogg``; 2021
names only the file, found in ``primary_label/``); ``primary_label`` is the class;
``author`` the group (recordist); ``secondary_labels`` the other species heard, as the
Python-list text Kaggle writes (``"['banana', 'houspa']"``) or a Parquet list column.
Every other column (rating, latitude, longitude, type, collection, url, licence...) is
kept with the recording and on each of its windows, so a cache can be filtered and
stratified by them. With ``class_list`` (``--class-map taxonomy.csv``), the classes are
that list (so secondary species without a recording of their own are kept); otherwise the
primary labels.
"""

from __future__ import annotations

from ..errors import ManifestError
from ..text import shown
from .base import Manifest
from .paths import Root
from .rows import RowCollector, known_secondary
from .tables import Table

NAME = "birdclef"
PATH, LABEL, GROUP, LABELS = "filename", "primary_label", "author", "secondary_labels"


def detect(table: Table) -> bool:
    return PATH in table.columns and LABEL in table.columns


def read(table: Table, audio_root, class_list=None, allow_outside_root: bool = False) -> Manifest:
    group = GROUP if GROUP in table.columns else None
    labels = LABELS if LABELS in table.columns else None
    table.check_types({"path": PATH, "label": LABEL, "group": group, "labels": labels})
    collector = RowCollector(table, Root(audio_root, "audio root", allow_outside_root), PATH)
    used = {PATH, LABEL, group} - {None}
    for i, row in enumerate(table.rows):
        entry = table.cell(i, PATH, "the recording's file name")
        label = table.cell(i, LABEL, "the species code")
        alternative = f"{label}/{entry}" if "/" not in entry else None
        collector.add(i, entry, label, row.get(group) if group else None,
                      table.label_list(i, labels) if labels else (), table.source_values(i, used),
                      alternative=alternative)
    names = list(class_list) if class_list is not None else [r.label for r in collector.recordings]
    unknown = sorted({r.label for r in collector.recordings} - set(names))
    if unknown:
        raise ManifestError(f"{shown(table.path)}: primary label(s) {', '.join(map(repr, unknown[:8]))} are not in "
                            "the class map. Fix: add them, or leave --class-map out")
    notes = []
    if labels:
        collector.recordings, notes = known_secondary(collector.recordings, names, LABELS)
    return collector.manifest(NAME, names, notes)
