"""The cache -> training-batch path: dataset, chunk-aware sampler, splits, device loader.

    from chirpid_io.loaders import make_loader
    for x, y in make_loader(cache, 42):
        ...

Importing this package imports numpy only; torch and zarr load on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "make_loader": "chirpid_io.loaders.loader",
    "SpectrogramLoader": "chirpid_io.loaders.loader",
    "STD_FLOOR": "chirpid_io.loaders.loader",
    "SpectrogramDataset": "chirpid_io.loaders.dataset",
    "HostBatch": "chirpid_io.loaders.dataset",
    "ChunkShuffleSampler": "chirpid_io.loaders.samplers",
    "group_kfold": "chirpid_io.loaders.splits",
    "group_split": "chirpid_io.loaders.splits",
    "window_groups": "chirpid_io.loaders.splits",
    "Augment": "chirpid_io.loaders.augment",
    "WaveAugment": "chirpid_io.loaders.crops",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
