"""Windows for prediction: the whole recording, every hop, the last one zero-padded.

Training keeps only the windows that pass the recipe's energy filter; a per-window output
must have no holes, so prediction scores every window and applies the filter only when
asked (and then from the same threshold, computed as the blocks pass). Short recordings
are decoded whole (bit-identical to ``librosa.load``), long ones as a stream
(``chirpid_io.streaming``), so memory does not grow with a file's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio import SILENCE_PEAK, load
from ..streaming import STREAM_SECONDS, Cutter, FrameEnergy, stream

#: Windows per chunk handed from a decoding thread to the scorer.
CHUNK = 32


@dataclass
class Chunk:
    """Windows of one recording: ``samples`` (K, n), where each starts (seconds),
    whether it runs past the recording's end (zero-padded), its RMS, and whether its peak
    is above digital silence (kept when the samples are let go once scored)."""

    samples: np.ndarray | None
    start_seconds: np.ndarray
    padded: np.ndarray
    rms: np.ndarray
    audible: np.ndarray


@dataclass
class Ending:
    """What is known once a recording's stream ends."""

    duration_seconds: float
    threshold: float | None = None  #: the energy filter's RMS threshold, when asked for
    info: dict = field(default_factory=dict)


def recording_windows(path, config, *, energy_filter: bool = False):
    """Yield :class:`Chunk` objects, then one :class:`Ending` (raises AudioDecodeError)."""
    from ..decoders import open_audio

    rate, n, hop = config.sample_rate, config.n_samples, config.hop_samples
    with open_audio(path) as audio_file:
        header = audio_file.info
    if header.duration_seconds > STREAM_SECONDS:
        info: dict = {}
        blocks = stream(path, rate, info=info)
    else:
        blocks, info = iter([load(path, rate)]), {}
    cutter = Cutter(n, hop)
    energy = FrameEnergy(config.n_fft, config.hop_length) if energy_filter and config.energy_threshold else None
    pending: list[tuple[int, np.ndarray]] = []
    for block in blocks:
        if energy is not None:
            energy.add(block)
        pending += cutter.add(block)
        while len(pending) >= CHUNK:
            yield _chunk(pending[:CHUNK], cutter.total, n, rate, done=False)
            pending = pending[CHUNK:]
    total = cutter.total
    pending += cutter.finish(pad_last=True)
    if pending:
        yield _chunk(pending, total, n, rate, done=True)
    threshold = config.energy_threshold * energy.mean() if energy is not None else None
    yield Ending(total / rate, threshold, {"sample_rate": header.sample_rate, "channels": header.channels})


def _chunk(pairs, total: int, n: int, rate: int, done: bool) -> Chunk:
    starts = np.array([s for s, _ in pairs], dtype=np.int64)
    samples = np.stack([w for _, w in pairs]).astype(np.float32, copy=False)
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=1)).astype(np.float32)
    padded = starts + n > total if done else np.zeros(len(starts), dtype=bool)
    return Chunk(samples, starts / rate, padded, rms, peaks_ok(samples))


def kept(rms: np.ndarray, peaks_ok: np.ndarray, threshold: float | None, padded: np.ndarray,
         pad_short: bool) -> np.ndarray:
    """The windows training would have kept: whole windows (or the one zero-padded window
    of a recording shorter than a window, with the recipe's ``pad_short``) above the
    energy threshold and not digital silence."""
    keep = peaks_ok & ~padded
    if pad_short and len(padded) == 1 and padded[0]:
        keep = peaks_ok.copy()
    if threshold is not None:
        keep &= rms > threshold
    return keep


def peaks_ok(samples: np.ndarray) -> np.ndarray:
    return np.abs(samples).max(axis=1) >= SILENCE_PEAK
