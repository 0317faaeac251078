"""Per-mel-band mean and standard deviation, accumulated shard by shard.

Each shard contributes (count, mean, M2) computed in float64; shards are merged with
Chan et al.'s pairwise formula, which stays accurate where a running sum of squares
would cancel catastrophically.
"""

from __future__ import annotations

import numpy as np


def band_moments(images: np.ndarray, scale: float) -> dict:
    """(count, mean, M2) per band of (K, n_mels, frames) stored values times ``scale``."""
    n_mels = images.shape[1]
    count = images.shape[0] * images.shape[2]
    if images.dtype == np.uint8:
        # exact: a histogram per band gives integer sums of x and x^2 (below 2^53)
        hist = np.stack([np.bincount(images[:, band].ravel(), minlength=256) for band in range(n_mels)])
        levels = np.arange(256, dtype=np.float64)
        total, total_sq = hist @ levels, hist @ levels**2
        mean = total / count * scale
        m2 = (total_sq - total * total / count) * scale**2
    else:
        values = images.astype(np.float64) * scale
        mean = values.mean(axis=(0, 2))
        m2 = np.square(values - mean[None, :, None]).sum(axis=(0, 2))
    return {"count": int(count), "mean": mean.tolist(), "m2": m2.tolist()}


def merge(parts: list[dict], n_mels: int) -> dict:
    """Combine shard moments into {"mean": [...], "std": [...], "count": n} (population std)."""
    count = 0
    mean = np.zeros(n_mels)
    m2 = np.zeros(n_mels)
    for part in parts:
        n_b = part["count"]
        if n_b == 0:
            continue
        mean_b, m2_b = np.asarray(part["mean"]), np.asarray(part["m2"])
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    std = np.sqrt(m2 / count) if count else np.zeros(n_mels)
    return {"count": count, "mean": mean.tolist(), "std": std.tolist()}
