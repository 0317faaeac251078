"""The inputs of ``chirpid-io build-cache`` as one list of recordings: see ``chirpid_io.inputs``.

This module is the stable entry point: :func:`discover` reads any input kind, and the
``from_*`` functions read one kind each.
"""

from __future__ import annotations

from pathlib import Path

from .decoders import AUDIO_EXTENSIONS
from .errors import ManifestError
from .inputs import FOLDER_MANIFEST, KINDS, ColumnMap, Manifest, Recording, discover, samples_dir
from .inputs import birdclef, chirpid, folder, legacy_png, mapped
from .inputs.tables import parse_class_id, read_table

__all__ = [
    "AUDIO_EXTENSIONS", "FOLDER_MANIFEST", "KINDS", "ColumnMap", "Manifest", "ManifestError", "Recording", "discover",
    "from_birdclef_csv", "from_chirpid_csv", "from_folder", "from_legacy_csv", "from_table", "parse_class_id",
    "samples_dir",
]


def from_folder(root) -> Manifest:
    """A folder with one sub-folder per class (``inputs.folder``)."""
    return folder.read(root)


def from_table(path, audio_root=None, columns=None, *, class_map=None, allow_outside_root: bool = False) -> Manifest:
    """A CSV/Parquet table with ``path, label[, group]`` or the columns ``columns`` names
    (``inputs.mapped``); paths relative to ``audio_root`` (default: the table's folder)."""
    path = Path(path)
    class_list = None if class_map is None else chirpid.read_class_list(class_map)
    return mapped.read(read_table(path), audio_root if audio_root is not None else path.parent,
                       ColumnMap.of(columns), class_list, allow_outside_root)


def from_birdclef_csv(path, audio_root=None, *, class_map=None, allow_outside_root: bool = False) -> Manifest:
    """A BirdCLEF ``train.csv`` / ``train_metadata.csv`` (``inputs.birdclef``)."""
    path = Path(path)
    class_list = None if class_map is None else chirpid.read_class_list(class_map)
    return birdclef.read(read_table(path), audio_root if audio_root is not None else path.parent, class_list,
                         allow_outside_root)


def from_chirpid_csv(csv_path, audio_root, class_map=None) -> Manifest:
    """The old ChirpID recording table with its class map (``inputs.chirpid``)."""
    return chirpid.read(read_table(Path(csv_path)), audio_root, class_map)


def from_legacy_csv(csv_path, png_dir=None, class_map=None) -> Manifest:
    """An old PNG/CSV spectrogram set (``inputs.legacy_png``)."""
    return legacy_png.read(read_table(Path(csv_path)), png_dir, class_map)
