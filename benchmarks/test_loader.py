"""Stage "loader": stored training windows -> ready (x, y) training batches.

Old path: ``chirpid_io.legacy.LegacyPNGDataset`` + ``legacy_loader`` (Pillow opens one PNG
per item, per-item scalar standardisation and a SpecAugment built per item, a plain
DataLoader with batch 42; on a GPU each batch is then copied to it). chirpid-io:
``chirpid_io.loaders.make_loader`` over the cache (whole-batch reads, per-band
normalisation and batched SpecAugment on ``--bench-device``). Both sides read the same
windows (the PNGs are the cache's images, written with Pillow), shuffle, augment with
the old mask sizes, drop the last partial batch, and use the same worker count (the case).

The windows are the generated corpus cut with the chirpid recipe at a 0.125 s hop (many
windows from a small corpus; the image shape is the recipe's 224 x 313), every window
kept, at most 120 per pseudo-class. A
round runs whole epochs until at least ``MIN_ITEMS`` windows have been served; loaders
(and their persistent workers) are made before the timed rounds. Throughput is windows
per second.
"""

from __future__ import annotations

import csv
import math
import os

import pytest

from memory import Inputs, probe

UNIT = "windows/s"
BATCH = 42
MIN_ITEMS = 500
HOP_SECONDS = 0.125  # overlapping 5 s windows: many windows from a small corpus
MAX_PER_CLASS = 120  # 4 pseudo-classes: at most 480 windows, whatever the corpus size
WORKERS = (0, 1, 2)


@pytest.fixture(scope="session")
def loader_data(corpus_paths, tmp_path_factory):
    """(cache, PNG csv, PNG folder) holding the same windows; built once per session
    (``test_train.py`` trains on the same windows)."""
    return build_loader_data(corpus_paths, tmp_path_factory.mktemp("loader"), MAX_PER_CLASS)


def build_loader_data(corpus_paths, root, max_per_class):
    """Build the cache and the same windows as an old PNG/CSV set under ``root``;
    ``corpus_paths`` may repeat a file (each repeat is listed under its own name)."""
    import numpy as np
    from PIL import Image

    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.config import SpectrogramConfig

    audio = root / "audio"
    audio.mkdir(parents=True)
    table = root / "recordings.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        for k, path in enumerate(corpus_paths):  # pseudo-classes: the stage only moves data
            name = f"{k:05d}_{path.name}"
            (audio / name).write_bytes(path.read_bytes())
            writer.writerow([name, f"class{k % 4}", f"recordist{k % 7}"])
    config = SpectrogramConfig(hop_seconds=HOP_SECONDS, energy_threshold=None)
    build_cache(table, root / "cache", config, audio_root=audio, backend="torch",
                device="cpu", workers=min(4, os.cpu_count() or 1), max_per_class=max_per_class,
                progress=False)
    cache = open_cache(root / "cache")
    png_dir = root / "spectrograms"
    png_dir.mkdir()
    rows = []
    for start in range(0, len(cache), 64):
        images = cache.read(np.arange(start, min(start + 64, len(cache))))
        for i, image in enumerate(images, start):
            name = f"window_{i:06d}.png"
            Image.fromarray(image).save(png_dir / name)
            rows.append((name, int(cache.labels[i]), "unknown"))
    with (root / "spectrograms.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "class_id", "author"])
        writer.writerows(rows)
    return cache, root / "spectrograms.csv", png_dir


def _epochs(batches_per_epoch: int) -> int:
    return max(1, math.ceil(MIN_ITEMS / (batches_per_epoch * BATCH)))


@pytest.mark.parametrize("workers", WORKERS)
def test_loader_old(measure, loader_data, settings, synchronize, workers):
    import torch

    from chirpid_io.legacy import LegacyPNGDataset, legacy_loader

    _, csv_path, png_dir = loader_data
    dataset = LegacyPNGDataset(csv_path, png_dir, augment=True, seed=0)
    loader = legacy_loader(dataset, BATCH, train=True, num_workers=workers)
    device = torch.device(settings.device)
    epochs = _epochs(len(loader))

    def run():
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        synchronize()

    measure(run, stage="loader", side="old", items=epochs * len(loader) * BATCH, unit=UNIT,
            label=f"LegacyPNGDataset + legacy_loader, {workers} workers", case=f"{workers} workers")


@pytest.mark.parametrize("workers", WORKERS)
def test_loader_new(measure, loader_data, settings, synchronize, workers):
    from chirpid_io.loaders import Augment, make_loader

    cache, _, _ = loader_data
    loader = make_loader(cache, BATCH, device=settings.device, num_workers=workers,
                         augment=Augment(), drop_last=True, seed=0)
    epochs = _epochs(len(loader))

    def run():
        for _ in range(epochs):
            for x, y in loader:
                pass
        synchronize()

    measure(run, stage="loader", side="new", items=epochs * len(loader) * BATCH, unit=UNIT,
            label=f"make_loader, {workers} workers, {settings.device}", case=f"{workers} workers")


# --------------------------------------------------------------------------- memory
# Every window of the corpus (no class cap), 0 workers, CPU: at 4x input the cache and
# the PNG set hold 4x the windows. Whole epochs until at least MEMORY_BATCHES batches:
# the allocator's working set for batches in flight settles after a few dozen batches
# (about +100 MB here, the same at 1x and 4x), and a shorter 1x run would not reach it.
MEMORY_BATCHES = 60


def _epochs_of(loader):
    epochs = -(-MEMORY_BATCHES // len(loader))
    return lambda: sum(len(y) for _ in range(epochs) for _, y in loader)


def _memory_data(inputs: Inputs):
    import tempfile
    from pathlib import Path

    return build_loader_data(inputs.files, Path(tempfile.mkdtemp()), max_per_class=None)


@probe("loader", "old", "LegacyPNGDataset + legacy_loader, 0 workers")
def loader_memory_old(inputs: Inputs):
    from chirpid_io.legacy import LegacyPNGDataset, legacy_loader

    _, csv_path, png_dir = _memory_data(inputs)
    loader = legacy_loader(LegacyPNGDataset(csv_path, png_dir, augment=True, seed=0), BATCH,
                           train=True, num_workers=0)
    next(iter(loader))  # imports and first-use set-up, unmeasured
    return _epochs_of(loader)


@probe("loader", "new", "make_loader, 0 workers, CPU")
def loader_memory_new(inputs: Inputs):
    from chirpid_io.loaders import Augment, make_loader

    cache, _, _ = _memory_data(inputs)
    loader = make_loader(cache, BATCH, device="cpu", augment=Augment(), drop_last=True, seed=0)
    next(iter(loader))
    return _epochs_of(loader)
