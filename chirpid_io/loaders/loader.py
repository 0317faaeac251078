"""make_loader: cache -> ready (x, y) batches on the device, as a drop-in for a DataLoader.

The stages, each visible below:

1. **order**: :class:`ChunkShuffleSampler` picks a chunk-friendly order for the epoch;
   ``torch.utils.data.BatchSampler`` cuts it into batches.
2. **read**: :meth:`SpectrogramDataset.read_batch` reads a whole batch, each chunk
   decompressed once (stored uint8/float16), ``prefetch`` batches ahead: in a background
   thread (``num_workers=0``) or in DataLoader worker processes that open the cache lazily.
   For a GPU it leaves the stored differences in (``cache.delta_axes``) for step 4.
3. **upload**: on CUDA the batch is copied into one of two reused pinned host buffers and
   sent to the GPU with ``non_blocking=True`` on a side stream, one batch ahead, so the
   copy overlaps the previous batch's training step. On the CPU the same code runs
   without pinning or streams.
4. **transform** (on the device, float32): on a GPU, the stored differences summed up
   (cumulative sums over frames, then bands); stored values x ``cache.value_scale`` (the
   recipe's [0, 1] image), random gain, per-band normalisation
   ``(x - mean[band]) / max(std[band], STD_FLOOR)``, SpecAugment masks, mixup.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..cache import Cache
from ..errors import ConfigError
from .augment import Augment, apply_gain, apply_masks, apply_mixup, draw_plan
from .dataset import BatchReader, HostBatch, SpectrogramDataset, collate
from .samplers import ChunkShuffleSampler

#: Smallest standard deviation divided by, in [0, 1] image units: a band that is constant
#: in the statistics (e.g. above the highest frequency in the data) is not blown up.
STD_FLOOR = 1e-3


def make_loader(
    cache: Cache | str | os.PathLike,
    batch_size: int,
    *,
    indices=None,
    shuffle: bool = True,
    device=None,
    num_workers: int = 0,
    prefetch: int = 2,
    normalize: bool | Mapping = True,
    augment: Augment | None = None,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> SpectrogramLoader:
    """A loader over ``cache`` (or its path) yielding ``(x, y)`` on ``device``.

    ``x``: float32 (B, 1, n_mels, frames); ``y``: int64 (B,) labels, or float32
    (B, n_classes) soft labels when ``augment`` has mixup on. ``indices``: cache window
    indices to load (a split), default all. ``device``: default CUDA when available.

    ``normalize``: True uses the cache's per-band statistics (``cache.stats``, over the
    whole cache); a mapping ``{"mean": (n_mels,), "std": (n_mels,)}`` in [0, 1] units uses
    those (e.g. a training fold's); False leaves the recipe's [0, 1] values
    (``stored * cache.value_scale``). ``augment``: an :class:`Augment`, or None for none.

    ``shuffle=False`` (validation) keeps cache order and never drops data, so
    ``drop_last=True`` is refused with it. ``num_workers=0`` reads in one background
    thread of this process; ``num_workers`` > 0 in that many persistent DataLoader worker
    processes. ``prefetch`` is the number of batches read ahead (at least one per
    worker). ``seed`` fixes the order and the augmentation for each epoch;
    ``rank``/``world_size`` give each distributed process an equal share (see
    :class:`ChunkShuffleSampler`: when ``world_size`` does not divide the windows, a few
    are served twice, as with torch's ``DistributedSampler``).

    ``len(loader)`` is the number of batches. The epoch advances by one after each full
    pass, or is set with ``set_epoch``; ``state_dict``/``load_state_dict`` resume
    mid-epoch.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if drop_last and not shuffle:
        raise ConfigError(
            "drop_last=True with shuffle=False would silently leave validation windows out "
            "(the old loader's bug); use drop_last=False for evaluation"
        )
    device = _resolve_device(device)
    # on a GPU the stored differences are summed up there, not on the CPU
    dataset = SpectrogramDataset(cache, indices, residuals=device.type == "cuda")
    sampler = ChunkShuffleSampler(
        dataset, dataset.cache.chunk_windows, shuffle=shuffle, seed=seed, rank=rank,
        world_size=world_size, drop_last=drop_last,
    )
    if drop_last and sampler.per_rank < batch_size:
        raise ConfigError(
            f"a loader of {sampler.per_rank} windows{' per rank' if world_size > 1 else ''} with batch_size "
            f"{batch_size} and drop_last=True gives no batch at all. Fix: a smaller batch size, or drop_last=False")
    return SpectrogramLoader(
        dataset, sampler, batch_size, device=device, num_workers=num_workers, prefetch=prefetch,
        normalize=normalize, augment=augment, seed=seed, drop_last=drop_last,
    )


class SpectrogramLoader:
    """Iterate for ``(x, y)`` batches; see :func:`make_loader`, which builds it."""

    def __init__(self, dataset: SpectrogramDataset, sampler: ChunkShuffleSampler, batch_size: int, *,
                 device=None, num_workers: int = 0, prefetch: int = 2, normalize: bool | Mapping = True,
                 augment: Augment | None = None, seed: int = 0, drop_last: bool = False):
        import torch
        from torch.utils.data import BatchSampler

        if num_workers < 0 or prefetch < 1:
            raise ConfigError(f"need num_workers >= 0 and prefetch >= 1, got {num_workers}, {prefetch}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        self.device = _resolve_device(device)
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.augment = augment
        self.seed = seed
        cache = dataset.cache
        config = cache.config
        self.value_scale = cache.value_scale
        self.n_classes = len(cache.class_names)
        self._stats = _band_stats(normalize, cache)
        if config.scaling == "minmax":  # gain: dB -> [0, 1] units, image range
            self._gain = (1.0 / (config.top_db or 80.0), 0.0, 1.0)
        else:
            self._gain = (1.0, -(config.top_db or float("inf")), 0.0)
        self._consumed = 0  # items of the current epoch handed to the caller
        self._dataloader = None
        self._on_device: dict = {}  # normalisation constants on the device (see _affine)
        self._cuda = self.device.type == "cuda"
        if self._cuda:
            self._stream = torch.cuda.Stream(self.device)
            self._pinned: list = [None, None]  # two host buffers, used in turn
            self._slot = 0

    # -- epochs and resuming -----------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (order and augmentation); a full pass also advances it."""
        self.sampler.set_epoch(epoch)
        self._consumed = 0

    def state_dict(self) -> dict:
        """Where this loader stands: epoch and items already handed out in it."""
        return self.sampler.state_dict(consumed=self._consumed)

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (of a loader with the same data, seed and batch size)."""
        self.sampler.load_state_dict(state)
        self._consumed = int(state["consumed"])

    def __len__(self) -> int:
        return len(self.batches)

    # -- iteration ---------------------------------------------------------------------
    def __iter__(self):
        # an iteration starts where load_state_dict put the sampler (else at 0), also
        # after an earlier pass was abandoned half-way
        epoch, consumed = self.sampler.epoch, self.sampler.per_rank - len(self.sampler)
        self._consumed = consumed
        pending = None  # one batch ahead: its upload overlaps the caller's step
        for batch in self._host_batches():
            ready = self._upload(batch, epoch, consumed // self.batch_size)
            consumed += len(batch.labels)
            if pending is not None:
                yield self._hand_over(*pending)
            pending = (ready, consumed)
        if pending is not None:
            yield self._hand_over(*pending)
        self.set_epoch(epoch + 1)

    def _hand_over(self, ready, consumed):
        import torch

        x, y, done = ready
        if self._cuda:  # the caller's stream waits for this batch's copy and transform only
            main = torch.cuda.current_stream(self.device)
            main.wait_event(done)
            x.record_stream(main)
            y.record_stream(main)
        self._consumed = consumed
        return x, y

    def _host_batches(self):
        """Stored batches (HostBatch), read by a thread here or by worker processes."""
        if self.num_workers == 0:
            yield from _read_ahead(self.dataset, self.batches, self.prefetch)
            return
        if self._dataloader is None:
            from torch.utils.data import DataLoader

            self._dataloader = DataLoader(
                BatchReader(self.dataset), sampler=self.batches, batch_size=None, collate_fn=collate,
                num_workers=self.num_workers, persistent_workers=True,
                # at least torch's default of 2 per worker: with 1, a worker waits for its
                # batch to be taken before reading the next (2 workers here: 1,770 against
                # 2,020 windows/s with 4)
                prefetch_factor=max(2, -(-self.prefetch // self.num_workers)),
            )
        yield from self._dataloader

    def _upload(self, batch: HostBatch, epoch: int, batch_number: int):
        """Start moving one stored batch to the device and transforming it there."""
        import torch

        specs = torch.as_tensor(batch.specs)
        labels = torch.as_tensor(batch.labels)
        if not self._cuda:
            x, y = self._transform(specs, labels, epoch, batch_number)
            return x, y, None
        with torch.cuda.stream(self._stream):
            host_x, host_y, copied = self._pinned_slot(specs)
            copied.synchronize()  # the last copy out of this buffer has finished
            n = len(labels)
            host_x[:n].copy_(specs)
            host_y[:n].copy_(labels)
            x = host_x[:n].to(self.device, non_blocking=True)
            y = host_y[:n].to(self.device, non_blocking=True)
            copied.record(self._stream)
            x, y = self._transform(x, y, epoch, batch_number)
            done = torch.cuda.Event()
            done.record(self._stream)
        return x, y, done

    def _pinned_slot(self, specs):
        import torch

        slot, self._slot = self._slot, 1 - self._slot
        held = self._pinned[slot]
        if held is None or held[0].dtype != specs.dtype or held[0].shape[1:] != specs.shape[1:]:
            shape = (max(self.batch_size, len(specs)), *specs.shape[1:])
            held = (torch.empty(shape, dtype=specs.dtype, pin_memory=True),
                    torch.empty(shape[0], dtype=torch.int64, pin_memory=True),
                    torch.cuda.Event())
            held[2].record(self._stream)
            self._pinned[slot] = held
        return held

    def _transform(self, specs, labels, epoch: int, batch_number: int):
        """Stored values on the device -> float32 (B, 1, n_mels, frames), labels."""
        import torch

        x = specs.to(self.device)
        if self.dataset.residuals:  # stored differences: wrapping cumulative sums, last first
            for axis in reversed(self.dataset.cache.delta_axes):
                x = torch.cumsum(x, dim=axis, dtype=torch.int32).bitwise_and_(255)
        x = x.unsqueeze(1).to(torch.float32)
        y = labels.to(self.device)
        plan = None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, self.sampler.rank, batch_number])
            plan = draw_plan(self.augment, len(y), x.shape[2], x.shape[3], rng)
        if plan is not None and self.augment.gain_db:  # gain acts on the [0, 1] image
            x = apply_gain(x.mul_(self.value_scale), plan, *self._gain)
            if self._stats is not None:
                scale, shift = self._affine(1.0)
                x = x.mul_(scale).add_(shift)
        elif self._stats is not None:  # stored * (scale / std) - mean / std
            scale, shift = self._affine(self.value_scale)
            # in place, as two plain passes: a fresh 12 MB output per batch cost more in
            # page faults than the arithmetic, and addcmul was slower than mul and add
            # (CPU, batch of 42: 2.1 against 3.4 ms); no fused multiply-add, so CPU and
            # CUDA round alike
            x = x.mul_(scale).add_(shift)
        else:
            x = x.mul_(self.value_scale)
        if plan is not None:
            if self.augment.p and (self.augment.freq_mask or self.augment.time_mask):
                x = apply_masks(x, plan, self.augment.mask_value)
            if self.augment.mixup_alpha:
                x, y = apply_mixup(x, y, plan, self.n_classes)
        return x, y

    def _affine(self, value_scale: float):
        """Per-band (scale, shift), float32 (1, 1, n_mels, 1) on the device, with
        ``x * scale + shift == (x * value_scale - mean) / max(std, STD_FLOOR)``."""
        import torch

        key = (value_scale, str(self.device))
        if key not in self._on_device:
            mean, std = self._stats
            inv_std = 1.0 / np.maximum(std, STD_FLOOR)  # float64, rounded once below
            self._on_device[key] = tuple(
                torch.as_tensor(v, dtype=torch.float32).view(1, 1, -1, 1).to(self.device)
                for v in (value_scale * inv_std, -mean * inv_std)
            )
        return self._on_device[key]


def _read_ahead(dataset: SpectrogramDataset, batches, depth: int):
    """Yield ``dataset.read_batch(b)`` for each batch ``b``, read by one background thread
    that keeps up to ``depth`` batches ready, so reading overlaps the caller's training step
    (Zarr decompresses in C without holding the GIL). One thread keeps the order; an error
    in it is raised here; leaving the loop early stops it."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for positions in batches:
                if stop.is_set():
                    return
                put(dataset.read_batch(positions))
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failed(exc))
        put(end)

    thread = threading.Thread(target=work, name="chirpid-io-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _band_stats(normalize, cache: Cache):
    """(mean, std) float64 (n_mels,) arrays, or None for no normalisation."""
    if normalize is False or normalize is None:
        return None
    stats = cache.stats if normalize is True else normalize
    try:
        mean = np.asarray(stats["mean"], dtype=np.float64).reshape(-1)
        std = np.asarray(stats["std"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError) as exc:
        raise ConfigError("normalize must be True, False or a mapping with 'mean' and 'std' "
                          f"arrays of n_mels values ({exc})") from None
    n_mels = cache.config.n_mels
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise ConfigError(f"normalize: 'mean' and 'std' need {n_mels} values (one per mel band), got "
                          f"{mean.size} and {std.size}")
    return mean, std


def _resolve_device(device):
    import torch

    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
