"""A sharded build (2 parts side by side, then merge-cache) against one build with the
same total number of decoding threads, on the benchmark corpus.

    python benchmarks/sharded_build.py --corpus-minutes 10

Each side runs as fresh processes (the parts at the same time); wall times are medians of
``--rounds``. On 2 cores the two should be close: the parts split the same CPUs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

CLI = [sys.executable, "-m", "chirpid_io"]


def one_round(source: Path, work: Path, parts: int) -> tuple[float, float, float]:
    """(single build s, parts s, merge s)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run([*CLI, "build-cache", source, work / "single", "--workers", str(parts), "--no-progress"],
                   check=True, capture_output=True)
    single = time.perf_counter() - started
    started = time.perf_counter()
    jobs = [subprocess.Popen([*CLI, "build-cache", source, work / "parts", "--part", f"{i}/{parts}", "--workers", "1",
                              "--no-progress"], stdout=subprocess.DEVNULL) for i in range(parts)]
    assert all(job.wait() == 0 for job in jobs)
    sharded = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([*CLI, "merge-cache", work / "merged", *sorted((work / "parts").iterdir()), "--no-progress"],
                   check=True, capture_output=True)
    return single, sharded, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-minutes", type=float, default=10.0, help="corpus size (default: 10)")
    parser.add_argument("--parts", type=int, default=2, help="parts side by side (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, medians reported (default: 3)")
    args = parser.parse_args(argv)
    files = corpus.build_corpus(args.corpus_minutes)
    source = Path(tempfile.mkdtemp(prefix="chirpid-sharded-src-"))
    (source / "corpus").symlink_to(files[0].parent)  # one class folder
    audio = corpus.audio_seconds(files)
    work = Path(tempfile.mkdtemp(prefix="chirpid-sharded-"))
    rounds = [one_round(source, work, args.parts) for _ in range(args.rounds)]
    single, sharded, merge = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(f"{audio / 60:.1f} min of audio, {args.parts} parts, medians of {args.rounds} rounds\n")
    print("| build | wall s | audio-s/s | vs one build |")
    print("|---|---:|---:|---:|")
    print(f"| one build, --workers {args.parts} | {single:.1f} | {audio / single:.0f} | 1.00x |")
    print(f"| {args.parts} parts side by side, --workers 1 each | {sharded:.1f} | {audio / sharded:.0f} | "
          f"{single / sharded:.2f}x |")
    print(f"| merge-cache | {merge:.1f} | | |")
    print(f"| parts + merge | {sharded + merge:.1f} | {audio / (sharded + merge):.0f} | {single / (sharded + merge):.2f}x |")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
