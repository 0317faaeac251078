"""``folder``: one sub-folder per class, audio files found recursively inside each.

Hidden files and folders and non-audio files are ignored; a class folder may be empty (its
class still gets an index). Class folders, sub-folders and files may be symbolic links
(followed, each real folder once). Without group information a recording's group is its
relative path, so grouped splits fall back to recording level. A folder whose root holds
a ``manifest.csv`` with ``path, label`` columns is read as that table instead (see
``inputs.discover``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ManifestError
from ..text import shown
from .base import Manifest, Recording
from .paths import Root, hidden, relative, walk_files

NAME = "folder"


def audio_extensions() -> tuple[str, ...]:
    from ..decoders import AUDIO_EXTENSIONS

    return AUDIO_EXTENSIONS


def read(root) -> Manifest:
    """The recordings of a folder-per-class set, sorted by class, then relative path;
    refused when no class folder holds any audio."""
    base = Root(root, "folder")
    extensions = audio_extensions()
    classes, found, loose = [], [], 0
    for entry in sorted(os.scandir(base.abs), key=lambda e: e.name):
        if hidden(entry.name):
            continue
        if entry.is_dir():
            classes.append(entry.name)
            for path in walk_files(entry.path):
                if path.lower().endswith(extensions):
                    found.append((entry.name, relative(path, base.abs), path))
        elif entry.name.lower().endswith(extensions):
            loose += 1
    if not found:
        if not classes:
            hint = f"it holds {loose} audio file(s) but no class sub-folders" if loose else "it holds no class sub-folders"
        else:
            hint = f"its {len(classes)} class folder(s) hold no audio files"
        raise ManifestError(
            f"{shown(base.abs)}: no recordings found; {hint}. Fix: put the recordings in one sub-folder per class "
            f"(e.g. {shown(os.path.join(base.abs, 'great_tit', 'rec1.wav'))}), with extensions {', '.join(extensions)}")
    found.sort(key=lambda item: (item[0], item[1]))
    recordings = [Recording(Path(path), label, rel, rel, problem=base.problem(path, rel)) for label, rel, path in found]
    return Manifest(NAME, Path(base.real), recordings, classes)
