"""verify_cache: read every chunk (each carries a CRC32C) and check the tables agree."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .reader import Cache, open_cache


@dataclass
class VerifyReport:
    path: str
    chunks_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(path_or_cache) -> VerifyReport:
    """Decode every chunk of ``specs`` and compare labels and tables; never raises for damage."""
    cache = path_or_cache if isinstance(path_or_cache, Cache) else open_cache(path_or_cache)
    report = VerifyReport(str(cache.path))
    n, step = len(cache), cache.chunk_windows
    if cache.specs.shape[0] != n:
        report.problems.append(f"specs holds {cache.specs.shape[0]} windows, the attributes say {n}")
    for start in range(0, n, cache.shard_windows):  # a shard at a time; chunk by chunk on damage
        stop = min(start + cache.shard_windows, n)
        try:
            cache.read(np.arange(start, stop))
            report.chunks_checked += -(-(stop - start) // step)
            continue
        except Exception:  # noqa: BLE001 - narrowed down below
            pass
        for low in range(start, stop, step):
            high = min(low + step, stop)
            try:
                cache.read(np.arange(low, high))
            except Exception as exc:  # a checksum or decompression failure names the chunk
                report.problems.append(
                    f"specs chunk {low // step} (windows {low}-{high - 1}, shard file "
                    f"specs/c/{start // cache.shard_windows}/0/0) is damaged: {type(exc).__name__}: {exc}"
                )
            report.chunks_checked += 1
    try:
        labels = cache.labels
        windows = cache.windows
        if windows.num_rows != n:
            report.problems.append(f"windows.parquet has {windows.num_rows} rows for {n} windows")
        elif not np.array_equal(windows.column("label").to_numpy(), labels):
            report.problems.append("labels array and windows.parquet disagree")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(cache.class_names)):
            report.problems.append("labels outside the class list")
        recs = cache.recordings
        if sum(recs.column("n_windows").to_pylist()) != n:
            report.problems.append("recordings.parquet window counts do not add up to the cache size")
    except Exception as exc:
        report.problems.append(f"tables unreadable: {type(exc).__name__}: {exc}")
    return report
