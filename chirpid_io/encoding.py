"""Write PCM into the formats the decoding layer reads: for tests, benchmarks and examples.

``encode(path, samples, sample_rate, fmt)`` writes float samples ``(frames, channels)``
in [-1, 1] as one of :data:`FORMATS`: libsndfile (soundfile) writes WAV, FLAC, OGG
Vorbis and MP3; FFmpeg (PyAV) writes the rest (m4a/AAC, Opus, WMA, AIFF and AIFF-C,
webm, CAF/ALAC, raw ADTS). Both come with chirpid-io's dependencies, so no audio needs
to be committed to test a format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "AudioFormat", "encode"]


@dataclass(frozen=True)
class AudioFormat:
    """How one format is written."""

    extension: str  #: file-name ending, with the dot
    writer: str  #: "soundfile" or "pyav"
    container: str  #: libsndfile major format, or FFmpeg muxer
    codec: str  #: libsndfile subtype, or FFmpeg encoder
    bit_rate: int | None = None  #: bits per second for lossy FFmpeg encoders
    rates: tuple[int, ...] | None = None  #: the only sample rates the encoder takes (Hz)
    lossy: bool = False


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat(".wav", "soundfile", "WAV", "PCM_16"),
    "flac": AudioFormat(".flac", "soundfile", "FLAC", "PCM_16"),
    "ogg-vorbis": AudioFormat(".ogg", "soundfile", "OGG", "VORBIS", lossy=True),
    "mp3": AudioFormat(".mp3", "soundfile", "MP3", "MPEG_LAYER_III", lossy=True),
    "m4a-aac": AudioFormat(".m4a", "pyav", "mp4", "aac", 128_000, lossy=True),
    "opus": AudioFormat(".opus", "pyav", "ogg", "libopus", 96_000,
                        (8_000, 12_000, 16_000, 24_000, 48_000), lossy=True),
    "wma": AudioFormat(".wma", "pyav", "asf", "wmav2", 128_000, lossy=True),
    "webm-opus": AudioFormat(".webm", "pyav", "webm", "libopus", 96_000,
                             (8_000, 12_000, 16_000, 24_000, 48_000), lossy=True),
    "aac-adts": AudioFormat(".aac", "pyav", "adts", "aac", 128_000, lossy=True),
    "aiff": AudioFormat(".aiff", "pyav", "aiff", "pcm_s16be"),
    "aifc-sowt": AudioFormat(".aifc", "pyav", "aiff", "pcm_s16le"),
    "aifc-float": AudioFormat(".aifc", "pyav", "aiff", "pcm_f32be"),
    "aifc-alaw": AudioFormat(".aifc", "pyav", "aiff", "pcm_alaw", lossy=True),
    "aifc-ima4": AudioFormat(".aifc", "pyav", "aiff", "adpcm_ima_qt", lossy=True),
    "caf-alac": AudioFormat(".caf", "pyav", "caf", "alac"),
}

#: Frames handed to a writer per call: libsndfile's Vorbis encoder crashes (SIGSEGV,
#: libsndfile 1.2.2 in soundfile 0.13) when given two minutes of stereo in one write.
_CHUNK = 32_768


def encode(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, fmt: str) -> Path:
    """Write ``samples`` (float, (frames,) or (frames, channels), in [-1, 1]) at
    ``sample_rate`` Hz to ``path`` as ``FORMATS[fmt]``; returns the path.

    ValueError for an unknown format or a rate the encoder does not take.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    if spec.rates is not None and sample_rate not in spec.rates:
        raise ValueError(f"{fmt} encodes only at {', '.join(map(str, spec.rates))} Hz, not {sample_rate}")
    data = np.asarray(samples, dtype=np.float32)
    data = data[:, None] if data.ndim == 1 else data
    path = Path(path)
    if spec.writer == "soundfile":
        import soundfile as sf

        with sf.SoundFile(path, "w", sample_rate, data.shape[1], format=spec.container, subtype=spec.codec) as f:
            for start in range(0, len(data), _CHUNK):
                f.write(data[start:start + _CHUNK])
        return path
    import av

    layout = {1: "mono", 2: "stereo"}.get(data.shape[1], f"{data.shape[1]}c")
    with av.open(str(path), "w", format=spec.container) as out:
        stream = out.add_stream(spec.codec, rate=sample_rate, layout=layout)
        if spec.bit_rate:
            stream.bit_rate = spec.bit_rate
        for start in range(0, len(data), _CHUNK):
            # planar float in; PyAV converts to the encoder's format and frame size
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[start:start + _CHUNK].T),
                                               format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
