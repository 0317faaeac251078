"""Shared fixtures: a small real cache of every bundled recording (0.5 s windows, 32 mel
bands: 274 windows of 7 classes, built in a few seconds) for the tune and report tests."""

from __future__ import annotations

import pytest

SMALL_CONFIG = dict(sample_rate=16_000, window_seconds=0.5, hop_seconds=0.25, n_fft=512, win_length=512,
                    hop_length=128, n_mels=32, fmax=8_000.0, pad_short=True)


@pytest.fixture(scope="session")
def small_config():
    from chirpid_io.config import SpectrogramConfig

    return SpectrogramConfig(**SMALL_CONFIG)


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory, small_config):
    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.manifest import samples_dir

    out = tmp_path_factory.mktemp("small") / "cache"
    build_cache(samples_dir(), out, small_config, workers=0, progress=False)
    return open_cache(out)
