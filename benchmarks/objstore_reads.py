"""Random-batch reads of a cache on a local S3 server against the same cache on local disk;
prints a Markdown table.

    python benchmarks/objstore_reads.py [--windows 2048] [--rounds 5] [--batches 10] [--out table.md]

The cache: the bundled recordings through the default (chirpid) recipe with 1 s windows,
their real windows repeated to ``--windows`` so that batches spread over several shard
objects of the default 256 windows, written once to a folder and once to
``s3://bench/cache`` on moto's server (``tests/s3server.py``, its own process on
127.0.0.1, request signing off). Each row: windows/s reading ``--batches`` batches of 42
windows through ``Cache.read`` (random: any 42 windows; consecutive: 42 windows in a row, a
chunk-aware sampler's order), the median of ``--rounds``, and this process's CPU per
window. The local disk is read from the page cache (warm). With s3fs installed
(``pip install s3fs``), two more rows fetch the same random batches' bytes (each shard's
tail, then each window's chunk) through obstore (the ObjectStore's parallel fetch) and
through fsspec/s3fs (``cat_ranges``), without decoding: the comparison that chose obstore.

moto is a Python server sharing this machine's cores with the client, so its numbers are
the server's ceiling here, not an object store's: read the client CPU per window, and
the ratios of rows measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

BATCH = 42


def make_caches(folder: Path, url: str, n_windows: int) -> None:
    """The same cache in ``folder`` and at ``url``: real windows, repeated."""
    from chirpid_io.cache import build_cache, open_cache
    from chirpid_io.cache.writer import CacheWriter
    from chirpid_io.config import SpectrogramConfig
    from chirpid_io.manifest import samples_dir

    config = SpectrogramConfig(window_seconds=1.0, hop_seconds=0.5)
    seed = folder / "seed"
    build_cache(samples_dir(), seed, config, workers=0, progress=False)
    real = open_cache(seed)
    images = real.read(np.arange(len(real)))
    picks = np.resize(np.arange(len(real)), n_windows)
    for where in (folder / "cache", url):
        with CacheWriter(where, config) as writer:
            for start in range(0, n_windows, 64):
                chosen = picks[start : start + 64]
                writer.add_recording({"path": f"rec{start}.wav", "class_name": real.class_names[real.labels[chosen[0]]],
                                      "status": "ok"}, images[chosen], np.arange(len(chosen), dtype=float),
                                     np.ones(len(chosen)))
            writer.finish()


def batches(n_windows: int, count: int, order: str, rng) -> list[np.ndarray]:
    if order == "random":
        return [rng.choice(n_windows, BATCH, replace=False) for _ in range(count)]
    return [np.arange(s, s + BATCH) for s in rng.integers(0, n_windows - BATCH, count)]


def measure(read, plan: list[list[np.ndarray]]) -> tuple[float, float]:
    """(median windows/s over the rounds, median CPU ms per window) of ``read`` per batch."""
    read(plan[0][0])  # connections and caches warm
    rates, cpus = [], []
    for round_batches in plan:
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in round_batches:
            read(batch)
        n = BATCH * len(round_batches)
        rates.append(n / (time.perf_counter() - wall))
        cpus.append((time.process_time() - cpu) / n * 1e3)
    return statistics.median(rates), statistics.median(cpus)


def raw_fetchers(url: str, endpoint: str, env: dict):
    """Byte-fetch functions for one random batch: obstore (ObjectStore) and fsspec/s3fs."""
    from chirpid_io.cache import open_cache

    cache = open_cache(url)
    store, codec = cache.store, cache._shards
    keys = lambda batch: [codec.shard_key(int(s)) for s in np.unique(batch // codec.shard_windows)]  # noqa: E731

    def with_obstore(batch):
        handles = store.open_many(keys(batch))
        for w in np.sort(batch):
            handle = handles[codec.shard_key(int(w // codec.shard_windows))]
            index = codec._read_index(handle, handle.key, 0)
            offset, nbytes = (int(v) for v in index[int(w % codec.shard_windows) // codec.chunk_windows])
            handle.pread(offset, nbytes)  # one request each, in order: the baseline without prefetch

    def with_obstore_parallel(batch):
        handles = store.open_many(keys(batch))
        wanted = {}
        for w in np.sort(batch):
            handle = handles[codec.shard_key(int(w // codec.shard_windows))]
            index = codec._read_index(handle, handle.key, 0)
            chunk = int(w % codec.shard_windows) // codec.chunk_windows
            wanted.setdefault(handle, []).append(tuple(int(v) for v in index[chunk]))
        store.prefetch(wanted)

    try:
        import s3fs
    except ImportError:
        return {"obstore, one range at a time": with_obstore, "obstore, parallel (ObjectStore)": with_obstore_parallel}
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"])
    bucket_path = url.split("://", 1)[1]

    def with_fsspec(batch):
        paths = [f"{bucket_path}/{k}" for k in keys(batch)]
        tails = dict(zip(paths, fs.cat_ranges(paths, [-(64 << 10)] * len(paths), [None] * len(paths))))
        starts, ends, where = [], [], []
        for w in np.sort(batch):
            path = f"{bucket_path}/{codec.shard_key(int(w // codec.shard_windows))}"
            tail = tails[path]
            size = codec.chunks_per_shard * 16
            index = np.frombuffer(tail[-size - 4 : -4], "<u8").reshape(-1, 2)
            offset, nbytes = (int(v) for v in index[int(w % codec.shard_windows) // codec.chunk_windows])
            starts.append(offset), ends.append(offset + nbytes), where.append(path)
        fs.cat_ranges(where, starts, ends)

    return {"obstore, one range at a time": with_obstore, "obstore, parallel (ObjectStore)": with_obstore_parallel,
            "fsspec/s3fs, cat_ranges": with_fsspec}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2048, help="windows in the cache (default: 2048, 8 shards)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown (default: 5)")
    parser.add_argument("--batches", type=int, default=10, help="batches of 42 per round (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches (default: 0)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    from s3server import LocalS3

    from chirpid_io.cache import open_cache

    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalS3(bucket="bench", auth=False) as s3:
        os.environ.update(s3.env)
        url = "s3://bench/cache"
        make_caches(Path(tmp), url, args.windows)
        caches = {"local disk (page cache)": open_cache(Path(tmp) / "cache"), "S3, moto on 127.0.0.1": open_cache(url)}
        for order in ("random", "consecutive"):
            rng = np.random.default_rng(args.seed)
            plan = [batches(args.windows, args.batches, order, rng) for _ in range(args.rounds)]
            base = None
            for name, cache in caches.items():
                rate, cpu = measure(cache.read, plan)
                base = base or rate
                rows.append((f"{name}, Cache.read", order, rate, cpu, rate / base))
                print(f"{rows[-1][0]}, {order}: {rate:,.0f} windows/s", file=sys.stderr, flush=True)
        rng = np.random.default_rng(args.seed)
        plan = [batches(args.windows, args.batches, "random", rng) for _ in range(args.rounds)]
        first = None
        for name, fetch in raw_fetchers(url, s3.endpoint, s3.env).items():
            rate, cpu = measure(fetch, plan)
            first = first or rate
            rows.append((f"fetch only: {name}", "random", rate, cpu, rate / first))
            print(f"{rows[-1][0]}: {rate:,.0f} windows/s", file=sys.stderr, flush=True)
    lines = ["| read | batches of 42 | windows/s | client CPU ms/window | ratio |", "|---|---|---:|---:|---:|"]
    lines += [f"| {name} | {order} | {rate:,.0f} | {cpu:.2f} | {ratio:.2f}x |" for name, order, rate, cpu, ratio in rows]
    lines.append(f"\n(median of {args.rounds} rounds of {args.batches} batches, {args.windows} windows; ratios: "
                 "Cache.read rows against local disk in the same order, fetch rows against the first fetch row)")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
