"""Decoding one recording into windows, in a worker process; failures become reasons."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import Windows, load, windows
from ..config import SpectrogramConfig
from ..errors import AudioDecodeError


@dataclass
class Decoded:
    """What the builder needs from one recording; ``reason`` is set when it was skipped."""

    windows: Windows | None
    info: dict = field(default_factory=dict)
    reason: str = ""


#: The description of a recording that could not be read.
EMPTY_INFO = {"duration_seconds": None, "sample_rate": None, "channels": None, "size_bytes": None,
              "content_hash": None}


def decode_recording(path: Path, config: SpectrogramConfig) -> Decoded:
    """Decode and window ``path``; never raises for a bad file."""
    info: dict = dict(EMPTY_INFO)
    try:
        wave = load(path, config.sample_rate)
        info.update(_describe(path, len(wave) / config.sample_rate))
    except AudioDecodeError as exc:
        return Decoded(None, info, exc.reason)
    except Exception as exc:  # a bad file must never stop a build
        return Decoded(None, info, f"unexpected decoder failure ({type(exc).__name__}: {exc})")
    cut = windows(wave, config)
    if len(cut.samples) == 0:
        seconds = len(wave) / config.sample_rate
        if seconds < config.window_seconds and not config.pad_short:
            reason = (f"shorter than one window ({seconds:.3f} s < {config.window_seconds} s); "
                      "use --pad-short to keep it")
        else:
            reason = "no window above the energy threshold (silent or near-silent)"
        return Decoded(None, info, reason)
    return Decoded(cut, info)


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

