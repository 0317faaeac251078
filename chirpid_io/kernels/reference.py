"""The float64 numpy definition of "correct" that every backend is tested against.

Deliberately plain: one clip at a time, explicit framing, ``numpy.fft.rfft``.
"""

from __future__ import annotations

import numpy as np

from ..config import SpectrogramConfig
from .filters import hann_window, mel_matrix


def mel_power(wave: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """(n_mels, frames) float64 mel power spectrogram of one clip."""
    x = np.asarray(wave, dtype=np.float64)
    if config.center:
        x = np.pad(x, config.n_fft // 2, mode=config.pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(x, config.n_fft)[:: config.hop_length]
    spectrum = np.fft.rfft(frames * hann_window(config.win_length, config.n_fft), axis=-1)
    power = np.abs(spectrum) ** config.power
    return mel_matrix(config) @ power.T


def scale(power: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """dB relative to the clip's maximum, floored at -top_db, then min-max to [0, 1]."""
    db = 10.0 * np.log10(np.maximum(power, config.amin))
    db -= 10.0 * np.log10(max(config.amin, power.max()))
    if config.top_db is not None:
        db = np.maximum(db, db.max() - config.top_db)
    if config.scaling == "db":
        return db
    low, high = db.min(), db.max()
    return (db - low) / (high - low) if high > low else np.zeros_like(db)


def mel_spectrogram(waves: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """(B, n_mels, frames) float64 for a (B, n_samples) batch, each clip on its own."""
    waves = np.atleast_2d(np.asarray(waves))
    return np.stack([scale(mel_power(w, config), config) for w in waves])
