"""Compare storage options for the cache's ``specs`` on real windows; prints a Markdown table.

    python benchmarks/storage_options.py [--corpus-minutes 10] [--out table.md]

Windows: the generated corpus (real recordings end to end, with noise; see corpus.py)
plus the bundled samples, through the default recipe. For each option: bytes on disk
per window against the same windows as 8-bit PNGs (the old path, truncated), random-batch
read and write throughput (medians of 3), and the quantisation error in dB. The
defaults in ``chirpid_io.cache.StorageOptions`` were chosen from this table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

OPTIONS = [  # (label, dtype, StorageOptions kwargs)
    ("uint8, band+time delta + zstd-3, chunk 1 (default)", "uint8", {}),
    ("uint8, band delta + zstd-3", "uint8", {"delta": "band"}),
    ("uint8, zstd-3, no delta", "uint8", {"delta": "none"}),
    ("uint8, zstd-19, no delta", "uint8", {"delta": "none", "level": 19}),
    ("uint8, band+time delta + zstd-1", "uint8", {"level": 1}),
    ("uint8, band+time delta + zstd-9", "uint8", {"level": 9}),
    ("uint8, band+time delta + zstd-19", "uint8", {"level": 19}),
    ("uint8, blosc-lz4 shuffle", "uint8", {"delta": "none", "compressor": "blosc-lz4", "level": 5}),
    ("uint8, blosc-zstd shuffle", "uint8", {"delta": "none", "compressor": "blosc-zstd", "level": 5}),
    ("uint8, band+time delta + blosc-lz4", "uint8", {"compressor": "blosc-lz4", "level": 5}),
    ("uint8, band+time delta + zstd-3, chunk 4", "uint8", {"chunk_windows": 4}),
    ("uint8, band+time delta + zstd-3, chunk 16", "uint8", {"chunk_windows": 16}),
    ("uint8, band+time delta + zstd-3, shard 64", "uint8", {"shard_windows": 64}),
    ("uint8, band+time delta + zstd-3, shard 1024", "uint8", {"shard_windows": 1024}),
    ("float16, zstd-3", "float16", {}),
    ("float16, blosc-zstd bitshuffle", "float16", {"compressor": "blosc-zstd", "level": 5}),
]


def recipe_images(minutes: float) -> np.ndarray:
    from chirpid_io.audio import load, windows
    from chirpid_io.config import SpectrogramConfig
    from chirpid_io.kernels import mel_spectrogram

    config = SpectrogramConfig()
    padded = config.replace(pad_short=True)
    waves = [windows(load(p, 32_000), config).samples for p in corpus.build_corpus(minutes)]
    waves += [windows(load(p, 32_000), padded).samples for p in corpus.sample_files()]
    waves = np.concatenate(waves)
    return np.concatenate([mel_spectrogram(waves[i:i + 32], config).numpy() for i in range(0, len(waves), 32)])


def png_bytes(pixels: np.ndarray, work: Path) -> int:
    from PIL import Image

    work.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(work / f"{i}.png")
    return disk_bytes(work)


def png_read_rate(folder: Path, n: int) -> float:
    """Windows/s opening random batches of 42 PNG files with Pillow (median of 3)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    plan = [rng.choice(n, min(42, n), replace=False) for _ in range(20)]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for batch in plan:
            np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in batch])
        times.append(time.perf_counter() - start)
    return sum(map(len, plan)) / statistics.median(times)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def measure(images: np.ndarray, dtype: str, kwargs: dict, work: Path) -> dict:
    """Bytes on disk, write throughput (whole array) and random-batch read throughput
    (batches of 42 windows), the way a cache does both: direct shard files where
    ``ShardCodec`` handles the codecs, zarr otherwise."""
    import zarr

    from chirpid_io.cache import StorageOptions
    from chirpid_io.cache.codec import register
    from chirpid_io.cache.shards import ShardCodec
    from chirpid_io.kernels import to_storage

    register()
    options = StorageOptions(**kwargs)
    data = to_storage(images, dtype)
    rng = np.random.default_rng(0)
    plan = [np.sort(rng.choice(len(data), min(42, len(data)), replace=False)) for _ in range(20)]
    writes, reads = [], []
    for attempt in range(3):
        path = work / f"a{attempt}"
        start = time.perf_counter()
        array = zarr.create_array(path, shape=data.shape, dtype=dtype,
                                  chunks=(options.chunk_windows, *data.shape[1:]),
                                  shards=(options.shard_windows, *data.shape[1:]), **options.codecs(dtype))
        codec = ShardCodec.for_array(array)
        if codec is None:
            array[:] = data
        else:
            for first in range(0, len(data), options.shard_windows):
                codec.write_shard(first // options.shard_windows, data[first : first + options.shard_windows])
        writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        for batch in plan:
            back = np.empty((len(batch), *data.shape[1:]), dtype)
            if codec is None:
                back[:] = array.oindex[batch]
            else:
                codec.read_sorted(batch, back)
        reads.append(time.perf_counter() - start)
    assert np.array_equal(back, data[plan[-1]]) and np.array_equal(zarr.open_array(work / "a0")[:], data)
    size = disk_bytes(work / "a0")
    shutil.rmtree(work)
    error = np.abs(data.astype(np.float64) * (1 / 255 if dtype == "uint8" else 1) - images) * 80
    return {"bytes": size, "read": sum(map(len, plan)) / statistics.median(reads),
            "write": len(data) / statistics.median(writes), "max_db": error.max(), "mean_db": error.mean()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-minutes", type=float, default=10.0)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    images = recipe_images(args.corpus_minutes)
    work = Path(tempfile.mkdtemp())
    truncated = (images * 255).astype(np.uint8)  # the old path's pixels
    png = png_bytes(truncated, work / "png")
    png_read = png_read_rate(work / "png", len(images))
    png_error = np.abs(truncated / 255 - images) * 80
    lines = [
        f"{len(images)} windows (224 x 313) from {args.corpus_minutes:g} min of corpus + the samples; "
        f"PNG set: {png / len(images) / 1024:.1f} KiB per window on disk.",
        "",
        "| storage | bytes vs PNG | random-batch read windows/s | write windows/s | max / mean error (dB) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| old path: 8-bit PNG per window (truncated) | 1.000 | {png_read:.0f} | | "
        f"{png_error.max():.3f} / {png_error.mean():.3f} |",
    ]
    for label, dtype, kwargs in OPTIONS:
        r = measure(images, dtype, kwargs, work / "z")
        lines.append(f"| {label} | {r['bytes'] / png:.3f} | {r['read']:.0f} | {r['write']:.0f} | "
                     f"{r['max_db']:.3f} / {r['mean_db']:.3f} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
