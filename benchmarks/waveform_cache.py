"""Bytes per audio hour: the source files, a spectrogram cache and waveform caches.

    python benchmarks/waveform_cache.py [--corpus-minutes 10] [--out table.md]

Inputs: the bundled sample recordings (real clips: 22.05-48 kHz WAV/FLAC/OGG/MP3) and the
benchmark corpus (``corpus.build_corpus``: 44.1 kHz 16-bit WAV). Each is built with the
default chirpid recipe into a spectrogram cache (the default storage) and into waveform
caches with each ``chirpid.pcm`` codec (32 kHz mono int16), one after the other on this
machine; the table gives MiB per hour of audio as ``du`` counts the files (the source
files as given; int16 PCM at 32 kHz is 219.7 MiB per hour), and each build's audio
seconds per second (median of ``--rounds`` builds into fresh folders).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402


def du(path: Path) -> int:
    """Bytes of the files under ``path`` in whole file-system blocks, as ``du`` counts them."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_blocks * 512 for p in files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-minutes", type=float, default=10.0, help="benchmark corpus size (default: 10)")
    parser.add_argument("--rounds", type=int, default=1, help="builds per cell, median time taken (default: 1)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.cache.format import WaveformStorage
    from chirpid_io.config import SpectrogramConfig
    from chirpid_io.inputs import samples_dir

    work = Path(tempfile.mkdtemp(prefix="chirpid-waveform-cache-"))
    inputs = {"bundled samples": samples_dir(), f"benchmark corpus ({args.corpus_minutes:g} min)": None}
    lines = ["| audio | hours | source files | spectrogram cache | waveform, flac | waveform, delta-zstd |",
             "|---|---:|---:|---:|---:|---:|"]
    speed_lines = ["| audio | spectrogram build | waveform build, flac | waveform build, delta-zstd |",
                   "|---|---:|---:|---:|"]
    try:
        for name, source in inputs.items():
            if source is None:
                files = corpus.build_corpus(args.corpus_minutes)
                source = work / "corpus"
                (source / "all").mkdir(parents=True)
                for f in files:
                    (source / "all" / f.name).symlink_to(f)
            config = SpectrogramConfig(pad_short=True)
            audio_files = [p for p in Path(source).rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3")]
            source_bytes = sum(du(p.resolve()) for p in audio_files)
            sizes, speeds, hours = [], [], None
            for label, storage in (("spectrogram", None), ("flac", WaveformStorage()),
                                   ("delta-zstd", WaveformStorage(codec="delta-zstd"))):
                times = []
                for r in range(args.rounds):
                    out = work / f"{label}-{r}"
                    start = time.perf_counter()
                    report = build_cache(source, out, config, storage=storage, progress=False)
                    times.append(time.perf_counter() - start)
                    if r < args.rounds - 1:
                        shutil.rmtree(out)
                if storage is not None:
                    hours = open_cache(out).wave_spans()[1].sum() / config.sample_rate / 3600
                sizes.append(du(out))
                speeds.append(report.audio_seconds / statistics.median(times))
                for r in range(args.rounds):
                    shutil.rmtree(work / f"{label}-{r}", ignore_errors=True)
            per_hour = [b / hours / 2**20 for b in (source_bytes, *sizes)]
            lines.append(f"| {name} | {hours:.3f} | " + " | ".join(f"{v:.1f} MiB/h" for v in per_hour) + " |")
            speed_lines.append(f"| {name} | " + " | ".join(f"{v:,.0f} audio-s/s" for v in speeds) + " |")
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n\n" + "\n".join(speed_lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
