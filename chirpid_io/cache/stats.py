"""Per-mel-band statistics from exact integer sums.

Every stored value is an integer multiple of a unit: 1/255 for uint8 (the stored level),
2**-24 for float16 (the smallest float16 step). So the count, the sum and the sum of
squares of a band's values, counted in units, are integers, and chirpid-io keeps them as
Python integers (``BandSums``): adding the sums of two sets of windows gives exactly the
sums of their union, whatever the order or grouping. That is what makes appends, resumed
builds and merged parts give the very same statistics as one build of everything, and
what lets ``verify`` recompute them from the data and compare exactly.

The mean and the (population) standard deviation follow from the integers in one rounding
each: ``mean = s / n * unit`` and ``std = sqrt(n * q - s**2) / n * unit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Windows summed at once: small enough that float64 partial sums stay exact integers
#: (uint8) and the temporaries stay in cache.
_CHUNK = 16


def unit(dtype: str) -> float:
    """The step that stored values are integer multiples of."""
    return 1 / 255 if dtype == "uint8" else 2.0**-24


@dataclass(frozen=True)
class BandSums:
    """Count of values per band and the per-band sum and sum of squares, in units."""

    count: int
    sum: tuple[int, ...]
    sum_sq: tuple[int, ...]

    @classmethod
    def zero(cls, n_mels: int) -> "BandSums":
        return cls(0, (0,) * n_mels, (0,) * n_mels)

    def __add__(self, other: "BandSums") -> "BandSums":
        return BandSums(self.count + other.count, tuple(a + b for a, b in zip(self.sum, other.sum)),
                        tuple(a + b for a, b in zip(self.sum_sq, other.sum_sq)))

    def to_dict(self) -> dict:
        return {"count": self.count, "sum": list(self.sum), "sum_sq": list(self.sum_sq)}

    @classmethod
    def from_dict(cls, data: dict) -> "BandSums":
        return cls(int(data["count"]), tuple(int(v) for v in data["sum"]), tuple(int(v) for v in data["sum_sq"]))

    def stats(self, dtype: str) -> dict:
        """``{"count", "mean", "std"}`` in the recipe's units (what the loader normalises by)."""
        step = unit(dtype)
        n = self.count
        if n == 0:
            zeros = [0.0] * len(self.sum)
            return {"count": 0, "mean": zeros, "std": list(zeros)}
        mean = [s / n * step for s in self.sum]
        std = [math.sqrt(max(n * q - s * s, 0)) / n * step for s, q in zip(self.sum, self.sum_sq)]
        return {"count": n, "mean": mean, "std": std}


def band_sums(images: np.ndarray) -> BandSums:
    """Exact sums of (K, n_mels, frames) stored values (uint8 or float16), per band."""
    images = np.asarray(images)
    k, n_mels, frames = images.shape
    total = np.zeros(n_mels, dtype=object), np.zeros(n_mels, dtype=object)
    for start in range(0, k, _CHUNK):
        part = images[start : start + _CHUNK]
        if images.dtype == np.uint8:
            # float64 holds these sums exactly: at most 16 * 313 * 255**2 < 2**53 per band
            values = part.astype(np.float64)
            s = values.sum(axis=(0, 2))
            q = np.einsum("kmt,kmt->m", values, values)
            total[0][:] += s.astype(np.int64).astype(object)
            total[1][:] += q.astype(np.int64).astype(object)
        else:
            s, q = _float16_sums(part)
            total[0][:] += s
            total[1][:] += q
    return BandSums(k * frames, tuple(int(v) for v in total[0]), tuple(int(v) for v in total[1]))


def _float16_sums(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact sums of float16 values in units of 2**-24, as object arrays of Python ints.

    A value in units is an integer q with |q| < 2**40; q**2 would overflow int64, so q is
    split as a * 2**20 + b (0 <= b < 2**20) and q**2 = a**2 * 2**40 + 2ab * 2**20 + b**2,
    each partial sum of which fits int64 for a chunk of windows."""
    if not np.isfinite(part).all():
        raise ValueError("float16 images hold NaN or Inf")
    q = (part.astype(np.float64) * 2.0**24).astype(np.int64)
    a, b = q >> 20, q & ((1 << 20) - 1)
    s = q.sum(axis=(0, 2)).astype(object)
    aa = (a * a).sum(axis=(0, 2)).astype(object)
    ab = (a * b).sum(axis=(0, 2)).astype(object)
    bb = (b * b).sum(axis=(0, 2)).astype(object)
    return s, aa * (1 << 40) + ab * (1 << 21) + bb
