"""Lossless int16 codecs for the waveform cache: bytes and decode speed per chunk length.

    python benchmarks/waveform_codecs.py [--rate 32000] [--rounds 5] [--out table.md]

Input: every bundled sample recording, decoded and resampled to ``--rate`` Hz mono
(``chirpid_io.audio.load``, as the build does), rounded to int16, end to end; also the
same audio band-limited to 5.5 kHz (11.025 kHz recordings resampled up, the narrow-band
kind whose top octave is empty), because a predictor's gain depends on the spectrum.

For each ``chirpid.pcm`` method (``cache/pcm.py``) and chunk length: compressed bytes
against the raw PCM, and decode throughput in audio seconds per CPU second
(``time.process_time``, which another process's load disturbs less than wall time),
median of ``--rounds`` passes over all chunks. The zstd of the raw samples is a
reference line. Every decode is checked bit-exact against the input first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

CHUNK_SECONDS = (0.5, 1.0, 2.0)


def sources(rate: int) -> dict[str, np.ndarray]:
    from chirpid_io.audio import load, resample

    waves = [load(p, rate) for p in corpus.sample_files()]
    full = np.concatenate(waves)
    narrow = resample(resample(full, rate, 11_025), 11_025, rate)
    to_int16 = lambda x: np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)  # noqa: E731
    return {"bundled clips": to_int16(full), "bundled, narrow-band (11.025 kHz source)": to_int16(narrow)}


def measure(samples: np.ndarray, rate: int, method: str, chunk: int, rounds: int) -> tuple[float, float]:
    from chirpid_io.cache.pcm import decode, encode

    rows = samples[: len(samples) // chunk * chunk].reshape(-1, chunk)
    if method == "zstd (raw samples)":
        import zstandard

        blobs = [zstandard.ZstdCompressor(level=3).compress(r.tobytes()) for r in rows]
        dctx = zstandard.ZstdDecompressor()
        run = lambda: [dctx.decompress(b) for b in blobs]  # noqa: E731
    else:
        blobs = [encode(r, method, 3, rate) for r in rows]
        out = np.empty(chunk, np.int16)
        for b, r in zip(blobs, rows):
            decode(b, method, out)
            assert np.array_equal(out, r), f"{method} is not lossless"

        def run():
            for b in blobs:
                decode(b, method, out)
    times = []
    for _ in range(rounds):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return sum(map(len, blobs)) / rows.nbytes, rows.size / rate / statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=32_000, help="sample rate, Hz (default: 32000)")
    parser.add_argument("--rounds", type=int, default=5, help="decode passes, median taken (default: 5)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    from chirpid_io.cache.pcm import METHODS

    lines = ["| audio | method | chunk (s) | bytes / PCM | decode (audio-s per CPU-s) |", "|---|---|---:|---:|---:|"]
    for name, samples in sources(args.rate).items():
        for method in (*METHODS, "zstd (raw samples)"):
            for seconds in CHUNK_SECONDS:
                ratio, speed = measure(samples, args.rate, method, int(seconds * args.rate), args.rounds)
                lines.append(f"| {name} ({len(samples) / args.rate:.0f} s) | {method} | {seconds:g} | {ratio:.3f} | "
                             f"{speed:,.0f} |")
                print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
