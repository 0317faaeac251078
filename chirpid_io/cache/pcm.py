"""``chirpid.pcm``: lossless compression of int16 audio chunks, as a Zarr v3 codec.

A waveform cache stores each recording's decoded, resampled mono audio as int16 rows of
``chunk_samples``. Two methods, measured on the bundled recordings at 32 kHz
(``benchmarks/waveform_codecs.py``; README "Waveform cache"):

- ``"flac"`` (default): each chunk one FLAC stream (libsndfile's encoder, linear
  prediction and Rice codes): about 0.46 of the PCM bytes, decoded at about 1,000 audio
  seconds per CPU second.
- ``"delta-zstd"``: each sample's wrapping int16 difference from the one before,
  zigzag-mapped so small differences of either sign are small numbers, the low bytes then
  the high bytes, zstd: about 0.67 of the PCM bytes, decoded about 4x faster.

Both are exact: decoding gives back every int16 sample (tests/test_waveforms.py). The
codec acts on the chunk's little-endian int16 bytes (after zarr's ``bytes`` codec), so any
zarr-python with chirpid-io installed reads a waveform cache (the ``zarr.codecs`` entry
point).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import numpy as np
from zarr.abc.codec import BytesBytesCodec
from zarr.core.common import parse_named_configuration

NAME = "chirpid.pcm"
METHODS = ("flac", "delta-zstd")


def encode(samples: np.ndarray, method: str, level: int, sample_rate: int) -> bytes:
    """One chunk of int16 samples -> its compressed bytes."""
    samples = np.ascontiguousarray(samples, dtype="<i2").reshape(-1)
    if method == "flac":
        import soundfile as sf

        buffer = io.BytesIO()
        sf.write(buffer, samples, sample_rate, format="FLAC", subtype="PCM_16")
        return buffer.getvalue()
    import zstandard

    diff = samples.copy()
    np.subtract(samples[1:], samples[:-1], out=diff[1:])  # wraps: exact mod 2**16
    zigzag = (diff.view(np.uint16) << 1) ^ (diff >> 15).view(np.uint16)
    split = zigzag.astype("<u2").view(np.uint8).reshape(-1, 2).T  # low bytes, then high bytes
    return zstandard.ZstdCompressor(level=level).compress(np.ascontiguousarray(split).tobytes())


def decode(data: bytes, method: str, out: np.ndarray) -> None:
    """Compressed bytes -> the chunk's int16 samples, into ``out`` (its size is the
    chunk's); raises ValueError on bytes that do not decode to exactly that many."""
    flat = out.reshape(-1)
    if method == "flac":
        import soundfile as sf

        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames != flat.size or f.channels != 1:
                raise ValueError(f"a FLAC chunk of {f.frames} x {f.channels} samples, not {flat.size} x 1")
            if len(f.read(out=flat, dtype="int16")) != flat.size:
                raise ValueError("a FLAC chunk that ends early")
        return
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=flat.nbytes)
    if len(raw) != flat.nbytes:
        raise ValueError(f"{len(raw)} bytes decompressed, not {flat.nbytes}")
    split = np.frombuffer(raw, np.uint8).reshape(2, -1)
    zigzag = (split[0].astype(np.uint16) | (split[1].astype(np.uint16) << 8))
    diff = ((zigzag >> 1) ^ (-(zigzag & 1)).astype(np.uint16)).view(np.int16)
    np.cumsum(diff, dtype=np.int16, out=flat)


@dataclass(frozen=True)
class PcmCodec(BytesBytesCodec):
    """Zarr v3 bytes-to-bytes codec over little-endian int16 chunks (see the module)."""

    is_fixed_size = False
    method: str = "flac"
    level: int = 3
    sample_rate: int = 32000

    def __init__(self, *, method: str = "flac", level: int = 3, sample_rate: int = 32000) -> None:
        if method not in METHODS:
            raise ValueError(f"{NAME}: unknown method {method!r}; use one of {', '.join(METHODS)}")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "level", int(level))
        object.__setattr__(self, "sample_rate", int(sample_rate))

    @classmethod
    def from_dict(cls, data):
        _, configuration = parse_named_configuration(data, NAME)
        return cls(**(configuration or {}))

    def to_dict(self):
        return {"name": NAME, "configuration": {"method": self.method, "level": self.level,
                                                "sample_rate": self.sample_rate}}

    def _encode_sync(self, chunk_bytes, chunk_spec):
        samples = np.frombuffer(chunk_bytes.as_numpy_array().tobytes(), "<i2")
        return chunk_spec.prototype.buffer.from_bytes(encode(samples, self.method, self.level, self.sample_rate))

    def _decode_sync(self, chunk_bytes, chunk_spec):
        out = np.empty(int(np.prod(chunk_spec.shape)), "<i2")
        decode(chunk_bytes.as_numpy_array().tobytes(), self.method, out)
        return chunk_spec.prototype.buffer.from_bytes(out.tobytes())

    async def _encode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._encode_sync, chunk_bytes, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec) -> int:
        raise NotImplementedError


def register() -> None:
    """Make the codec known in this process (the entry point does it for installed copies)."""
    from zarr.registry import register_codec

    register_codec(NAME, PcmCodec)
