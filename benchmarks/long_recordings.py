"""Long recordings: peak memory and throughput of build-cache and predict by file length.

    python benchmarks/long_recordings.py                    # 10, 40 and 80 minutes
    python benchmarks/long_recordings.py --minutes 2 5      # quicker

Each file is real bird audio (the bundled recordings, concatenated; no long recording with
a clear licence can be had here) written as 44.1 kHz stereo OGG Vorbis, like a field
recorder's. Every measurement runs in a fresh process and reports that process's peak
resident memory (``ru_maxrss``) and wall time:

- ``load``: decoding the whole file at once (``audio.load``), what both commands did before;
- ``build-cache``: the chirpid recipe with its energy filter (two passes over the audio,
  the first spooled to a temporary file);
- ``predict``: every window scored by a BirdCNN (default width; untrained: the weights do
  not change the cost).

Peaks flat within 100 MB from 10 to 80 minutes is the goal; predict's throughput over
build's on the same audio is the other (>= 0.8). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ROOT = REPO / ".benchmarks" / "long"

PROBE = r"""
import json, resource, shutil, sys, time, tempfile
from pathlib import Path
kind, path, models = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
work = Path(tempfile.mkdtemp(prefix="chirpid-long-"))
import chirpid_io.cache, chirpid_io.predict, torch  # imports before the clock
started = time.perf_counter()
if kind == "load":
    from chirpid_io.audio import load
    seconds = len(load(path, 32000)) / 32000
elif kind == "build":
    (work / "in" / "field").mkdir(parents=True)
    (work / "in" / "field" / path.name).symlink_to(path)
    report = chirpid_io.cache.build_cache(work / "in", work / "cache", progress=False)
    seconds = report.audio_seconds
else:
    from chirpid_io.predict import PredictOptions, TorchScorer, list_sources, predict
    from chirpid_io.trainers import ModelRegistry
    entry = ModelRegistry(models).load("long")
    report = predict(TorchScorer(entry), list_sources([path]), work / "out", PredictOptions(), progress=False)
    seconds = report.audio_seconds
wall = time.perf_counter() - started
shutil.rmtree(work, ignore_errors=True)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall": wall,
                  "audio_seconds": seconds}))
"""


def make_file(minutes: float, root: Path) -> Path:
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(REPO / "tests"))
    path = root / f"field-{minutes:g}min.ogg"
    if path.exists():
        return path
    from test_streaming import assembled

    root.mkdir(parents=True, exist_ok=True)
    piece = assembled(600.0 if minutes >= 10 else minutes * 60)  # real clips, resampled and concatenated
    total = int(minutes * 60 * 44_100)
    tmp = path.with_suffix(".tmp.ogg")
    with sf.SoundFile(tmp, "w", 44_100, 2) as f:
        written = 0
        while written < total:
            block = piece[: min(len(piece), total - written)]
            for start in range(0, len(block), 1 << 16):
                f.write(np.ascontiguousarray(block[start : start + (1 << 16)]))
            written += len(block)
    tmp.rename(path)
    return path


def make_model(root: Path) -> Path:
    from chirpid_io.config import SpectrogramConfig
    from chirpid_io.trainers import BirdCNN, ModelRegistry

    models = root / "models"
    if not (models / "long").exists():
        ModelRegistry(models).save(BirdCNN(10), "long", config=SpectrogramConfig(), class_names=[f"c{i}" for i in range(10)],
                                   stats=False)
    return models


def measure(kind: str, path: Path, models: Path) -> dict:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PROBE, kind, str(path), str(models)], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 40, 80], help="file lengths (default: 10 40 80)")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help=f"where the files are made (default: {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    root = Path(args.root)
    files = {m: make_file(m, root) for m in args.minutes}
    models = make_model(root)
    rows = []
    for minutes, path in files.items():
        results = {kind: measure(kind, path, models) for kind in ("load", "build", "predict")}
        rows.append((minutes, results))
        print(f"{minutes:g} min: " + ", ".join(f"{k} {v['peak_mb']:.0f} MB in {v['wall']:.1f} s" for k, v in
                                                results.items()), flush=True)
    print()
    print(f"Machine: {_machine()}; {time.strftime('%Y-%m-%d')}")
    print()
    print("| file | load whole: peak MB | build-cache: peak MB | predict: peak MB | build audio-s/s | predict audio-s/s "
          "| predict / build |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for minutes, r in rows:
        build = r["build"]["audio_seconds"] / r["build"]["wall"]
        pred = r["predict"]["audio_seconds"] / r["predict"]["wall"]
        print(f"| {minutes:g} min | {r['load']['peak_mb']:.0f} | {r['build']['peak_mb']:.0f} | "
              f"{r['predict']['peak_mb']:.0f} | {build:.0f} | {pred:.0f} | {pred / build:.2f} |")
    for kind in ("build", "predict"):
        peaks = [r[kind]["peak_mb"] for _, r in rows]
        print(f"\n{kind}: peak spread {max(peaks) - min(peaks):.0f} MB over {', '.join(f'{m:g}' for m, _ in rows)} min")
    return 0


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"


if __name__ == "__main__":
    sys.exit(main())
