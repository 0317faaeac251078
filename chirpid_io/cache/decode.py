"""Decoding one recording into windows, in a worker process; failures become reasons."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import Windows, load, windows
from ..streaming import STREAM_SECONDS
from ..config import SpectrogramConfig
from ..errors import AudioDecodeError


@dataclass
class Decoded:
    """What the builder needs from one recording; ``reason`` is set when it was skipped.

    A recording longer than ``streaming.STREAM_SECONDS`` comes as ``chunks``: its windows
    in pieces of at most :data:`CHUNK_WINDOWS`, decoded in a thread of its own as they are
    taken, so memory stays bounded whatever its length. ``info`` (and ``reason``, when no
    window was kept) are complete once the chunks are exhausted; a decoding error raises
    from the chunks, after the windows before it.
    """

    windows: Windows | None
    info: dict = field(default_factory=dict)
    reason: str = ""
    chunks: object | None = None  #: an iterator of Windows, for a long recording
    #: for a waveform cache: the whole recording as int16 (the windows are cut from it);
    #: a long one's chunks yield its int16 blocks too, in order, before or between windows
    pcm: np.ndarray | None = None


#: Windows per chunk of a long recording (20 MB of float32 samples at the chirpid recipe).
CHUNK_WINDOWS = 32


#: The description of a recording that could not be read.
EMPTY_INFO = {"duration_seconds": None, "sample_rate": None, "channels": None, "size_bytes": None,
              "content_hash": None}


def decode_recording(path: Path, config: SpectrogramConfig, *, waveform: bool = False) -> Decoded:
    """Decode and window ``path``; never raises for a bad file. ``waveform``: also keep
    the audio as int16 (``Decoded.pcm``, or int16 blocks among a long recording's
    chunks), and cut the windows from that rounded audio, which is what a crop of the
    waveform cache will hold."""
    info: dict = dict(EMPTY_INFO)
    header = _header(path)
    if header is not None and header.duration_seconds > STREAM_SECONDS:
        from ..background import Background

        info.update(_describe(path, header.duration_seconds))
        decoded = Decoded(None, info)
        decoded.chunks = Background(_stream_windows(path, config, decoded, waveform), depth=1,
                                    name="chirpid-io-stream")
        return decoded
    try:
        wave = load(path, config.sample_rate)
        info.update(_describe(path, len(wave) / config.sample_rate))
    except AudioDecodeError as exc:
        return Decoded(None, info, exc.reason)
    except Exception as exc:  # a bad file must never stop a build
        return Decoded(None, info, f"unexpected decoder failure ({type(exc).__name__}: {exc})")
    pcm = None
    if waveform:
        from ..audio import from_int16, to_int16

        pcm = to_int16(wave)
        wave = from_int16(pcm)
    cut = windows(wave, config)
    if len(cut.samples) == 0:
        seconds = len(wave) / config.sample_rate
        if seconds < config.window_seconds and not config.pad_short:
            reason = (f"shorter than one window ({seconds:.3f} s < {config.window_seconds} s); "
                      "use --pad-short to keep it")
        else:
            reason = "no window above the energy threshold (silent or near-silent)"
        return Decoded(None, info, reason, pcm=pcm)
    return Decoded(cut, info, pcm=pcm)


def _header(path: Path):
    """The header facts of ``path``, or None when it cannot be opened (the whole-file path
    then says why)."""
    from ..decoders import open_audio

    try:
        with open_audio(path) as audio_file:
            return audio_file.info
    except (AudioDecodeError, OSError):
        return None


def _stream_windows(path: Path, config: SpectrogramConfig, decoded: Decoded, waveform: bool = False):
    """Windows of a long recording in chunks, as ``audio.windows`` gives them for the whole
    (``waveform``: each decoded block first as int16, the windows cut from the rounded audio).

    With the energy filter on, the threshold needs the whole recording first: the first
    pass decodes it once into a temporary file (float32 samples) while measuring its frame
    energy; the second reads the windows back from that file. Without it, one pass.
    """
    import os
    import tempfile

    from ..audio import SILENCE_PEAK
    from ..streaming import Cutter, FrameEnergy, stream

    n, hop, rate = config.n_samples, config.hop_samples, config.sample_rate
    facts: dict = {}

    def chunk(pairs, threshold):
        starts = np.array([s for s, _ in pairs], dtype=np.int64)
        samples = np.stack([w for _, w in pairs]).astype(np.float32, copy=False)
        rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=1))
        keep = np.abs(samples).max(axis=1) >= SILENCE_PEAK
        if threshold is not None:
            keep &= rms > threshold
        return Windows(samples[keep], starts[keep] / rate, rms[keep].astype(np.float32))

    def blocks():
        """(int16 block or None, float block) in order; a waveform cache's windows are cut
        from the rounded audio."""
        for block in stream(path, rate, info=facts):
            if waveform:
                from ..audio import from_int16, to_int16

                pcm = to_int16(block)
                yield pcm, from_int16(pcm)
            else:
                yield None, block

    kept = 0
    if config.energy_threshold is None:
        cutter, pairs = Cutter(n, hop), []
        for pcm, block in blocks():
            if pcm is not None:
                yield pcm
            pairs += cutter.add(block)
            while len(pairs) >= CHUNK_WINDOWS:
                cut, pairs = chunk(pairs[:CHUNK_WINDOWS], None), pairs[CHUNK_WINDOWS:]
                kept += len(cut.samples)
                yield cut
        if pairs:
            cut = chunk(pairs, None)
            kept += len(cut.samples)
            yield cut
        total = cutter.total
    else:
        with tempfile.TemporaryFile(prefix="chirpid-io-stream-") as spool:
            energy, total = FrameEnergy(config.n_fft, config.hop_length), 0
            for pcm, block in blocks():
                if pcm is not None:
                    yield pcm
                spool.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
                energy.add(block)
                total += len(block)
            spool.flush()
            threshold = config.energy_threshold * energy.mean()
            starts = np.arange(0, total - n + 1, hop) if total >= n else np.zeros(0, np.int64)
            for first in range(0, len(starts), CHUNK_WINDOWS):
                pairs = [(int(s), np.frombuffer(os.pread(spool.fileno(), 4 * n, 4 * int(s)), np.float32))
                         for s in starts[first : first + CHUNK_WINDOWS]]
                cut = chunk(pairs, threshold)
                kept += len(cut.samples)
                yield cut
    if facts.get("frames") and facts.get("sample_rate"):  # the decoded length, exact for every container
        decoded.info["duration_seconds"] = facts["frames"] / facts["sample_rate"]
    if kept == 0:
        decoded.reason = "no window above the energy threshold (silent or near-silent)"


def _describe(path: Path, decoded_seconds: float) -> dict:
    """Header facts and content hash; the duration is the header's where it is exact,
    else the decoded length (lossy containers only estimate theirs)."""
    from ..decoders import open_audio

    with open_audio(path) as audio_file:
        meta = audio_file.info
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    duration = meta.duration_seconds if meta.frames_exact else decoded_seconds
    return {"duration_seconds": float(duration), "sample_rate": meta.sample_rate,
            "channels": meta.channels, "size_bytes": path.stat().st_size,
            "content_hash": digest.hexdigest()}

