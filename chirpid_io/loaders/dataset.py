"""SpectrogramDataset: a map-style dataset over a cache that reads whole batches at once."""

from __future__ import annotations

import copy
import math
import os
from typing import NamedTuple

import numpy as np

from ..cache import Cache, open_cache


class HostBatch(NamedTuple):
    """One batch as stored: ``specs`` (B, n_mels, frames) uint8 or float16, ``labels`` (B,)
    int64 or (B, n_classes) float32 multi-hot.

    numpy arrays from :meth:`SpectrogramDataset.__getitems__`; torch tensors once collated
    by :func:`collate` (so DataLoader workers hand them over in shared memory).
    """

    specs: object
    labels: object


class SpectrogramDataset:
    """Windows of a cache, position ``p`` being cache window ``indices[p]``.

    ``cache``: an open :class:`~chirpid_io.cache.Cache` or its path. ``indices``: cache
    window indices (a split), default all windows in cache order. Items are the stored
    values (uint8 or float16; multiply by ``cache.value_scale`` for the recipe's [0, 1]
    image) and the int label (``targets="multilabel"``: a float32 multi-hot of the
    window's label set, ``secondary_weight`` for its secondary classes). ``__getitems__`` reads a whole batch in one
    :meth:`Cache.read <chirpid_io.cache.Cache.read>`, so a plain
    ``torch.utils.data.DataLoader(dataset, batch_size=B)`` works with its default collate;
    ``read_batch`` gives the batch as one array. ``residuals=True`` returns the stored differences (``cache.delta_axes``; see
    :meth:`Cache.read <chirpid_io.cache.Cache.read>`) for a consumer that undoes them on a
    GPU.

    Safe under fork and spawn: the cache is reopened lazily in every process that reads
    (the Cache pickles without its open arrays; after a fork the process id differs and a
    fresh view is made), so no file handle or IO thread crosses a process boundary.
    """

    def __init__(self, cache: Cache | str | os.PathLike, indices=None, *, residuals: bool = False,
                 targets: str = "single", secondary_weight: float = 1.0):
        self.cache = cache if isinstance(cache, Cache) else open_cache(cache)
        self.residuals = residuals
        self.targets = targets
        self.secondary_weight = secondary_weight
        n = len(self.cache)
        if indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
                raise IndexError(f"{self.cache.path}: window indices must lie in 0..{n - 1}")
        self._pid = os.getpid()

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one item as ``read_batch`` gives it (as stored, with ``residuals``)."""
        return tuple(self.cache.stored_shape if self.residuals else self.cache.config.shape)

    @property
    def item_dtype(self) -> str:
        return self.cache.config.storage_dtype

    def _local_cache(self) -> Cache:
        if self._pid != os.getpid():  # forked or unpickled: drop the parent's open arrays
            self.cache = copy.copy(self.cache)  # Cache.__getstate__ leaves the arrays out
            self._pid = os.getpid()
        return self.cache

    def __getstate__(self):
        return {**self.__dict__, "_pid": None}  # the receiver reopens

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[np.ndarray, int]:
        """Window ``position``: its stored values (n_mels, frames) and its label."""
        batch = self.read_batch([position])
        return batch.specs[0], int(batch.labels[0])

    def __getitems__(self, positions) -> list[tuple[np.ndarray, int]]:
        """The items at ``positions`` from one batch read (torch's DataLoader calls this for
        a batch, then its default collate stacks the items)."""
        batch = self.read_batch(positions)
        return list(zip(batch.specs, batch.labels.tolist()))

    def read_batch(self, positions, out: np.ndarray | None = None) -> HostBatch:
        """The batch at dataset ``positions``, in that order, as one array (each chunk read
        once): what :func:`make_loader` reads; into ``out`` when given."""
        windows = self.indices[np.asarray(positions, dtype=np.int64)]
        cache = self._local_cache()
        labels = cache.multi_hot(windows, self.secondary_weight) if self.targets == "multilabel" else cache.labels[windows]
        return HostBatch(cache.read(windows, residuals=self.residuals, out=out), labels)


class BatchReader:
    """A dataset whose items are whole batches, for DataLoader workers (``batch_size=None``,
    a sampler of ``(epoch, batch number, positions)``): each batch is read straight into
    tensors in shared memory, allocated once by the worker that fills them, so handing it
    over copies nothing. With ``transform`` (a CPU loader's ``BatchTransform``) the worker
    also turns it into model input, also in shared memory."""

    def __init__(self, dataset: SpectrogramDataset, transform=None):
        self.dataset = dataset
        self.transform = transform

    def __getitem__(self, item):
        import torch

        epoch, number, positions = item
        specs = shared_empty((len(positions), *self.dataset.item_shape), getattr(torch, self.dataset.item_dtype))
        batch = self.dataset.read_batch(positions, out=specs.numpy())
        labels = torch.from_numpy(np.ascontiguousarray(batch.labels)).share_memory_()
        if self.transform is None:
            return HostBatch(specs, labels)
        x = shared_empty(self.transform.output_shape(len(positions)), torch.float32)
        return self.transform(specs, labels, epoch, number, out=x)

    def __len__(self) -> int:
        return len(self.dataset)


def shared_empty(shape, dtype):
    """An uninitialised CPU tensor allocated straight in shared memory, as DataLoader's own
    collate allocates in workers (``share_memory_()`` would allocate, then copy: 12 MB per
    float32 batch of 42 chirpid windows)."""
    import torch

    numel = math.prod(shape)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).new(storage).view(*shape)


def collate(batch: HostBatch) -> HostBatch:
    """numpy -> torch without copying (workers then pass the batch through shared memory)."""
    import torch

    return HostBatch(torch.from_numpy(np.ascontiguousarray(batch.specs)), torch.from_numpy(batch.labels))
