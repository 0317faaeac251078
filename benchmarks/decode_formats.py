"""Decode speed and fidelity per format: libsndfile (soundfile) against FFmpeg (PyAV).

    python benchmarks/decode_formats.py [--minutes 1] [--rounds 3] [--mel-windows 8] [--out table.md]

Input: the bundled sample recordings, each resampled to 44.1 kHz (soxr HQ), end to end
(left channel in file order, right channel in a seeded shuffle, so the channels differ),
repeated to ``--minutes`` and scaled to a 0.8 peak. It is encoded at run time into each
format (chirpid_io.encoding; Opus at 48 kHz, the rates libopus takes); nothing is written
outside a temporary folder.

For each format and each backend that opens it (``open_audio(path, backend=...)``):
decode throughput, audio seconds per second, median of ``--rounds`` rounds of ``read()``
(the backends alternate within a round so that drift hits both). Where both read it:

- max |sample difference| between the two decodes (over the common length), and the
  length difference in frames (FFmpeg minus libsndfile);
- mel vs reference: the recipe's dB image (``kernels.mel_spectrogram(backend=
  "reference")``, float64) of FFmpeg's decode against the same image of libsndfile's,
  after the same downmix and soxr HQ to 32 kHz, max over all bins of the first
  ``--mel-windows`` 5 s windows; bound 0.01 dB;
- mel vs librosa: the same FFmpeg-path image against the old recipe end to end
  (``librosa.load(sr=32000)``, librosa's mel and ``power_to_db``, as
  ``chirpid_io.legacy``); bound 0.05 dB.

A format goes to FFmpeg when FFmpeg is faster and within both bounds ("faster" needs a
margin of 10%, more than this machine's drift between two alternating runs). The last
column is what ``open_audio`` (auto) chooses today, so a mismatch between the rule and
the layer shows. soxr HQ 44.1 -> 32 kHz of the same audio (mono) is timed for context.
All numbers are provisional on a shared machine; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

RATE = 44_100
OPUS_RATE = 48_000
FORMATS = ("wav", "flac", "ogg-vorbis", "mp3", "opus", "m4a-aac", "wma")
REF_BOUND_DB, LIBROSA_BOUND_DB = 0.01, 0.05
FASTER_MARGIN = 1.10


def source_audio(minutes: float, seed: int = 0) -> np.ndarray:
    """(frames, 2) float32 at 44.1 kHz: the bundled samples end to end, see the docstring."""
    from chirpid_io.audio import resample
    from chirpid_io.decoders import open_audio

    clips = []
    for path in corpus.sample_files():
        with open_audio(path) as f:
            data = f.read()
            rate = f.info.sample_rate
        clips.append(resample(data.mean(axis=1, dtype=np.float32), rate, RATE))
    if not clips:
        raise SystemExit("no bundled samples found under chirpid_io/data/samples")
    order = np.random.default_rng(seed).permutation(len(clips))
    left, right = np.concatenate(clips), np.concatenate([clips[i] for i in order])
    stereo = np.stack([left, right], axis=1)
    total = round(minutes * 60 * RATE)
    stereo = np.tile(stereo, (-(-total // len(stereo)), 1))[:total]
    return (stereo * (0.8 / np.abs(stereo).max())).astype(np.float32)


def encode_all(source: np.ndarray, folder: Path) -> dict[str, Path]:
    from chirpid_io.audio import resample
    from chirpid_io.encoding import FORMATS as SPECS
    from chirpid_io.encoding import encode

    at_48k = None
    paths = {}
    for fmt in FORMATS:
        spec = SPECS[fmt]
        if spec.rates and RATE not in spec.rates:
            if at_48k is None:
                at_48k = np.stack([resample(source[:, c], RATE, OPUS_RATE) for c in range(source.shape[1])], 1)
            paths[fmt] = encode(folder / f"audio{spec.extension}", at_48k, OPUS_RATE, fmt)
        else:
            paths[fmt] = encode(folder / f"audio{spec.extension}", source, RATE, fmt)
    return paths


def opener(backend: str):
    """``backend`` -> a function opening a path with it; "pyav-native" is FFmpeg with its
    own decoders only (no FFMPEG_DECODERS override), to show why the override exists."""
    from chirpid_io import decoders

    if backend == "pyav-native":
        return lambda path: decoders._PyAVFile(Path(path), decoders={})
    return lambda path: decoders.open_audio(path, backend=backend)


def decode(path: Path, backend: str) -> tuple[np.ndarray, int]:
    with opener(backend)(path) as f:
        return f.read(), f.info.sample_rate


def readers(path: Path, ffmpeg: str = "pyav") -> list[str]:
    from chirpid_io.errors import AudioDecodeError

    found = []
    for backend in ("soundfile", ffmpeg):
        try:
            opener(backend)(path).close()
            found.append(backend)
        except AudioDecodeError:
            pass
    return found


def throughput(path: Path, backends: list[str], rounds: int, seconds: float) -> dict[str, float]:
    times: dict[str, list[float]] = {b: [] for b in backends}
    for b in backends:
        decode(path, b)  # warm the page cache and the libraries
    for _ in range(rounds):
        for b in backends:
            start = time.perf_counter()
            decode(path, b)
            times[b].append(time.perf_counter() - start)
    return {b: seconds / statistics.median(t) for b, t in times.items()}


def mel_db(wave32k: np.ndarray, count: int) -> np.ndarray:
    """The recipe's dB images of the first ``count`` non-overlapping 5 s windows (float64)."""
    from chirpid_io.config import SpectrogramConfig
    from chirpid_io.kernels import mel_spectrogram

    config = SpectrogramConfig(scaling="db")
    n = config.n_samples
    count = min(count, len(wave32k) // n)
    windows = np.stack([wave32k[i * n:(i + 1) * n] for i in range(count)])
    return np.concatenate([mel_spectrogram(windows[i:i + 4], config, backend="reference").numpy()
                           for i in range(0, count, 4)])


def librosa_db(path: Path, count: int) -> np.ndarray | None:
    """The old recipe end to end, as chirpid_io.legacy computes it (None without librosa)."""
    try:
        import librosa
    except ImportError:
        return None
    from chirpid_io.legacy import RECIPE as c
    from chirpid_io.legacy import legacy_load

    wave = legacy_load(path)
    n = c.n_samples
    images = []
    for i in range(min(count, len(wave) // n)):
        power = librosa.feature.melspectrogram(
            y=wave[i * n:(i + 1) * n], sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
            win_length=c.win_length, center=c.center, pad_mode=c.pad_mode, power=c.power,
            n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
        images.append(librosa.power_to_db(power, ref=np.max, amin=c.amin, top_db=c.top_db))
    return np.stack(images)


def to_32k(data: np.ndarray, rate: int) -> np.ndarray:
    from chirpid_io.audio import resample

    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, rate, 32_000)


def fidelity(path: Path, windows: int, ffmpeg: str = "pyav") -> dict[str, float | int | None]:
    a, rate_a = decode(path, "soundfile")
    b, rate_b = decode(path, ffmpeg)
    n = min(len(a), len(b))
    out: dict[str, float | int | None] = {"max_abs": float(np.abs(a[:n] - b[:n]).max()), "length": len(b) - len(a)}
    ref_a, ref_b = mel_db(to_32k(a, rate_a), windows), mel_db(to_32k(b, rate_b), windows)
    out["mel_ref_db"] = float(np.abs(ref_b - ref_a).max())
    legacy = librosa_db(path, windows)
    out["mel_librosa_db"] = None if legacy is None else float(np.abs(ref_b[:len(legacy)] - legacy).max())
    out["sf_librosa_db"] = None if legacy is None else float(np.abs(ref_a[:len(legacy)] - legacy).max())
    return out


def soxr_throughput(source: np.ndarray, rounds: int) -> float:
    from chirpid_io.audio import resample

    mono = source.mean(axis=1, dtype=np.float32)
    resample(mono[:RATE], RATE, 32_000)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        resample(mono, RATE, 32_000)
        times.append(time.perf_counter() - start)
    return len(mono) / RATE / statistics.median(times)


def choose(speed: dict[str, float], fid: dict | None, ffmpeg: str = "pyav") -> tuple[str, str]:
    """The measured rule: (backend, why)."""
    if "soundfile" not in speed:
        return "pyav", "only FFmpeg reads it"
    if ffmpeg not in speed:
        return "soundfile", "only libsndfile reads it"
    ratio = speed[ffmpeg] / speed["soundfile"]
    if ratio < FASTER_MARGIN:
        return "soundfile", f"FFmpeg {ratio:.2f}x, not faster"
    ref, lib = fid["mel_ref_db"], fid["mel_librosa_db"]
    if ref > REF_BOUND_DB or (lib is not None and lib > LIBROSA_BOUND_DB):
        return "soundfile", f"FFmpeg {ratio:.2f}x but outside the bounds"
    return "pyav", f"FFmpeg {ratio:.2f}x and within the bounds"


def _fmt(value, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--minutes", type=float, default=1.0, help="audio per format, minutes (default: 1)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per backend; the median is kept (default: 3)")
    parser.add_argument("--mel-windows", type=int, default=8,
                        help="5 s windows compared in the mel columns (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the right channel's order (default: 0)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    import platform

    import av
    import soundfile as sf

    from chirpid_io.decoders import open_audio

    started = time.perf_counter()
    source = source_audio(args.minutes, args.seed)
    seconds = len(source) / RATE
    lines = [
        f"{seconds / 60:.1f} min of 44.1 kHz stereo per format (Opus: 48 kHz), from the bundled samples; "
        f"libsndfile {sf.__libsndfile_version__} (soundfile {sf.__version__}), "
        f"FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))} (PyAV {av.__version__}); "
        f"{platform.processor() or platform.machine()}, medians of {args.rounds}. Provisional.",
        "",
        "| format | file KiB | libsndfile audio-s/s | FFmpeg audio-s/s | FFmpeg / libsndfile "
        "| max abs diff | length diff | mel vs reference dB | mel vs librosa dB | measured choice | layer uses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="chirpid-decode-") as tmp:
        paths = encode_all(source, Path(tmp))
        rows = [(fmt, path, "pyav") for fmt, path in paths.items()]
        rows.insert(FORMATS.index("opus") + 1, ("opus, FFmpeg's own decoder", paths["opus"], "pyav-native"))
        for fmt, path, ffmpeg in rows:
            backends = readers(path, ffmpeg)
            speed = throughput(path, backends, args.rounds, seconds)
            fid = fidelity(path, args.mel_windows, ffmpeg) if len(backends) == 2 else None
            choice, why = choose(speed, fid, ffmpeg)
            with open_audio(path) as f:
                layer = f"{f.info.backend} ({f.info.codec})"
            ratio = speed[ffmpeg] / speed["soundfile"] if len(speed) == 2 else None
            fid = fid or {}
            lines.append(
                f"| {fmt} | {path.stat().st_size / 1024:.0f} | {_fmt(speed.get('soundfile'), '.0f')} "
                f"| {_fmt(speed.get(ffmpeg), '.0f')} | {_fmt(ratio, '.2f')} | {_fmt(fid.get('max_abs'), '.2e')} "
                f"| {_fmt(fid.get('length'), 'd')} | {_fmt(fid.get('mel_ref_db'), '.4f')} "
                f"| {_fmt(fid.get('mel_librosa_db'), '.4f')} | {choice if ffmpeg == 'pyav' else '-'} ({why}) "
                f"| {layer if ffmpeg == 'pyav' else '-'} |")
    lines += ["", f"soxr HQ 44.1 -> 32 kHz (mono, the same audio): {soxr_throughput(source, args.rounds):.0f} audio-s/s. "
              f"Bounds: mel vs reference <= {REF_BOUND_DB} dB, vs librosa <= {LIBROSA_BOUND_DB} dB. "
              f"Run took {time.perf_counter() - started:.0f} s."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
