"""Mel filter banks in float64 numpy, shared by every backend so all of them use one matrix.

Written from the Slaney (Auditory Toolbox) and HTK definitions that librosa documents:
Slaney's scale is linear below 1 kHz and logarithmic above; "slaney" normalisation divides
each triangle by its width in Hz so every band has the same area.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_F_SP = 200.0 / 3  # Hz per mel on the linear part of Slaney's scale
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz, scale: str = "slaney"):
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mel, scale: str = "slaney"):
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = _F_SP * mel
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, linear)


@lru_cache(maxsize=16)
def _mel_matrix_cached(sample_rate, n_fft, n_mels, fmin, fmax, scale, norm) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2), scale)
    widths = np.diff(edges)
    # ramps[i, k]: how far band edge i lies above FFT bin k, in Hz
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_matrix(config) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 filter bank for ``config`` (read-only, cached)."""
    return _mel_matrix_cached(
        config.sample_rate, config.n_fft, config.n_mels, float(config.fmin),
        float(config.fmax), config.mel_scale, config.mel_norm,
    )


def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of ``win_length``, zero-padded to ``n_fft`` around the centre."""
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left))
