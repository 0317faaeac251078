"""Decoding, down-mixing, resampling and the old recipe's windowing and energy filter.

Decoding goes through :mod:`chirpid_io.decoders`: libsndfile (soundfile) for what it
reads (WAV, FLAC, OGG/Vorbis, MP3, AIFF: the samples ``librosa.load`` sees), FFmpeg
(PyAV) for the rest (m4a/AAC, Opus, WMA, webm...). Resampling uses soxr at "HQ" quality,
the resampler behind ``librosa.load``'s default ``soxr_hq``, and the output length is
``ceil(n * target / source)`` as librosa fixes it, so a recording decodes to the same
samples the old pipeline saw.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from .config import SpectrogramConfig
from .errors import AudioDecodeError

#: A window is dropped when its peak is below this (digital silence), as the old code did.
SILENCE_PEAK = 1e-8


def load(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to mono float32 samples at ``sample_rate`` Hz.

    Raises AudioDecodeError (with the file and the reason) for anything that is not a
    decodable, finite, non-empty recording.
    """
    from .decoders import open_audio

    with open_audio(path) as audio_file:
        data = audio_file.read()
        native_rate = audio_file.info.sample_rate
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "holds no samples (header only or truncated)")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioDecodeError(path, "holds NaN or infinite samples")
    return resample(mono, native_rate, sample_rate)


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr HQ; output length ``ceil(n * target / source)``."""
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if source_rate == target_rate:
        return wave
    import soxr

    out = soxr.resample(wave, source_rate, target_rate, quality="HQ")
    n_out = math.ceil(len(wave) * target_rate / source_rate)
    if len(out) >= n_out:
        return np.ascontiguousarray(out[:n_out])
    return np.pad(out, (0, n_out - len(out)))


class Windows(NamedTuple):
    """The kept windows of one recording."""

    samples: np.ndarray  #: (K, n_samples) float32
    start_seconds: np.ndarray  #: (K,) float64, where each window starts
    rms: np.ndarray  #: (K,) float32, each window's RMS level (linear)


#: int16 sample -> float sample: the scale libsndfile reads PCM_16 with, so a 16-bit
#: recording at the recipe's rate goes through ``to_int16`` and back bit-exactly
PCM_SCALE = 1.0 / 32768.0


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 PCM (rounded to nearest, clipped to the range)."""
    return np.clip(np.rint(np.asarray(wave, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)


def from_int16(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 samples (``pcm * PCM_SCALE``, exact)."""
    return np.asarray(pcm, dtype=np.float32) * np.float32(PCM_SCALE)


def frame_rms(wave: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of centred, zero-padded frames, as ``librosa.feature.rms`` computes it."""
    half = frame_length // 2
    # one float64 buffer: a leading 0, the zero-padded squares, then their running sum in
    # place, so each frame's sum of squares is one difference (O(n), no per-frame work)
    running = np.zeros(len(wave) + 2 * half + 1)
    np.square(wave, out=running[1 + half : 1 + half + len(wave)], dtype=np.float64)
    np.cumsum(running, out=running)
    n_frames = 1 + (len(wave) + 2 * half - frame_length) // hop_length
    starts = np.arange(n_frames) * hop_length
    sums = running[starts + frame_length] - running[starts]
    return np.sqrt(np.maximum(sums, 0.0) / frame_length)


def windows(wave: np.ndarray, config: SpectrogramConfig) -> Windows:
    """Cut ``wave`` into the recipe's windows and apply its energy filter.

    Windows of ``config.n_samples`` start every ``config.hop_samples`` from sample 0; a
    trailing partial window is dropped. A recording shorter than one window gives no
    window, unless ``config.pad_short`` zero-pads it to one. A window is kept when its
    RMS exceeds ``energy_threshold * mean(frame RMS)`` of the whole recording and its peak
    is at least ``SILENCE_PEAK``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    n, hop = config.n_samples, config.hop_samples
    if len(wave) < n and config.pad_short and len(wave) > 0:
        wave = np.pad(wave, (0, n - len(wave)))
    if len(wave) < n:
        empty = np.empty(0)
        return Windows(np.empty((0, n), np.float32), empty, empty.astype(np.float32))

    count = 1 + (len(wave) - n) // hop
    view = np.lib.stride_tricks.sliding_window_view(wave, n)[::hop][:count]
    rms = np.sqrt(np.mean(np.square(view, dtype=np.float64), axis=1))
    keep = np.abs(view).max(axis=1) >= SILENCE_PEAK
    if config.energy_threshold is not None:
        threshold = config.energy_threshold * frame_rms(wave, config.n_fft, config.hop_length).mean()
        keep &= rms > threshold
    index = np.flatnonzero(keep)
    return Windows(
        samples=np.ascontiguousarray(view[index]),
        start_seconds=index * hop / config.sample_rate,
        rms=rms[index].astype(np.float32),
    )

