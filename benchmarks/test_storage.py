"""Stage "storage": reading stored windows back, and what they cost on disk.

Old path: one 8-bit PNG per window (Pillow open + decode per item). chirpid-io: the
compressed Zarr cache (``Cache.read``, one coalesced read per batch). Both hold the same
windows of the same corpus. Two cases: "random" batches of 42 windows drawn uniformly
(the worst case for a chunked store: nearly every window in its own chunk), and
"chunked" batches in the order ``ChunkShuffleSampler`` draws them (42 windows from a few
chunks).
With one window per chunk (the default) the two differ little. Bytes on disk (file
blocks, as ``du`` counts them) go in ``extra_info``.
"""

from __future__ import annotations

import numpy as np
import pytest

from inputs import build_both

BATCH = 42
BATCHES = 8  # per timed round
UNIT = "windows/s"


def disk_bytes(root) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def stored(corpus_paths, tmp_path_factory):
    pytest.importorskip("PIL")
    old, new = build_both(corpus_paths, tmp_path_factory.mktemp("storage"))
    from chirpid_io.cache import open_cache
    from chirpid_io.legacy import PNG_DIR, WINDOWS_CSV

    import csv

    with open(old / WINDOWS_CSV) as f:
        names = [row["filename"] for row in csv.DictReader(f)]
    cache = open_cache(new)
    assert len(names) > 0 and len(cache) > 0
    return {"png_paths": [old / PNG_DIR / n for n in names], "cache": cache,
            "old_bytes": disk_bytes(old), "new_bytes": disk_bytes(new)}


def batches(n: int, chunk: int, kind: str, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return [rng.choice(n, size=min(BATCH, n), replace=False) for _ in range(BATCHES)]
    from chirpid_io.loaders import ChunkShuffleSampler  # the order make_loader reads in

    order = ChunkShuffleSampler(n, chunk, seed=seed).order(0)
    return [order[i * BATCH : (i + 1) * BATCH] for i in range(min(BATCHES, n // BATCH or 1))]


def read_png(paths, batch) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(paths[i])) for i in batch])


@pytest.mark.parametrize("side", ["old", "new"])
@pytest.mark.parametrize("kind", ["random", "chunked"])
def test_storage_read(measure, benchmark, stored, side, kind):
    cache = stored["cache"]
    n = min(len(stored["png_paths"]), len(cache))
    plan = batches(n, cache.chunk_windows, kind)
    if side == "old":
        paths = stored["png_paths"]
        fn, label = (lambda: [read_png(paths, b) for b in plan]), "Pillow: one PNG file per window"
    else:
        fn, label = (lambda: [cache.read(b) for b in plan]), "Cache.read: coalesced Zarr chunks"
    benchmark.extra_info.update(bytes_on_disk=stored[f"{side}_bytes"], windows=n)
    measure(fn, stage="storage", side=side, items=sum(len(b) for b in plan), unit=UNIT,
            label=label, case=kind)
