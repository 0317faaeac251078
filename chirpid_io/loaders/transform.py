"""Stored values -> model input: the one place it happens, for training and for serving.

Training reads stored windows from a cache; prediction computes fresh images and quantises
them to the cache's storage dtype (``kernels.to_storage``). Both then go through
:class:`ModelInput`: float32, times the storage's value scale, minus the band mean, over
the band's std (floored at ``STD_FLOOR``), as one multiply and one add with per-band
constants rounded to float32 once. The same constants and the same two operations in the
same order on every device (no fused multiply-add), so a window fed by the loader and the
same window fed by ``predict`` (or the exported ONNX graph) are the identical tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError

#: Smallest standard deviation divided by, in [0, 1] image units: a band that is constant
#: in the statistics (e.g. above the highest frequency in the data) is not blown up.
STD_FLOOR = 1e-3


class ModelInput:
    """``(x * scale + shift)`` per mel band, float32 (B, 1, n_mels, frames).

    ``stats``: ``{"mean": (n_mels,), "std": (n_mels,)}`` in [0, 1] units, or None for no
    normalisation (then ``x * value_scale``). ``value_scale``: stored value -> recipe value
    (1/255 for uint8, 1 for float16).
    """

    def __init__(self, stats: Mapping | None, value_scale: float, n_mels: int):
        self.value_scale = float(value_scale)
        self.n_mels = n_mels
        if stats is None:
            self.scale = np.full(n_mels, self.value_scale, dtype=np.float32)
            self.shift = np.zeros(n_mels, dtype=np.float32)
            self.stats = None
        else:
            mean, std = band_stats(stats, n_mels)
            inv_std = 1.0 / np.maximum(std, STD_FLOOR)  # float64, rounded once below
            self.scale = (self.value_scale * inv_std).astype(np.float32)
            self.shift = (-mean * inv_std).astype(np.float32)
            self.stats = {"mean": mean, "std": std}
        self._on: dict = {}

    def constants(self, device):
        """(scale, shift) as float32 (1, 1, n_mels, 1) tensors on ``device`` (cached)."""
        import torch

        key = str(device)
        if key not in self._on:
            self._on[key] = tuple(torch.from_numpy(v).view(1, 1, -1, 1).to(device) for v in (self.scale, self.shift))
        return self._on[key]

    def __call__(self, stored, out=None):
        """Stored values (B, n_mels, frames), any device -> model input (B, 1, n_mels, frames)
        (into ``out``, a float32 tensor of that shape, when given: e.g. in shared memory).

        In place on the float copy: a fresh 12 MB output per batch cost more in page faults
        than the arithmetic, and addcmul was slower than mul then add."""
        x = self.scaled(stored, None, out)
        scale, shift = self.constants(x.device)
        return x.mul_(scale).add_(shift)

    def scaled(self, stored, factor, out=None):
        """Stored values as float32 (B, 1, n_mels, frames), times ``factor`` when given."""
        import torch

        stored = torch.as_tensor(stored).unsqueeze(1)
        x = stored.to(torch.float32) if out is None else out.copy_(stored)
        return x if factor is None or factor == 1.0 else x.mul_(factor)


def band_stats(stats: Mapping, n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float64 (n_mels,) from a ``{"mean", "std"}`` mapping, checked."""
    try:
        mean = np.asarray(stats["mean"], dtype=np.float64).reshape(-1)
        std = np.asarray(stats["std"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError("normalisation statistics must be a mapping with 'mean' and 'std' arrays of n_mels "
                          f"values ({exc})") from None
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise ConfigError(f"normalisation: 'mean' and 'std' need {n_mels} values (one per mel band), got "
                          f"{mean.size} and {std.size}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ConfigError("normalisation statistics hold NaN or Inf")
    return mean, std
