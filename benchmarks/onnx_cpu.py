"""CPU serving throughput: the torch path against the exported ONNX graph in onnxruntime.

    python benchmarks/onnx_cpu.py                      # both models, all cores and 1 thread
    python benchmarks/onnx_cpu.py --batch 16 --rounds 5   # the final numbers, on a quiet machine

For each model (BirdCNN at its default width, BirdCNNv5c), at the chirpid recipe (5 s
windows at 32 kHz, 224 x 313 images), with random weights (speed does not depend on
them): the torch serving path (the torch mel kernel, ``to_storage``, ``ModelInput``, the
model, softmax; ``serve_graph.torch_reference``) and ``OnnxModel.predict`` on the same
batch of real windows (the bundled recordings, zero-padded to 5 s). Each case runs once
to warm up, then ``--rounds`` times; the table gives the median. Throughput is audio
seconds per wall second; divided by the threads used it is hours of audio per CPU-hour
(audio-seconds per CPU-second). Prints a Markdown table.

Timings on a shared machine drift; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL_NAMES = ("birdcnn", "birdcnn_v5c")


def real_windows(config, count: int) -> np.ndarray:
    """``count`` 5 s windows of the bundled recordings (repeated when there are fewer)."""
    from chirpid_io import audio
    from chirpid_io.inputs import samples_dir

    cut = config.replace(pad_short=True, energy_threshold=None)
    found = []
    for path in sorted(samples_dir().rglob("*")):
        if path.suffix in (".wav", ".mp3", ".flac", ".ogg"):
            found.extend(audio.windows(audio.load(path, config.sample_rate), cut).samples)
    return np.stack([found[i % len(found)] for i in range(count)])


def timed(fn, rounds: int) -> float:
    """Median seconds of ``rounds`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def entry_for(name: str, n_classes: int, config, root: Path):
    """A registry entry of ``name`` with random weights and statistics, at ``config``."""
    import torch

    from chirpid_io.trainers.models import build_model
    from chirpid_io.trainers.registry import ModelRegistry

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = {"mean": rng.uniform(0.2, 0.6, config.n_mels), "std": rng.uniform(0.05, 0.3, config.n_mels)}
    registry = ModelRegistry(root)
    registry.save(build_model(name, n_classes), name, config=config,
                  class_names=[f"class_{i}" for i in range(n_classes)], stats=stats)
    return registry.load(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated architectures")
    parser.add_argument("--batch", type=int, default=8, help="windows per call (8 keeps the default run "
                        "under a minute on 2 cores; 16 for final numbers)")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per case (after one warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the multi-thread rows")
    parser.add_argument("--classes", type=int, default=33, help="classes (33: the old ChirpID network's)")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from chirpid_io.config import PRESETS
    from chirpid_io.export import OnnxModel, export_onnx
    from chirpid_io.serve_graph import torch_reference

    config = PRESETS["chirpid"]
    waves = real_windows(config, args.batch)
    audio_seconds = args.batch * config.window_seconds
    thread_counts = sorted({args.threads, 1}, reverse=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            entry = entry_for(name, args.classes, config, Path(tmp) / "registry")
            start = time.perf_counter()
            path = export_onnx(entry, Path(tmp) / f"{name}.onnx", embeddings=False, check=False)
            exported = time.perf_counter() - start
            print(f"{name}: exported in {exported:.1f} s ({path.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
            for threads in thread_counts:
                torch.set_num_threads(threads)
                served = OnnxModel(path, threads=threads)
                seconds = {
                    "torch": timed(lambda: torch_reference(entry, waves, embeddings=False), args.rounds),
                    "onnxruntime": timed(lambda: served.predict(waves, batch_size=args.batch), args.rounds),
                }
                for engine, value in seconds.items():
                    rate = audio_seconds / value
                    rows.append((name, engine, threads, value, rate, rate / threads, seconds["torch"] / value))
                    print(f"{name} {engine} {threads} thread(s): {value:.3f} s per batch", file=sys.stderr)

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; torch "
          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; chirpid recipe (5 s windows at 32 kHz, "
          f"224 x 313), batch {args.batch}, median of {args.rounds} rounds after one warm-up\n")
    print("| model | engine | threads | s per batch | audio-s/s | audio h per CPU-hour | vs torch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, engine, threads, value, rate, per_core, ratio in rows:
        print(f"| {name} | {engine} | {threads} | {value:.3f} | {rate:,.0f} | {per_core:,.0f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
