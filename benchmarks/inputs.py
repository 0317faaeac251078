"""Shared inputs of the build, storage and loader stages: the corpus as a ChirpID table,
and its windows stored both ways (an old PNG/CSV set and a chirpid-io cache)."""

from __future__ import annotations

import csv
from pathlib import Path

N_CLASSES = 3


def chirpid_table(paths: list[Path], dest: Path) -> tuple[Path, Path]:
    """Write the old recording table (filename, class_id, author) and class map for
    ``paths``; classes and recordists are dealt round-robin so splits have groups."""
    dest.mkdir(parents=True, exist_ok=True)
    table, classes = dest / "recordings.csv", dest / "classes.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "class_id", "author"])
        for k, path in enumerate(paths):
            writer.writerow([path.name, k % N_CLASSES, f"recordist_{k // N_CLASSES}"])
    with open(classes, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class_id", "scientific_name", "common_name"])
        for i in range(N_CLASSES):
            writer.writerow([i, f"species_{i}", f"bird {i}"])
    return table, classes


def build_both(paths: list[Path], dest: Path, **build_kwargs) -> tuple[Path, Path]:
    """(old PNG/CSV folder, new cache) for the same recordings, built once into ``dest``."""
    from chirpid_io.cache import build_cache
    from chirpid_io.legacy import WINDOWS_CSV, legacy_preprocess

    table, classes = chirpid_table(paths, dest / "table")
    audio_root = paths[0].parent
    old, new = dest / "png", dest / "cache"
    if not (old / WINDOWS_CSV).exists():
        legacy_preprocess(table, old, audio_root=audio_root, class_map=classes, cap_per_class=None)
    if not (new / "windows.parquet").exists():
        build_cache(table, new, audio_root=audio_root, class_map=classes, progress=False, **build_kwargs)
    return old, new
