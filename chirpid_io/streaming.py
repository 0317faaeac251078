"""Recordings as streams of blocks: long files in bounded memory.

A soundscape can last a day. :func:`stream` decodes a file block by block
(``decoders.AudioFile.blocks``), downmixes each block and resamples it with soxr's
streaming resampler at the same "HQ" quality, so memory holds a few blocks whatever the
file's length. The output has the length whole-file decoding gives (``ceil(n * target /
source)``, as librosa fixes it); its samples equal :func:`chirpid_io.audio.load`'s within
1e-6 (soxr's one-shot and streaming paths differ in rounding only; tested on real audio,
with windows straddling block boundaries). Files up to :data:`STREAM_SECONDS` are decoded
whole instead, bit-identical to ``librosa.load``.

:class:`FrameEnergy` computes the old recipe's energy threshold (the mean RMS of centred
frames over the whole recording) as the blocks pass; :class:`Cutter` cuts windows out of
the blocks, carrying over the samples a window needs from the block before.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np

from .errors import AudioDecodeError

#: Recordings longer than this (seconds, from the header) are decoded as a stream.
STREAM_SECONDS = 120.0
#: Seconds of audio per decoded block.
BLOCK_SECONDS = 10.0


def stream(path: str | os.PathLike, sample_rate: int, block_seconds: float = BLOCK_SECONDS,
           info: dict | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``path`` at ``sample_rate`` Hz, in order.

    ``info``, when given, is filled with the native ``sample_rate``, ``channels`` and the
    decoded ``frames`` once the stream ends. Raises AudioDecodeError for an unreadable,
    empty or non-finite recording (mid-stream damage after the blocks before it).
    """
    from .decoders import open_audio

    with open_audio(path, streaming=True) as audio_file:
        native = audio_file.info.sample_rate
        resampler = None
        if native != sample_rate:
            import soxr

            resampler = soxr.ResampleStream(native, sample_rate, 1, dtype="float32", quality="HQ")
        decoded = produced = 0
        held = None  # one block held back, so the last can be trimmed to the exact length
        for block in audio_file.blocks(max(1, round(block_seconds * native))):
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else np.ascontiguousarray(block[:, 0])
            if not np.isfinite(mono).all():
                raise AudioDecodeError(path, f"holds NaN or infinite samples (after {decoded / native:.1f} s)")
            decoded += len(mono)
            out = resampler.resample_chunk(mono) if resampler is not None else mono
            if len(out):
                if held is not None:
                    produced += len(held)
                    yield held
                held = out
        if decoded == 0:
            raise AudioDecodeError(path, "holds no samples (header only or truncated)")
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True) if resampler is not None else None
        rest = [a for a in (held, tail) if a is not None and len(a)]
        last = np.concatenate(rest) if rest else np.zeros(0, np.float32)
        n_out = math.ceil(decoded * sample_rate / native) if resampler is not None else decoded
        last = last[: max(n_out - produced, 0)]
        if produced + len(last) < n_out:
            last = np.pad(last, (0, n_out - produced - len(last)))
        if info is not None:
            info.update(sample_rate=native, channels=audio_file.info.channels, frames=decoded)
        if len(last):
            yield np.ascontiguousarray(last, dtype=np.float32)


class FrameEnergy:
    """The mean RMS of centred, zero-padded frames (``librosa.feature.rms``), block by block."""

    def __init__(self, frame_length: int, hop_length: int):
        self.length, self.hop, self.half = frame_length, hop_length, frame_length // 2
        self._squares = np.zeros(self.half)  # the leading zero padding
        self._base = 0  # index, in the padded signal, of _squares[0]
        self._next = 0  # next frame to compute
        self.total = 0.0
        self.frames = 0

    def add(self, block: np.ndarray) -> None:
        self._squares = np.concatenate([self._squares, np.square(block, dtype=np.float64)])
        self._flush()

    def mean(self) -> float:
        """The mean frame RMS; ends the stream (the trailing zero padding is added)."""
        self._squares = np.concatenate([self._squares, np.zeros(self.half)])
        self._flush()
        return self.total / self.frames if self.frames else 0.0

    def _flush(self) -> None:
        end = self._base + len(self._squares)
        last = (end - self.length) // self.hop  # the last frame that fits
        if last >= self._next:
            running = np.concatenate([[0.0], np.cumsum(self._squares)])
            starts = np.arange(self._next, last + 1) * self.hop - self._base
            sums = running[starts + self.length] - running[starts]
            self.total += float(np.sqrt(np.maximum(sums, 0.0) / self.length).sum())
            self.frames += len(starts)
            self._next = last + 1
        keep_from = self._next * self.hop - self._base
        if keep_from > 0:
            self._squares = self._squares[keep_from:]
            self._base += keep_from


class Cutter:
    """Windows of ``n`` samples every ``hop`` out of a stream of blocks.

    ``add`` returns the (start sample, window) pairs the new block completes; ``finish``
    the rest: with ``pad_last``, windows that start before the end and run past it,
    zero-padded (so the windows cover the whole recording); without it, none.
    """

    def __init__(self, n: int, hop: int):
        self.n, self.hop = n, hop
        self._buffer = np.zeros(0, np.float32)
        self._start = 0  # sample index of _buffer[0]
        self._next = 0  # start of the next window
        self._covered = 0  # end of the last window cut
        self.total = 0

    def add(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.total += len(block)
        self._buffer = np.concatenate([self._buffer, block]) if len(self._buffer) else np.asarray(block)
        out = []
        while self._next + self.n <= self._start + len(self._buffer):
            offset = self._next - self._start
            out.append((self._next, self._buffer[offset : offset + self.n].copy()))
            self._covered = self._next + self.n
            self._next += self.hop
        drop = min(self._next - self._start, len(self._buffer))
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._start += drop
        return out

    def finish(self, pad_last: bool) -> list[tuple[int, np.ndarray]]:
        out = []
        while pad_last and self._covered < self.total:  # until the recording's end is inside a window
            offset = self._next - self._start
            window = np.zeros(self.n, np.float32)
            part = self._buffer[offset : offset + self.n]
            window[: len(part)] = part
            out.append((self._next, window))
            self._covered = self._next + self.n
            self._next += self.hop
        return out


def cover_count(total: int, n: int, hop: int) -> int:
    """Windows of ``n`` every ``hop`` that cover ``total`` samples (the last zero-padded):
    ``ceil(duration / window)`` for non-overlapping windows, at least one."""
    if total <= n:
        return 1
    return math.ceil((total - n) / hop) + 1
