"""Benchmark inputs: the bundled sample recordings and a larger corpus made from them.

The corpus is deterministic: the same (minutes, seed) always gives the same files. Each
corpus recording is ``RECORDING_SECONDS`` long at ``CORPUS_RATE`` Hz (44.1 kHz, the
common rate of xeno-canto uploads, so decoding includes the resampling to 32 kHz), made
of randomly chosen sample recordings with random gains, end to end, plus seeded
background noise, written as 16-bit PCM WAV. It is built once into a cache folder
(``.benchmarks/corpus/`` by default, git-ignored) and reused; nothing large is committed.
Without bundled samples it falls back to synthetic chirps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / ".benchmarks" / "corpus"
SAMPLES = REPO / "chirpid_io" / "data" / "samples"
AUDIO_PATTERNS = ("**/*.wav", "**/*.mp3", "**/*.flac", "**/*.ogg")
CORPUS_RATE = 44_100
RECORDING_SECONDS = 30.0
NOISE_LEVEL = 0.003  #: background noise standard deviation (full scale = 1)
#: Bumped whenever the recipe below changes, so an old cached corpus is not reused.
VERSION = 1


def sample_files(root: Path = SAMPLES) -> list[Path]:
    """The bundled real recordings (WAV and MP3 of several rates), sorted; may be empty."""
    found = {p for pattern in AUDIO_PATTERNS for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def synthetic_samples(dest: Path, seed: int = 0, count: int = 6) -> list[Path]:
    """Fallback inputs when no samples are bundled: seeded chirps in noise, 3-12 s, WAV."""
    import soundfile as sf

    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        rate = (32_000, 44_100, 48_000)[i % 3]
        t = np.arange(int(rng.uniform(3, 12) * rate)) / rate
        f0 = rng.uniform(1_000, 6_000)
        wave = 0.3 * np.sin(2 * np.pi * (f0 + 800 * np.sin(2 * np.pi * 3 * t)) * t)
        wave *= (np.sin(2 * np.pi * rng.uniform(0.5, 2) * t) > 0)  # calls and gaps
        wave += 0.01 * rng.standard_normal(t.size)
        path = dest / f"synthetic_{i}.wav"
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        paths.append(path)
    return paths


def corpus_dir(minutes: float, seed: int = 0, root: Path = DEFAULT_ROOT) -> Path:
    return Path(root) / f"v{VERSION}-{minutes:g}min-seed{seed}"


def build_corpus(minutes: float, seed: int = 0, root: Path = DEFAULT_ROOT) -> list[Path]:
    """The corpus WAV files for ``minutes`` of audio (built on first use), sorted."""
    dest = corpus_dir(minutes, seed, root)
    if (dest / "corpus.json").is_file():
        return sorted(dest.glob("*.wav"))
    import soundfile as sf

    from chirpid_io.audio import load

    sources = sample_files()
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if not sources:
        sources = synthetic_samples(tmp / "_synthetic", seed)
    clips = [load(p, CORPUS_RATE) for p in sources]
    clips = [c for c in clips if len(c) > 0]
    rng = np.random.default_rng(seed)

    total = round(minutes * 60 * CORPUS_RATE)
    per_file = round(RECORDING_SECONDS * CORPUS_RATE)
    for k in range(math.ceil(total / per_file)):
        length = min(per_file, total - k * per_file)
        pieces, filled = [], 0
        while filled < length:
            clip = clips[rng.integers(len(clips))]
            gain = 10 ** (rng.uniform(-12, 0) / 20)  # -12..0 dB
            pieces.append(clip * (gain / max(np.abs(clip).max(), 1e-6) * 0.5))
            filled += len(clip)
        wave = np.concatenate(pieces)[:length]
        wave = wave + NOISE_LEVEL * rng.standard_normal(length)
        sf.write(tmp / f"corpus_{k:04d}.wav", np.clip(wave, -1, 1), CORPUS_RATE, subtype="PCM_16")
    shutil.rmtree(tmp / "_synthetic", ignore_errors=True)
    info = {"version": VERSION, "minutes": minutes, "seed": seed, "rate": CORPUS_RATE,
            "sources": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name for p in sources]}
    (tmp / "corpus.json").write_text(json.dumps(info, indent=1))
    try:
        tmp.rename(dest)  # atomic: a reader sees no corpus or a whole one
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(dest.glob("*.wav"))


def audio_seconds(paths: list[Path]) -> float:
    """Total duration of ``paths`` in seconds, from the file headers."""
    import soundfile as sf

    return float(sum(sf.info(str(p)).duration for p in paths))


def corpus_windows(paths: list[Path], count: int, seed: int = 0) -> np.ndarray:
    """``count`` 5 s windows at 32 kHz, (count, 160000) float32, cut from ``paths``.

    Non-overlapping windows from sample 0 of each recording, without the energy filter,
    so the mel stage sees real audio; repeated (cyclically) when the corpus is short.
    """
    from chirpid_io.audio import load
    from chirpid_io.config import SpectrogramConfig

    config = SpectrogramConfig()
    n = config.n_samples
    found: list[np.ndarray] = []
    for path in paths:
        wave = load(path, config.sample_rate)
        found.extend(wave[i:i + n] for i in range(0, len(wave) - n + 1, n))
        if len(found) >= count:
            break
    if not found:  # every input shorter than a window: seeded noise keeps the stage running
        found = list(np.random.default_rng(seed).standard_normal((1, n)).astype(np.float32) * 0.1)
    return np.stack([found[i % len(found)] for i in range(count)]).astype(np.float32)
