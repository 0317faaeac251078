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
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..cache import Cache
from ..errors import ConfigError
from .augment import Augment, apply_gain, apply_masks, apply_mixup, draw_plan
from .crops import WaveAugment
from .dataset import BatchReader, HostBatch, SpectrogramDataset
from .samplers import ChunkShuffleSampler
from .transform import STD_FLOOR, ModelInput  # noqa: F401 - STD_FLOOR is part of this module's API

TARGETS = ("single", "multilabel")  # the names of TrainConfig.task


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
    targets: str = "single",
    secondary_weight: float = 1.0,
    split: str = "contiguous",
    crop_seconds: float | None = None,
    crop_weighting: str = "recording",
    wave_augment: WaveAugment | None = None,
    background=None,
    backend: str = "torch",
) -> SpectrogramLoader:
    """A loader over ``cache`` (or its path) yielding ``(x, y)`` on ``device``.

    ``x``: float32 (B, 1, n_mels, frames); ``y``: int64 (B,) labels, or float32
    (B, n_classes) soft labels when ``augment`` has mixup on. ``targets="multilabel"``:
    ``y`` is float32 (B, n_classes) multi-hot from each window's label set, 1 for its
    primary class and ``secondary_weight`` (default 1.0: plain multi-hot, as BirdCLEF
    scores a secondary species as present) for its other classes; mixup mixes them.
    ``indices``: cache window indices to load (a split), default all. ``device``: default
    CUDA when available.

    ``normalize``: True uses the cache's per-band statistics (``cache.stats``, over the
    whole cache); a mapping ``{"mean": (n_mels,), "std": (n_mels,)}`` in [0, 1] units uses
    those (e.g. a training fold's); False leaves the recipe's [0, 1] values
    (``stored * cache.value_scale``). ``augment``: an :class:`Augment`, or None for none.

    ``shuffle=False`` (validation) keeps cache order and never drops data, so
    ``drop_last=True`` is refused with it. ``num_workers=0`` reads in one background
    thread of this process; ``num_workers`` > 0 in that many persistent DataLoader worker
    processes. ``prefetch`` is the number of batches read ahead (at least one per
    worker). ``seed`` fixes the order and the augmentation for each epoch;
    ``rank``/``world_size`` give each distributed process a share of every epoch (see
    :class:`ChunkShuffleSampler`): ``split="contiguous"`` equal contiguous parts (a few
    windows twice when ``world_size`` does not divide them, as with torch's
    ``DistributedSampler``); ``split="batches"``: ``batch_size`` is the global batch and
    each rank yields its ``batch_size // world_size`` windows of every one (distributed
    training); ``split="disjoint"``: no window twice (distributed evaluation).

    ``len(loader)`` is the number of batches. The epoch advances by one after each full
    pass, or is set with ``set_epoch``; ``state_dict``/``load_state_dict`` resume
    mid-epoch.

    Over a waveform cache (``build-cache --store waveform``) the items are random crops of
    ``crop_seconds`` (default: the recipe's window) anywhere in each recording, drawn
    afresh every epoch (:class:`~chirpid_io.loaders.samplers.CropSampler`;
    ``crop_weighting`` "recording": one crop per recording and epoch, "duration": crops in
    proportion to each recording's length); ``shuffle=False`` (validation) gives instead
    the fixed windows ``predict`` cuts, every ``hop_seconds`` of the recipe. Each batch is
    augmented as waveforms (``wave_augment``, a :class:`~chirpid_io.loaders.crops.
    WaveAugment`; ``background``: a waveform cache, its path or a folder of recordings to
    draw noise from), turned into mel images on the loader's device by the build's own
    kernel (``backend``), quantised as the cache would store them, normalised with the
    cache's statistics, then given ``augment``'s SpecAugment. ``indices`` are row
    indices (whole recordings are kept: a split by group never cuts one).
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if drop_last and not shuffle:
        raise ConfigError(
            "drop_last=True with shuffle=False would silently leave validation windows out "
            "(the old loader's bug); use drop_last=False for evaluation"
        )
    if targets not in TARGETS:
        raise ConfigError(f"targets must be one of {', '.join(TARGETS)}, got {targets!r}")
    if not 0.0 <= secondary_weight <= 1.0:
        raise ConfigError(f"secondary_weight must lie in [0, 1], got {secondary_weight}")
    device = _resolve_device(device)
    from ..cache import Cache, open_cache

    cache = cache if isinstance(cache, Cache) else open_cache(cache)
    if getattr(cache, "kind", "spectrogram") == "waveform":
        return _crop_loader(cache, batch_size, indices=indices, shuffle=shuffle, device=device,
                            num_workers=num_workers, prefetch=prefetch, normalize=normalize, augment=augment,
                            seed=seed, drop_last=drop_last, rank=rank, world_size=world_size, targets=targets,
                            secondary_weight=secondary_weight, split=split, crop_seconds=crop_seconds,
                            crop_weighting=crop_weighting, wave_augment=wave_augment, background=background,
                            backend=backend)
    if crop_seconds is not None or wave_augment is not None or background is not None:
        raise ConfigError(f"{cache.path}: a spectrogram cache holds fixed windows; crops, waveform augmentation "
                          "and background noise need a waveform cache. Fix: build one with "
                          "`chirpid-io build-cache SOURCE OUT --store waveform`")
    # on a GPU the stored differences are summed up there, not on the CPU
    dataset = SpectrogramDataset(cache, indices, residuals=device.type == "cuda", targets=targets,
                                 secondary_weight=secondary_weight)
    sampler = ChunkShuffleSampler(
        dataset, dataset.cache.chunk_windows, shuffle=shuffle, seed=seed, rank=rank,
        world_size=world_size, drop_last=drop_last, split=split, batch_size=batch_size,
    )
    if split == "batches":
        batch_size //= world_size  # this rank's share of each global batch
    _refuse_no_batch(sampler, batch_size, drop_last, world_size, "windows")
    return SpectrogramLoader(
        dataset, sampler, batch_size, device=device, num_workers=num_workers, prefetch=prefetch,
        normalize=normalize, augment=augment, seed=seed, drop_last=drop_last,
    )


def _refuse_no_batch(sampler, batch_size: int, drop_last: bool, world_size: int, items: str) -> None:
    if drop_last and sampler.per_rank < batch_size:
        raise ConfigError(
            f"a loader of {sampler.per_rank} {items}{' per rank' if world_size > 1 else ''} with batch_size "
            f"{batch_size} and drop_last=True gives no batch at all. Fix: a smaller batch size, or drop_last=False")


def _crop_loader(cache, batch_size, *, indices, shuffle, device, num_workers, prefetch, normalize, augment, seed,
                 drop_last, rank, world_size, targets, secondary_weight, split, crop_seconds, crop_weighting,
                 wave_augment, background, backend) -> "SpectrogramLoader":
    from .crops import CropDataset, CropTransform, NoiseBank
    from .samplers import CropSampler

    config = cache.config
    seconds = config.window_seconds if crop_seconds is None else float(crop_seconds)
    if not seconds > 0:
        raise ConfigError(f"crop_seconds must be positive, got {crop_seconds}")
    crop_config = config.replace(window_seconds=seconds)
    recordings = cache.recordings_of_rows(indices)
    noise = None
    if wave_augment is not None and wave_augment.noise_p:
        if background is None:
            raise ConfigError("WaveAugment.noise_p is set but no background noise was given (background=, "
                              "--background): a waveform cache or a folder of recordings")
        if isinstance(background, NoiseBank):
            noise = background
        elif isinstance(background, Cache) or (Path(background) / "zarr.json").is_file():
            noise = NoiseBank.from_cache(background, config.sample_rate)
        else:
            noise = NoiseBank.from_folder(background, config.sample_rate)
    dataset = CropDataset(cache, crop_config.n_samples, recordings, targets=targets,
                          secondary_weight=secondary_weight, noise=noise)
    sampler = CropSampler(
        dataset.samples, crop_config.n_samples, weighting=crop_weighting if shuffle else "windows",
        hop=config.hop_samples, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
        drop_last=drop_last, split=split, batch_size=batch_size,
        noise_lengths=None if noise is None else noise.lengths)
    if split == "batches":
        batch_size //= world_size
    _refuse_no_batch(sampler, batch_size, drop_last, world_size, "crops per epoch")
    stats = None if normalize is False or normalize is None else cache.stats if normalize is True else normalize
    transform = CropTransform(cache, crop_config, stats, wave_augment if shuffle else None,
                              augment if shuffle else None, seed, sampler.rank, backend=backend)
    return SpectrogramLoader(dataset, sampler, batch_size, device=device, num_workers=num_workers,
                             prefetch=prefetch, seed=seed, drop_last=drop_last, transform=transform)


class SpectrogramLoader:
    """Iterate for ``(x, y)`` batches; see :func:`make_loader`, which builds it."""

    def __init__(self, dataset: SpectrogramDataset, sampler: ChunkShuffleSampler, batch_size: int, *,
                 device=None, num_workers: int = 0, prefetch: int = 2, normalize: bool | Mapping = True,
                 augment: Augment | None = None, seed: int = 0, drop_last: bool = False, transform=None):
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
        if transform is None:
            stats = None if normalize is False or normalize is None else cache.stats if normalize is True else normalize
            transform = BatchTransform(cache, stats, augment, seed, sampler.rank, residuals=dataset.residuals)
        #: stored batch -> (model input, targets): a BatchTransform, or a CropTransform
        self.transform = transform
        #: stored values -> model input, the same object inference uses (train = serve)
        self.model_input = self.transform.model_input
        self._consumed = 0  # items of the current epoch handed to the caller
        self._dataloader = None
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
        for batch in self._host_batches(epoch, consumed // self.batch_size):
            if isinstance(batch, tuple) and not isinstance(batch, HostBatch):  # transformed by a worker
                ready = (*batch, None)
                consumed += len(batch[1])
            else:
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

    def _host_batches(self, epoch: int, first_batch: int):
        """Stored batches (HostBatch), read by a thread here or by worker processes; on
        the CPU, workers also transform: then the items are ready (x, y) tuples, in shared
        memory from the start (no copy to hand them over)."""
        if self.num_workers == 0:
            yield from _read_ahead(self.dataset, self.batches, self.prefetch)
            return
        if self._dataloader is None:
            from torch.utils.data import DataLoader

            reader = BatchReader(self.dataset, None if self._cuda else self.transform)
            self._dataloader = DataLoader(
                reader, sampler=_Numbered(self), batch_size=None, collate_fn=_as_is,
                num_workers=self.num_workers, persistent_workers=True,
                # a cache on an object store: obstore's I/O runtime does not survive fork()
                multiprocessing_context=None if getattr(self.dataset.cache.store, "fork_safe", True) else "spawn",
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
            host_x, host_y, copied = self._pinned_slot(specs, labels)
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

    def _pinned_slot(self, specs, labels):
        import torch

        slot, self._slot = self._slot, 1 - self._slot
        held = self._pinned[slot]
        if held is None or any(h.dtype != t.dtype or h.shape[1:] != t.shape[1:]
                               for h, t in ((held[0], specs), (held[1], labels))):
            rows = max(self.batch_size, len(specs))
            # labels: int64 (B,), or float32 (B, n_classes) multi-hot targets
            held = (torch.empty((rows, *specs.shape[1:]), dtype=specs.dtype, pin_memory=True),
                    torch.empty((rows, *labels.shape[1:]), dtype=labels.dtype, pin_memory=True),
                    torch.cuda.Event())
            held[2].record(self._stream)
            self._pinned[slot] = held
        return held

    def _transform(self, specs, labels, epoch: int, batch_number: int):
        return self.transform(specs.to(self.device), labels.to(self.device), epoch, batch_number)


class BatchTransform:
    """Stored values -> float32 model input (B, 1, n_mels, frames) and targets, with the
    augmentation of one batch; the same wherever it runs (the caller's device, or a CPU
    worker process, which writes straight into shared memory). Picklable."""

    def __init__(self, cache, stats, augment: Augment | None, seed: int, rank: int, residuals: bool = False):
        config = cache.config
        self.value_scale = cache.value_scale
        self.n_classes = len(cache.class_names)
        self.augment, self.seed, self.rank = augment, seed, rank
        #: batches come as stored differences (read with residuals=True): undone here
        self.undo = cache.undo_residuals if residuals else None
        self.frames = config.shape[1]
        #: stored values -> model input, the same object inference uses (train = serve)
        self.model_input = ModelInput(stats, cache.value_scale, config.n_mels)
        self._unscaled = ModelInput(stats, 1.0, config.n_mels)  # after gain, which acts on recipe values
        if config.scaling == "minmax":  # gain: dB -> [0, 1] units, image range
            self._gain = (1.0 / (config.top_db or 80.0), 0.0, 1.0)
        else:
            self._gain = (1.0, -(config.top_db or float("inf")), 0.0)

    def output_shape(self, n: int) -> tuple[int, ...]:
        return (n, 1, self.model_input.n_mels, self.frames)

    def __call__(self, x, y, epoch: int, batch_number: int, out=None):
        """``x`` stored values and ``y`` targets, on one device -> (input, targets);
        ``out``: a float32 tensor of the input's shape to write into (shared memory)."""
        import torch

        if self.undo is not None:  # stored differences: wrapping cumulative sums (Cache.undo_residuals)
            x = self.undo(x)
        plan = None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, self.rank, batch_number])
            plan = draw_plan(self.augment, len(y), x.shape[1], x.shape[2], rng)
        if plan is not None and self.augment.gain_db:  # gain acts on the recipe's values
            x = apply_gain(self.model_input.scaled(x, 1.0, out).mul_(self.value_scale), plan, *self._gain)
            scale, shift = self._unscaled.constants(x.device)
            x = x.mul_(scale).add_(shift)
        else:
            x = self.model_input(x, out=out)
        if plan is not None:
            if self.augment.p and (self.augment.freq_mask or self.augment.time_mask):
                x = apply_masks(x, plan, self.augment.mask_value)
            if self.augment.mixup_alpha:
                x, y = apply_mixup(x, y, plan, self.n_classes)
        return x, y


class _Numbered:
    """The loader's batches as (epoch, batch number, positions), for worker processes that
    transform (the augmentation of a batch depends on its number)."""

    def __init__(self, loader: "SpectrogramLoader"):
        # weakly: a strong reference would make loader -> DataLoader -> sampler -> loader a
        # cycle, so a dropped loader would keep its workers until the garbage collector ran,
        # and the next loader's workers, forked meanwhile, would inherit them and complain
        # at exit ("can only test a child process")
        self._loader = weakref.ref(loader)

    @property
    def loader(self) -> "SpectrogramLoader":
        return self._loader()

    def __iter__(self):
        sampler = self.loader.sampler
        epoch, first = sampler.epoch, (sampler.per_rank - len(sampler)) // self.loader.batch_size
        for k, positions in enumerate(self.loader.batches):
            yield epoch, first + k, positions

    def __len__(self) -> int:
        return len(self.loader.batches)


def _as_is(item):
    return item


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


def _resolve_device(device):
    import torch

    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
