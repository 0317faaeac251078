"""One decoding layer over two backends: libsndfile (soundfile) and FFmpeg (PyAV).

``open_audio(path)`` returns an :class:`AudioFile`: its ``info`` (native rate, channels,
length, container, codec, backend), ``blocks(block_frames)`` (float32 ``(n, channels)``
arrays in order) and ``read()`` (the whole file; the blocks concatenated equal it bit
for bit). Samples are scaled as libsndfile scales them (integer PCM divided by
2**(bits-1)), so both backends give the same numbers for the same PCM.

Which backend decodes a file (``backend="auto"``), in this order:

1. The path must name a regular, non-empty file. This is checked with ``os.stat`` before
   anything opens it, so a FIFO, socket or device is refused instead of blocking.
2. libsndfile is asked to open it. If it does, and its codec is not in
   :data:`FFMPEG_PREFERRED_CODECS` (nor, with ``streaming=True``, in
   :data:`SOUNDFILE_WHOLE_CODECS`), libsndfile decodes it: WAV, FLAC, OGG Vorbis, MP3 and
   AIFF/AIFF-C stay bit-identical to ``librosa.load``, which reads through soundfile.
3. Otherwise FFmpeg decodes it: everything libsndfile refuses (m4a/AAC, WMA, webm/mka,
   CAF/ALAC, a file whose name lies about its content...) and Opus, which FFmpeg's
   libopus decoder reads twice as fast as libsndfile within 5e-7 of its samples
   (``benchmarks/decode_formats.py`` measures every format both ways; FFmpeg is slower
   for WAV, FLAC, Vorbis and MP3, and its MP3 decode is 0.16 dB off in bins near the
   -80 dB floor).

If neither opens the file, the error names both reasons. ``backend="soundfile"`` or
``"pyav"`` forces one.

Memory: ``blocks()`` holds about one block, except for MP3 through libsndfile, whose
samples depend on how the decode is split into reads (see SOUNDFILE_WHOLE_CODECS): it is
decoded whole, then sliced. ``open_audio(path, streaming=True)`` sends MP3 to FFmpeg.

Threads: libsndfile releases the GIL while it decodes, PyAV does not (measured here: two
threads decode two m4a files no faster than one thread does), so a thread pool runs
FFmpeg decodes one at a time; inputs that are mostly m4a/Opus/WMA need processes.

FFmpeg is opened with the ``file`` protocol only and a whitelist of audio demuxers
(:data:`FFMPEG_DEMUXERS`): playlist and concat demuxers, which open other files or URLs
named inside the data, are refused. Codec delay is left to FFmpeg: the m4a edit list
removes AAC priming and Opus pre-skip is applied, so those decode time-aligned with the
source (tests/test_decoders.py), with up to one codec frame of padding at the end; raw
ADTS ``.aac`` carries no priming information and decodes late by the encoder's priming
(1024 samples for FFmpeg's encoder), and WMA through FFmpeg leads its source by one
codec frame (2048 samples).

Every failure is an :class:`~chirpid_io.errors.AudioDecodeError` with a one-line reason:
not a regular file, empty, not decodable (both backends' reasons), no audio stream, zero
channels, truncated or damaged mid-stream (raised when the decode reaches it, after the
blocks before it), NaN/Inf samples, a format change mid-stream.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .errors import AudioDecodeError

__all__ = [
    "AUDIO_EXTENSIONS",
    "BACKENDS",
    "DEFAULT_BLOCK_FRAMES",
    "FFMPEG_DECODERS",
    "FFMPEG_DEMUXERS",
    "FFMPEG_PREFERRED_CODECS",
    "SOUNDFILE_WHOLE_CODECS",
    "AudioFile",
    "AudioInfo",
    "open_audio",
]

#: File-name endings treated as audio (compared lower-cased): libsndfile's formats first,
#: then those only FFmpeg reads. The folder input takes this tuple as its one source.
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".opus",
    ".m4a", ".mp4", ".aac", ".wma", ".webm", ".weba", ".mka", ".caf",
)
BACKENDS = ("auto", "soundfile", "pyav")
#: Frames per block that ``blocks()`` yields when not told (about 1.5 s at 44.1 kHz).
DEFAULT_BLOCK_FRAMES = 65_536
#: Frames libsndfile is asked for at a time (at least; more when a block is larger).
_SOUNDFILE_READ_FRAMES = 65_536
#: A decode of a whole file (MP3 through libsndfile) is refused when its header claims
#: more float32 bytes than this many times the file's size (plus 64 MiB): MPEG at its
#: lowest bit rate expands under 100x, a damaged or hostile header far more.
_MAX_EXPANSION = 128
#: libsndfile codecs (``SoundFile.subtype``) that ``auto`` hands to FFmpeg because FFmpeg
#: decodes them faster and within the fidelity bounds (see benchmarks/decode_formats.py).
FFMPEG_PREFERRED_CODECS: frozenset[str] = frozenset({"OPUS"})
#: libsndfile codecs whose samples depend on how the decode is split into reads (MP3
#: through mpg123: reads that split some frames change up to 5e-3 of the rest of the
#: frame, and any split moves a few samples by 1e-7, measured on the bundled MP3s), so
#: ``blocks()`` decodes them in one read and slices it: exact, but it holds the whole
#: recording. ``open_audio(..., streaming=True)`` gives them to FFmpeg instead.
SOUNDFILE_WHOLE_CODECS: frozenset[str] = frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"})
#: FFmpeg decoders used instead of FFmpeg's default for a codec: FFmpeg's own Opus decoder
#: fills noise bands with another random sequence than the reference decoder (libopus,
#: which libsndfile uses too): up to 1.8e-2 apart, 4.9 dB in the mel image; libopus
#: through FFmpeg is within 5e-7 of libsndfile's, and twice as fast (decode_formats.py).
FFMPEG_DECODERS: Mapping[str, str] = MappingProxyType({"opus": "libopus"})
#: FFmpeg demuxers allowed to open a file (``format_whitelist``): containers of audio,
#: none that opens further files or URLs named in the data (hls, concat, dash, image2...).
FFMPEG_DEMUXERS = (
    "mov", "matroska", "ogg", "asf", "aiff", "wav", "w64", "caf", "flac", "mp3", "aac",
    "ac3", "eac3", "amr", "wv", "ape", "tta", "au", "avi", "mpegts", "mpeg", "flv",
)
#: FFmpeg demuxers whose header states the stream's length (sample tables, granule
#: positions, edit lists); for them a decode that ends well short of it is an error.
#: Raw streams (mp3, aac, ac3...) only estimate their length from the bit rate.
_STATED_LENGTH_DEMUXERS = frozenset({"mov", "matroska", "ogg", "asf", "caf", "aiff", "wav", "w64", "flac"})
#: How far a decode may end before the stated length (frames) without being called
#: truncated: codec delay and frame rounding (Opus pre-skip, WMA's one-frame lead) stay
#: well under this, a lost page or a cut file does not.
_SHORTFALL_FRAMES, _SHORTFALL_FRACTION = 8_192, 0.002
#: FFmpeg codecs for which a stated length is the exact decoded length (tested). Not
#: ALAC: FFmpeg's CAF demuxer and ALAC decoder trim the padding of the last packet twice,
#: so a CAF/ALAC file FFmpeg wrote decodes up to one packet (4096 frames) short.
_EXACT_FFMPEG_CODECS = ("pcm_", "flac")
#: libsndfile subtypes that decode to integers (scaled): they cannot hold NaN or Inf.
_INTEGER_SUBTYPES = ("PCM_", "ULAW", "ALAW", "IMA_ADPCM", "MS_ADPCM", "GSM610", "G72", "DWVW",
                     "DPCM", "VOX_ADPCM", "NMS_ADPCM", "ALAC_")
#: PyAV sample formats: numpy dtype and the scale that maps them to [-1, 1) as libsndfile does.
_SAMPLE_FORMATS = {
    "u8": (np.uint8, None), "s16": (np.int16, 2.0**-15), "s32": (np.int32, 2.0**-31),
    "s64": (np.int64, 2.0**-63), "flt": (np.float32, None), "dbl": (np.float64, None),
}


@dataclass(frozen=True)
class AudioInfo:
    """What a file says about itself, before decoding.

    ``frames`` is the number of sample frames per channel: exact when ``frames_exact``
    (everything libsndfile reads but MP3; PCM and FLAC through FFmpeg), else the
    container's estimate (None when it gives none). ``duration_seconds``
    is ``frames / sample_rate`` (None without frames).
    """

    sample_rate: int  #: Hz
    channels: int
    frames: int | None
    frames_exact: bool
    duration_seconds: float | None
    container: str  #: e.g. "WAV", "OGG" (libsndfile) or "mov,mp4,m4a,3gp,3g2,mj2" (FFmpeg)
    codec: str  #: e.g. "PCM_16", "VORBIS" (libsndfile) or "aac", "opus" (FFmpeg)
    backend: str  #: "soundfile" or "pyav"


class AudioFile:
    """An open recording. Use as a context manager; ``blocks()`` and ``read()`` may be
    called more than once, each decoding from the start."""

    path: Path
    info: AudioInfo
    #: whether ``blocks()`` holds only about one block at a time (False: it decodes the
    #: whole recording first; see SOUNDFILE_WHOLE_CODECS)
    bounded_memory: bool = True

    def blocks(self, block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """Decode in order as float32 ``(n, channels)`` arrays of ``block_frames`` frames
        (the last may be shorter; none is empty). Each array may be kept: it is not
        reused. One pass at a time: starting another ends the one before.
        Concatenated, they equal ``read()`` bit for bit. Damage found mid-stream raises
        AudioDecodeError when it is reached, after the blocks before it."""
        raise NotImplementedError

    def read(self) -> np.ndarray:
        """The whole recording, float32 ``(frames, channels)``."""
        parts = list(self.blocks(1 << 20))
        if not parts:
            return np.empty((0, self.info.channels), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r} {self.info}>"

    def _error(self, reason: str) -> AudioDecodeError:
        return AudioDecodeError(self.path, reason)


def open_audio(path: str | os.PathLike, backend: str = "auto", *, streaming: bool = False) -> AudioFile:
    """Open ``path`` for decoding with the rule in this module's docstring.

    ``backend``: "auto" (the rule), "soundfile" or "pyav" (only that one).
    ``streaming``: with "auto", send the codecs libsndfile cannot decode block by block
    (:data:`SOUNDFILE_WHOLE_CODECS`, MP3) to FFmpeg, whose decode is within 1e-5 of
    libsndfile's, so that ``blocks()`` holds about one block (``bounded_memory`` says
    whether it does: it cannot when only libsndfile opens the file). Raises AudioDecodeError when
    the path is not a readable, regular, non-empty file or no backend can open it;
    ValueError for an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    path = Path(path)
    _check_regular_file(path)
    if backend == "pyav":
        return _PyAVFile(path)
    try:
        opened = _SoundFile(path)
    except AudioDecodeError as refused:
        if backend == "soundfile":
            raise
        try:
            return _PyAVFile(path)
        except AudioDecodeError as also:
            raise AudioDecodeError(path, _both_refused(refused.reason, also.reason)) from None
    codec = opened.info.codec
    if backend == "auto" and (codec in FFMPEG_PREFERRED_CODECS or (streaming and codec in SOUNDFILE_WHOLE_CODECS)):
        try:
            preferred = _PyAVFile(path)
        except AudioDecodeError:
            return opened  # libsndfile reads it: better than nothing
        opened.close()
        return preferred
    return opened


