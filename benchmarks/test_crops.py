"""Stage "crops": random 5 s crops of recordings -> ready (x, y) training batches.

Training from waveforms takes a fresh crop anywhere in each recording every epoch, so
nothing can be precomputed per window. Old path (how it is commonly done without a
cache): a Dataset whose item is ``librosa.load(path, sr=32000, offset=..., duration=5)``
of the source file, then the old recipe's image (``legacy_spectrogram``: librosa mel,
dB, min-max) and per-item standardisation, in a plain DataLoader (batch 42).
chirpid-io: ``make_loader`` over a waveform cache of the same recordings
(``build-cache --store waveform``: int16 FLAC chunks), crops read in one pass per batch,
then the build's torch mel kernel, quantisation and per-band normalisation on
``--bench-device``, with SpecAugment. Both sides take the same number of crops per epoch
(as many as fit in the audio, recordings drawn in proportion to their length, uniform
starts, seeded: ``crop_weighting="duration"``) with the same worker count (the case).

A round runs whole epochs until at least ``MIN_ITEMS`` crops have been served; loaders
(and their persistent workers) are made before the timed rounds. The ``loader`` stage's
rows (fixed windows read from a spectrogram cache) are the comparison for what on-device
features cost.
"""

from __future__ import annotations

import math
import os

import pytest

UNIT = "crops/s"
BATCH = 42
MIN_ITEMS = 336
WORKERS = (0, 1, 2)
CROP_SECONDS = 5.0


@pytest.fixture(scope="session")
def crop_data(corpus_paths, tmp_path_factory):
    """(waveform cache, the source files): the corpus, each file listed once per repeat."""
    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.cache.format import WaveformStorage
    from chirpid_io.config import SpectrogramConfig

    root = tmp_path_factory.mktemp("crops")
    audio = root / "audio"
    audio.mkdir()
    files = []
    for k, path in enumerate(corpus_paths):
        target = audio / f"class{k % 4}" / f"{k:05d}_{path.name}"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
        files.append(target)
    build_cache(audio, root / "waves", SpectrogramConfig(energy_threshold=None), storage=WaveformStorage(),
                backend="torch", device="cpu", workers=min(4, os.cpu_count() or 1), progress=False)
    return open_cache(root / "waves"), files


class LibrosaCrops:
    """The old way to crop: decode a random 5 s of the source file per item, then the old
    recipe's image and the old per-item standardisation (a map-style Dataset)."""

    def __init__(self, files, seed: int = 0):
        import numpy as np
        import soundfile as sf

        self.files = files
        self.seconds = np.array([sf.info(f).duration for f in files])
        self.n = max(len(files), int(round(self.seconds.sum() / CROP_SECONDS)))
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import librosa
        import numpy as np
        import torch

        from chirpid_io.legacy import legacy_spectrogram

        rng = np.random.default_rng([self.seed, i])
        k = int(rng.choice(len(self.files), p=self.seconds / self.seconds.sum()))
        offset = rng.uniform(0, max(0.0, self.seconds[k] - CROP_SECONDS))
        wave, _ = librosa.load(self.files[k], sr=32_000, mono=True, offset=offset, duration=CROP_SECONDS)
        wave = np.pad(wave, (0, max(0, 160_000 - len(wave))))[:160_000]
        image = legacy_spectrogram(wave)
        image = np.zeros((224, 313), np.float32) if image is None else image
        image = (image - image.mean()) / (image.std() + 1e-6)
        return torch.from_numpy(image)[None], k % 4


def _epochs(crops_per_epoch: int) -> int:
    return max(1, math.ceil(MIN_ITEMS / crops_per_epoch))


@pytest.mark.parametrize("workers", WORKERS)
def test_crops_old(measure, crop_data, settings, synchronize, workers):
    import torch
    from torch.utils.data import DataLoader

    _, files = crop_data
    dataset = LibrosaCrops(files)
    # every crop of the epoch, the last batch short: a 1-minute corpus has fewer crops than a batch
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=False,
                        persistent_workers=workers > 0)
    device = torch.device(settings.device)
    epochs = _epochs(len(dataset))

    def run():
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        synchronize()

    measure(run, stage="crops", side="old", items=epochs * len(dataset), unit=UNIT,
            label=f"librosa.load(offset, duration) + librosa mel per item, DataLoader, {workers} workers",
            case=f"{workers} workers")


@pytest.mark.parametrize("workers", WORKERS)
def test_crops_new(measure, crop_data, settings, synchronize, workers):
    from chirpid_io.loaders import Augment, make_loader

    cache, _ = crop_data
    loader = make_loader(cache, BATCH, device=settings.device, num_workers=workers, augment=Augment(),
                         drop_last=False, seed=0, crop_seconds=CROP_SECONDS, crop_weighting="duration")
    crops = loader.sampler.per_rank  # crops per epoch, as the old side's
    epochs = _epochs(crops)

    def run():
        for _ in range(epochs):
            for x, y in loader:
                pass
        synchronize()

    measure(run, stage="crops", side="new", items=epochs * crops, unit=UNIT,
            label=f"make_loader over a waveform cache (FLAC), on-device mel, {workers} workers, {settings.device}",
            case=f"{workers} workers")