# --------------------------------------------------------------------------- checks


def _check_regular_file(path: Path) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioDecodeError(path, "cannot be read (no such file)") from None
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot be read ({_one_line(exc.strerror or exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioDecodeError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special")
        raise AudioDecodeError(path, f"is not a regular file ({kind}); only regular files are decoded")
    if st.st_size == 0:
        raise AudioDecodeError(path, "is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(path, "cannot be read (permission denied)")


def _check_block_size(block_frames: int) -> int:
    if isinstance(block_frames, bool) or not isinstance(block_frames, int | np.integer) or block_frames < 1:
        raise ValueError(f"block_frames must be a positive integer, not {block_frames!r}")
    return int(block_frames)


def _finite(block: np.ndarray) -> bool:
    # a float64 sum is non-finite exactly when a sample is (float32 values cannot overflow it)
    return math.isfinite(float(block.sum(dtype=np.float64)))


def _nonfinite_reason(block: np.ndarray, done: int, rate: int) -> str:
    first = done + int(np.argmin(np.isfinite(block).all(axis=1)))
    return f"holds NaN or infinite samples (the first at {first / rate:.2f} s)"


def _one_line(text: object, limit: int = 160) -> str:
    """``text`` as one printable line: control characters become spaces, then trimmed."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text))
    cleaned = " ".join(cleaned.split()).rstrip(".")
    return cleaned[:limit] or "unknown error"


def _both_refused(soundfile_reason: str, ffmpeg_reason: str) -> str:
    def detail(reason: str) -> str:
        return reason.partition("(")[2].rstrip(")") if reason.startswith("not decodable") else reason

    if soundfile_reason.startswith("not decodable") and ffmpeg_reason.startswith("not decodable"):
        return f"not decodable audio ({detail(soundfile_reason)}; {detail(ffmpeg_reason)})"
    # a finding such as "no audio stream" says more than libsndfile's "not recognised"
    return ffmpeg_reason if soundfile_reason.startswith("not decodable") else soundfile_reason


# --------------------------------------------------------------------------- libsndfile


class _SoundFile(AudioFile):
    """libsndfile through soundfile: the samples ``librosa.load`` sees."""

    def __init__(self, path: Path):
        self.path = path
        self._file = self._open()
        self._position = 0  # frames read since the last rewind (SoundFile.tell() fails for some formats)
        f = self._file
        if f.channels < 1 or f.samplerate < 1:
            f.close()
            raise self._error(f"has an invalid header ({f.channels} channels at {f.samplerate} Hz)")
        # libsndfile's MPEG length comes from a Xing/LAME header when there is one, else
        # from the file size; every other length it reports is the decoded length
        self.info = AudioInfo(
            sample_rate=int(f.samplerate), channels=int(f.channels), frames=int(f.frames),
            frames_exact=f.format != "MP3", duration_seconds=f.frames / f.samplerate,
            container=f.format, codec=f.subtype, backend="soundfile",
        )
        self._check_nonfinite = not f.subtype.startswith(_INTEGER_SUBTYPES)
        self.bounded_memory = f.subtype not in SOUNDFILE_WHOLE_CODECS

    def _open(self):
        import soundfile as sf

        try:
            return sf.SoundFile(str(self.path))
        except sf.LibsndfileError as exc:
            raise self._error(f"not decodable audio (libsndfile: {_one_line(exc.error_string)})") from None
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise self._error(f"not decodable audio (libsndfile: {_one_line(exc)})") from None

    def blocks(self, block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        block_frames = _check_block_size(block_frames)
        self._check_open()
        if not self.bounded_memory:
            return _slices(self.read(), block_frames)
        # libsndfile is read in chunks of at least _SOUNDFILE_READ_FRAMES: every codec it
        # has decodes the same samples for any split at that size (tested), and PAF 24-bit
        # loses frames when read one frame at a time
        chunks = self._chunks(max(block_frames, _SOUNDFILE_READ_FRAMES))
        return self._checked(_reblock(chunks, block_frames))

    def _checked(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        done = 0
        for block in blocks:
            self._check(block, done)
            yield block
            done += len(block)

    def read(self) -> np.ndarray:
        self._check_open()
        if self.bounded_memory:
            return super().read()
        # one read, as librosa.load and sf.read make it (see SOUNDFILE_WHOLE_CODECS)
        info = self.info
        needed = info.frames * info.channels * 4
        if needed > _MAX_EXPANSION * self.path.stat().st_size + (64 << 20):
            raise self._error(f"states an implausible length ({info.frames} frames for "
                              f"{self.path.stat().st_size} bytes); the header is damaged")
        self._rewind()
        data = self._read(-1, 0)
        self._check(data, 0)
        return data

    def close(self) -> None:
        self._file.close()

    def _check_open(self) -> None:
        if self._file.closed:
            raise ValueError(f"{self.path}: the AudioFile is closed")

    def _chunks(self, size: int) -> Iterator[np.ndarray]:
        self._rewind()
        done = 0
        # no further than the length libsndfile states: sf.read (and so librosa) stops there
        while (want := min(size, self.info.frames - done)) > 0:
            chunk = self._read(want, done)
            if len(chunk) == 0:
                return
            yield chunk
            done += len(chunk)

    def _rewind(self) -> None:
        import soundfile as sf

        if self._position == 0:
            return
        try:
            self._file.seek(0)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            self._file.close()  # a format libsndfile cannot seek in: start a fresh decoder
            self._file = self._open()
        self._position = 0

    def _read(self, frames: int, done: int) -> np.ndarray:
        import soundfile as sf

        try:
            data = self._file.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, MemoryError) as exc:
            at = done / self.info.sample_rate
            raise self._error(f"truncated or damaged mid-stream near {at:.2f} s "
                              f"(libsndfile: {_one_line(getattr(exc, 'error_string', exc))})") from None
        self._position += len(data)
        return data

    def _check(self, block: np.ndarray, done: int) -> None:
        if self._check_nonfinite and not _finite(block):
            raise self._error(_nonfinite_reason(block, done, self.info.sample_rate))


def _slices(whole: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(whole), size):
        yield whole[start:start + size]


def _reblock(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Chunks of any lengths, in order, as blocks of exactly ``size`` frames (the last
    may be shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    try:
        for chunk in chunks:
            start = 0
            if pending:
                need = size - held
                if len(chunk) < need:
                    pending.append(chunk)
                    held += len(chunk)
                    continue
                pending.append(chunk[:need])
                yield np.concatenate(pending)
                pending, held, start = [], 0, need
            while len(chunk) - start >= size:
                yield chunk[start:start + size]
                start += size
            if start < len(chunk):
                pending, held = [chunk[start:]], len(chunk) - start
    except AudioDecodeError:
        if pending:  # the samples before the damage come first
            yield pending[0] if len(pending) == 1 else np.concatenate(pending)
        raise
    if pending:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


# --------------------------------------------------------------------------- FFmpeg


class _PyAVFile(AudioFile):
    """FFmpeg through PyAV, for what libsndfile cannot read (or reads slower)."""

    def __init__(self, path: Path, decoders: Mapping[str, str] | None = None):
        import av

        self.path = path
        # ``decoders`` replaces FFMPEG_DECODERS (benchmarks pass {} for FFmpeg's own)
        wanted = FFMPEG_DECODERS if decoders is None else decoders
        self._decoders = {codec: name for codec, name in wanted.items() if name in av.codecs_available}
        self._container = None
        self._pass: Iterator[np.ndarray] | None = None
        self._closed = False
        container, stream = self._open()
        self._container = container
        ctx = stream.codec_context
        rate, channels = int(ctx.sample_rate or 0), int(ctx.channels or 0)
        frames, exact = self._stated_length(container, stream, rate)
        self.info = AudioInfo(
            sample_rate=rate, channels=channels, frames=frames, frames_exact=exact,
            duration_seconds=frames / rate if frames is not None else None,
            container=container.format.name, codec=self._decoders.get(ctx.name, ctx.name), backend="pyav",
        )

    def _open(self):
        import av

        # "file:" keeps FFmpeg from reading the name as a URL or protocol ("concat:", "http:")
        url = "file:" + os.path.abspath(self.path)
        options = {"protocol_whitelist": "file", "format_whitelist": ",".join(FFMPEG_DEMUXERS)}
        try:
            container = av.open(url, options=options, metadata_errors="replace")
        except av.error.FFmpegError as exc:
            raise self._error(f"not decodable audio (FFmpeg: {_ffmpeg_text(exc)})") from None
        except (OSError, ValueError, UnicodeError) as exc:
            raise self._error(f"not decodable audio (FFmpeg: {_one_line(exc)})") from None
        try:
            audio = container.streams.audio
            if not audio:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise self._error(f"has no audio stream (streams: {', '.join(kinds)})")
            stream = audio[0]
            ctx = stream.codec_context
            # what FFmpeg makes of a damaged header (or of junk with an audio name)
            if not ctx.channels:
                raise self._error(f"not decodable audio (FFmpeg: its {ctx.name} stream has zero channels)")
            if not ctx.sample_rate or ctx.sample_rate < 1:
                raise self._error(f"not decodable audio (FFmpeg: its {ctx.name} stream has no sample rate)")
        except BaseException:
            container.close()
            raise
        return container, stream

    @staticmethod
    def _stated_length(container, stream, rate: int) -> tuple[int | None, bool]:
        demuxer = container.format.name.split(",")[0]
        if stream.duration is not None and stream.time_base is not None:
            frames = round(stream.duration * stream.time_base * rate)
        elif container.duration is not None:  # microseconds
            frames = round(container.duration * rate / 1_000_000)
        else:
            return None, False
        exact = (demuxer in _STATED_LENGTH_DEMUXERS and stream.duration is not None
                 and stream.codec_context.name.startswith(_EXACT_FFMPEG_CODECS))
        return (frames if frames > 0 else None), exact

    def blocks(self, block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        block_frames = _check_block_size(block_frames)
        if self._closed:
            raise ValueError(f"{self.path}: the AudioFile is closed")
        if self._pass is not None:  # one pass at a time: an unfinished one is ended
            self._pass.close()
        if self._container is None:  # an earlier pass used it: decode from a fresh one
            self._container, _ = self._open()
        container, self._container = self._container, None
        self._pass = self._decode(container, block_frames)
        return self._pass

    def _decode(self, container, block_frames: int) -> Iterator[np.ndarray]:
        import av

        rate, channels = self.info.sample_rate, self.info.channels
        done = 0  # frames yielded or buffered
        buf, pos = np.empty((block_frames, channels), np.float32), 0
        floating = False  # integer samples cannot be NaN or Inf: checked only after a float frame
        failure: AudioDecodeError | None = None  # raised after the samples before it
        try:
            frames = self._frames(container, container.streams.audio[0])
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    failure = self._error(f"truncated or damaged mid-stream near {done / rate:.2f} s "
                                          f"(FFmpeg: {_ffmpeg_text(exc)})")
                    break
                k = frame.samples
                if k == 0:
                    continue
                if frame.layout.nb_channels != channels or frame.sample_rate != rate:
                    failure = self._error(f"changes format mid-stream near {done / rate:.2f} s "
                                          f"({channels} ch {rate} Hz to {frame.layout.nb_channels} ch "
                                          f"{frame.sample_rate} Hz)")
                    break
                try:
                    sources, scale = _frame_arrays(frame, k, channels)
                except KeyError:
                    failure = self._error(f"decodes to an unsupported sample format ({frame.format.name})")
                    break
                floating |= frame.format.name[:3] in ("flt", "dbl")
                off = 0
                while off < k:
                    n = min(k - off, block_frames - pos)
                    _put(sources, off, n, scale, buf[pos:pos + n])
                    pos += n
                    off += n
                    if pos == block_frames:
                        self._check(buf, floating, done + off - pos)
                        yield buf
                        buf, pos = np.empty((block_frames, channels), np.float32), 0
                done += k
            if pos:
                self._check(buf[:pos], floating, done - pos)
                yield buf[:pos]
        finally:
            container.close()
        if failure is not None:
            raise failure
        self._check_length(done)

    def _frames(self, container, stream):
        """Decoded frames, through the decoder FFMPEG_DECODERS names for the codec if any."""
        import av

        name = self._decoders.get(stream.codec_context.name)
        if name is None:
            yield from container.decode(stream)
            return
        ctx = av.CodecContext.create(name, "r")
        ctx.extradata = stream.codec_context.extradata
        ctx.sample_rate = stream.codec_context.sample_rate
        ctx.layout = stream.codec_context.layout
        ctx.options = {"request_sample_fmt": "flt"}  # libopus gives int16 unless asked
        for packet in container.demux(stream):
            yield from ctx.decode(packet if packet.size else None)  # the last, empty one flushes

    def _check(self, block: np.ndarray, floating: bool, first: int) -> None:
        if floating and not _finite(block):
            raise self._error(_nonfinite_reason(block, first, self.info.sample_rate))

    def _check_length(self, decoded: int) -> None:
        info = self.info
        demuxer = info.container.split(",")[0]
        if info.frames is None or demuxer not in _STATED_LENGTH_DEMUXERS:
            return
        if info.frames - decoded > max(_SHORTFALL_FRAMES, _SHORTFALL_FRACTION * info.frames):
            raise self._error(f"truncated or damaged: decoded {decoded / info.sample_rate:.2f} s of the "
                              f"{info.frames / info.sample_rate:.2f} s its container states")

    def close(self) -> None:
        self._closed = True
        if self._pass is not None:
            self._pass.close()  # its finally closes the container it decodes
            self._pass = None
        if self._container is not None:
            self._container.close()
            self._container = None


def _frame_arrays(frame, k: int, channels: int):
    """Views of one decoded frame's samples (a list of per-channel (k,) arrays for a
    planar format, or one (k, channels) array for a packed one) and their scale.
    KeyError for a sample format outside ``_SAMPLE_FORMATS``."""
    name = frame.format.name
    dtype, scale = _SAMPLE_FORMATS[name.rstrip("p")]
    if frame.format.is_planar:
        sources = [np.frombuffer(plane, dtype=dtype, count=k) for plane in frame.planes[:channels]]
    else:
        sources = np.frombuffer(frame.planes[0], dtype=dtype, count=k * channels).reshape(k, channels)
    return sources, scale


def _put(sources, off: int, n: int, scale: float | None, dest: np.ndarray) -> None:
    """Write frames ``off:off+n`` of ``sources`` into ``dest`` (n, channels) float32."""
    pairs = ([(src, dest[:, c]) for c, src in enumerate(sources)] if isinstance(sources, list)
             else [(sources, dest)])
    for src, out in pairs:
        part = src[off:off + n]
        if part.dtype == np.uint8:  # unsigned 8-bit: centred on 128, as libsndfile reads it
            np.subtract(part, np.float32(128), out=out)  # in float32: no uint8 wrap-around
            out *= np.float32(1 / 128)
        elif scale is None:
            np.copyto(out, part, casting="same_kind")
        else:
            np.multiply(part, np.float32(scale), out=out, casting="unsafe")


def _ffmpeg_text(exc: Exception) -> str:
    # the message of an FFmpegError repeats the file name; its strerror does not
    return _one_line(getattr(exc, "strerror", None) or type(exc).__name__)
