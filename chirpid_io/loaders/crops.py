"""Random crops of a waveform cache -> augmented waveforms -> mel -> model input.

The training recipe of the strongest bird-audio models: weak labels (the bird may call at
any second of a recording), so each epoch takes fresh crops anywhere in each recording,
augments the waveforms, and computes the features inside the step. The pieces:

- :class:`~chirpid_io.loaders.samplers.CropSampler` decides which crops an epoch holds
  (seeded by the epoch; resumable; split between ranks like the window sampler);
- :class:`CropDataset` reads a batch of crops (int16, every chunk read once) and, when
  background noise is on, a noise crop beside each;
- :class:`CropTransform` (on the loader's device, or in a CPU worker) applies
  :class:`WaveAugment`, then the build's own mel kernel (``kernels.mel_spectrogram``),
  the quantisation to the cache's storage dtype (``kernels.quantise``, as ``predict``
  does) and :class:`~chirpid_io.loaders.transform.ModelInput`, then SpecAugment
  (:class:`~chirpid_io.loaders.augment.Augment`).

So a crop at a window's start reaches the model as the spectrogram cache's image of the
same samples would (tests/test_waveforms.py), and a model trained on crops serves with
``predict`` unchanged.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..text import shown
from .augment import Augment, apply_masks, apply_mixup, draw_plan
from .dataset import HostBatch
from .transform import ModelInput

from ..audio import PCM_SCALE, to_int16


@dataclass(frozen=True)
class WaveAugment:
    """Waveform-domain augmentation of each crop, in this order:

    1. ``gain_db``: a random gain, uniform in [-gain_db, +gain_db] dB per crop. The recipe
       measures dB against each clip's own peak, so a gain alone leaves the image as it
       was; it changes how loud a crop is against what it is mixed with (2, 3).
    2. ``mixup_alpha``: mixup of waveforms, ``lam ~ Beta(alpha, alpha)`` per crop and a
       random partner from the same batch; the targets are mixed with the same weights
       (soft float targets, as the image mixup of :class:`Augment`).
    3. ``noise_p``: with this probability per crop, add a crop of background noise (a
       second waveform cache, or a folder of recordings: ``background=`` of
       :func:`~chirpid_io.loaders.make_loader`) scaled to a signal-to-noise ratio uniform
       in [``snr_low_db``, ``snr_high_db``] dB (mean power over the crop).

    All off by default. Draws depend only on (seed, epoch, rank, batch number).
    """

    gain_db: float = field(default=0.0, metadata={"help": "waveform gain up to +/- this many dB per crop (0: off)"})
    mixup_alpha: float = field(default=0.0, metadata={"help": "waveform mixup Beta(alpha, alpha), targets mixed "
                                                              "alike (0: off)"})
    noise_p: float = field(default=0.0, metadata={"help": "probability per crop of added background noise (0: off; "
                                                          "needs --background)"})
    snr_low_db: float = field(default=3.0, metadata={"help": "lowest signal-to-noise ratio of added noise, dB"})
    snr_high_db: float = field(default=30.0, metadata={"help": "highest signal-to-noise ratio of added noise, dB"})

    def __post_init__(self):
        if self.gain_db < 0 or self.mixup_alpha < 0:
            raise ConfigError(f"WaveAugment.gain_db and mixup_alpha must be >= 0, got {self.gain_db}, "
                              f"{self.mixup_alpha}")
        if not 0.0 <= self.noise_p <= 1.0:
            raise ConfigError(f"WaveAugment.noise_p must lie in [0, 1], got {self.noise_p}")
        if not self.snr_low_db <= self.snr_high_db:
            raise ConfigError(f"WaveAugment needs snr_low_db <= snr_high_db, got {self.snr_low_db} > "
                              f"{self.snr_high_db}")

    @property
    def active(self) -> bool:
        return bool(self.gain_db or self.mixup_alpha or self.noise_p)


@dataclass
class WavePlan:
    """One batch's waveform draws (numpy, per crop)."""

    gain: np.ndarray  # (B,) linear factor
    partner: np.ndarray  # (B,) int64 mixup partner (itself: no mixup)
    lam: np.ndarray  # (B,) weight of the crop itself
    noise: np.ndarray  # (B,) bool: noise added
    snr_db: np.ndarray  # (B,)


def draw_wave_plan(aug: WaveAugment, batch: int, rng: np.random.Generator) -> WavePlan:
    gain_db = rng.uniform(-aug.gain_db, aug.gain_db, batch) if aug.gain_db else np.zeros(batch)
    if aug.mixup_alpha:
        partner, lam = rng.permutation(batch), rng.beta(aug.mixup_alpha, aug.mixup_alpha, batch)
    else:
        partner, lam = np.arange(batch), np.ones(batch)
    noise = rng.random(batch) < aug.noise_p
    snr = rng.uniform(aug.snr_low_db, aug.snr_high_db, batch)
    return WavePlan(10.0 ** (gain_db / 20.0), partner, lam, noise, snr)


def mix_noise(waves, noise, plan: WavePlan):
    """``waves + k * noise`` per crop where ``plan.noise``, ``k`` setting the mean-power
    ratio of the two to ``plan.snr_db``; a silent crop or silent noise is left alone."""
    import torch

    signal_power = waves.square().mean(dim=1)
    noise_power = noise.square().mean(dim=1)
    target = signal_power / torch.as_tensor(10.0 ** (plan.snr_db / 10.0), dtype=waves.dtype).to(waves.device)
    k = torch.where(noise_power > 0, (target / noise_power.clamp_min(1e-30)).sqrt(), torch.zeros_like(noise_power))
    k = k * torch.as_tensor(plan.noise, dtype=waves.dtype).to(waves.device)
    return waves + k[:, None] * noise


def apply_waves(waves, noise, y, plan: WavePlan, n_classes: int):
    """Steps 1-3 of :class:`WaveAugment` on float (B, n) waves; -> (waves, targets)."""
    import torch

    waves = waves * torch.as_tensor(plan.gain, dtype=waves.dtype).to(waves.device)[:, None]
    if not np.array_equal(plan.partner, np.arange(len(plan.partner))):
        partner = torch.as_tensor(plan.partner).to(waves.device)
        lam = torch.as_tensor(plan.lam, dtype=waves.dtype).to(waves.device)
        waves = lam[:, None] * waves + (1 - lam)[:, None] * waves[partner]
        target = y.to(waves.dtype) if y.ndim == 2 else torch.nn.functional.one_hot(y, n_classes).to(waves.dtype)
        y = lam[:, None] * target + (1 - lam)[:, None] * target[partner]
    if noise is not None and plan.noise.any():
        waves = mix_noise(waves, noise, plan)
    return waves, y


# -- reading -----------------------------------------------------------------------------
class CropDataset:
    """Crops of a waveform cache: ``read_batch(items)`` for items ``(recording, first
    sample)`` or ``(recording, first sample, noise segment, noise first sample)`` gives a
    :class:`HostBatch` of int16 ``(B, crop)`` (with noise: ``(B, 2, crop)``, the noise crop
    second) and each crop's recording targets.

    ``recordings``: indices into ``cache.wave_spans()`` (a split), default all. Safe under
    fork and spawn as :class:`~chirpid_io.loaders.SpectrogramDataset` is.
    """

    residuals = False

    def __init__(self, cache, crop: int, recordings=None, *, targets: str = "single",
                 secondary_weight: float = 1.0, noise: "NoiseBank | None" = None):
        self.cache, self.crop, self.targets, self.secondary_weight = cache, int(crop), targets, secondary_weight
        first_row, samples = cache.wave_spans()
        chosen = np.arange(len(first_row)) if recordings is None else np.asarray(recordings, dtype=np.int64)
        self.first_row, self.samples = first_row[chosen], samples[chosen]
        self.noise = noise
        self._pid = os.getpid()

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.crop,) if self.noise is None else (2, self.crop)

    item_dtype = "int16"

    def _local_cache(self):
        if self._pid != os.getpid():
            self.cache = copy.copy(self.cache)
            self._pid = os.getpid()
        return self.cache

    def __getstate__(self):
        return {**self.__dict__, "_pid": None}

    def __len__(self) -> int:
        return len(self.first_row)

    def labels(self, recordings) -> np.ndarray:
        rows = self.first_row[np.asarray(recordings, dtype=np.int64)]
        cache = self._local_cache()
        return cache.multi_hot(rows, self.secondary_weight) if self.targets == "multilabel" else cache.labels[rows]

    def read_batch(self, items, out: np.ndarray | None = None) -> HostBatch:
        items = np.asarray(items, dtype=np.int64).reshape(len(items), -1)
        recordings = items[:, 0]
        out = np.empty((len(items), *self.item_shape), np.int16) if out is None else out
        crops = out if self.noise is None else out[:, 0]
        read_spans(self._local_cache(), self.first_row[recordings], self.samples[recordings], items[:, 1],
                   self.crop, crops)
        if self.noise is not None:
            self.noise.read(items[:, 2], items[:, 3], self.crop, out[:, 1])
        return HostBatch(out, self.labels(recordings))


def read_spans(cache, first_row, samples, starts, crop: int, out: np.ndarray) -> None:
    """Into ``out`` (B, crop) int16: samples ``starts .. starts + crop`` of the recordings
    whose rows begin at ``first_row`` and hold ``samples`` samples, zero past their end.
    The rows all crops touch are read in one ``cache.read`` (each chunk once); a recording's
    rows are consecutive, so each crop is one slice of them."""
    width = cache.chunk_samples
    first = first_row + starts // width
    last = first_row + (np.minimum(starts + crop, samples) - 1) // width
    counts = last - first + 1
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.repeat(first, counts) + within  # first..last of every crop
    unique, where = np.unique(rows, return_inverse=True)
    flat = cache.read(unique).reshape(-1)
    begin = where[np.cumsum(counts) - counts] * width + starts % width
    for i in range(len(out)):
        n = int(min(crop, samples[i] - starts[i]))
        out[i, :n] = flat[begin[i] : begin[i] + n]
        out[i, n:] = 0


class NoiseBank:
    """Background noise to mix into crops: segments of int16 audio at the recipe's rate,
    from a waveform cache (``from_cache``, any size: crops are read from it) or a folder
    of recordings (``from_folder``, decoded once and held in memory, so at most
    ``max_seconds`` of it). ``lengths`` gives each segment's length in samples; a segment
    shorter than a crop is repeated to fill it."""

    def __init__(self, lengths, reader, source: str):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._reader = reader
        self.source = source
        if not len(self.lengths):
            raise ConfigError(f"background noise {source}: holds no audio")

    @classmethod
    def from_cache(cls, cache, sample_rate: int) -> "NoiseBank":
        from ..cache import Cache, open_cache

        cache = cache if isinstance(cache, Cache) else open_cache(cache)
        if getattr(cache, "kind", "spectrogram") != "waveform":
            raise ConfigError(f"background noise {shown(cache.path)}: a spectrogram cache; noise is mixed into "
                              "waveforms, so give a waveform cache (build-cache --store waveform) or a folder")
        if cache.config.sample_rate != sample_rate:
            raise ConfigError(f"background noise {shown(cache.path)} is at {cache.config.sample_rate} Hz, the "
                              f"training cache at {sample_rate} Hz; build it with the same recipe")
        first_row, samples = cache.wave_spans()
        return cls(samples, _CacheNoise(cache, first_row, samples), shown(cache.path))

    @classmethod
    def from_folder(cls, folder, sample_rate: int, *, max_seconds: float = 3600.0) -> "NoiseBank":
        from .. import audio
        from ..errors import AudioDecodeError
        from ..predict.sources import list_sources

        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"background noise {shown(folder)}: not a folder (give a folder of recordings or a "
                              "waveform cache)")
        segments, total = [], 0
        for source in list_sources([folder]):
            try:
                wave = audio.load(source.path, sample_rate)
            except AudioDecodeError:
                continue  # an unreadable noise file is not worth stopping training for
            total += len(wave)
            if total > max_seconds * sample_rate:
                raise ConfigError(f"background noise {shown(folder)}: more than {max_seconds:g} s of audio to hold "
                                  "in memory. Fix: build a waveform cache of it (build-cache --store waveform) "
                                  "and give that")
            if len(wave):
                segments.append(to_int16(wave))
        if not segments:
            raise ConfigError(f"background noise {shown(folder)}: no readable recordings in it")
        return cls([len(s) for s in segments], _MemoryNoise(segments), shown(folder))

    def read(self, segments, starts, crop: int, out: np.ndarray) -> None:
        self._reader(np.asarray(segments, dtype=np.int64), np.asarray(starts, dtype=np.int64), crop, out)


class _MemoryNoise:
    def __init__(self, segments):
        self.segments = segments

    def __call__(self, segments, starts, crop, out):
        for i, (s, start) in enumerate(zip(segments.tolist(), starts.tolist())):
            wave = self.segments[s]
            if len(wave) >= crop:
                out[i] = wave[start : start + crop]
            else:
                out[i] = np.resize(wave, crop)


class _CacheNoise:
    def __init__(self, cache, first_row, samples):
        self.cache, self.first_row, self.samples = cache, first_row, samples
        self._pid = os.getpid()

    def __getstate__(self):
        return {**self.__dict__, "_pid": None}

    def __call__(self, segments, starts, crop, out):
        if self._pid != os.getpid():
            self.cache, self._pid = copy.copy(self.cache), os.getpid()
        read_spans(self.cache, self.first_row[segments], self.samples[segments], starts, crop, out)
        short = self.samples[segments] < crop
        for i in np.flatnonzero(short):  # repeat a short segment to fill the crop
            out[i] = np.resize(out[i, : self.samples[segments[i]]], crop)


# -- the transform -----------------------------------------------------------------------
class CropTransform:
    """int16 crops (B, crop) or (B, 2, crop) with noise -> model input (B, 1, n_mels,
    frames) and targets, on whatever device they are on; picklable (CPU workers run it)."""

    def __init__(self, cache, config, stats, wave_augment: WaveAugment | None, augment: Augment | None,
                 seed: int, rank: int, backend: str = "torch"):
        """``config``: the cache's recipe with the crop's ``window_seconds``."""
        self.config = config
        self.frames = config.frames
        self.storage_dtype = config.storage_dtype
        self.n_classes = len(cache.class_names)
        self.wave_augment = wave_augment if wave_augment is not None and wave_augment.active else None
        if augment is not None and augment.gain_db:
            raise ConfigError("Augment.gain_db shifts stored images; on crops use WaveAugment(gain_db=...) "
                              "(--wave-gain-db)")
        self.augment, self.seed, self.rank, self.backend = augment, seed, rank, backend
        from ..kernels import value_scale

        #: stored values -> model input, the same object the spectrogram loader and
        #: predict use (train = serve)
        self.model_input = ModelInput(stats, value_scale(config.storage_dtype), config.n_mels)

    def output_shape(self, n: int) -> tuple[int, ...]:
        return (n, 1, self.config.n_mels, self.frames)

    def features(self, waves):
        """float waves (B, n) on a device -> quantised stored values (B, n_mels, frames),
        float32: the build's kernel, then its storage rounding."""
        from ..kernels import mel_spectrogram, quantise

        return quantise(mel_spectrogram(waves, self.config, backend=self.backend, device=waves.device),
                        self.storage_dtype)

    def __call__(self, x, y, epoch: int, batch_number: int, out=None):
        import torch

        waves = x[:, 0] if x.ndim == 3 else x
        noise = x[:, 1].to(torch.float32).mul_(PCM_SCALE) if x.ndim == 3 else None
        waves = waves.to(torch.float32).mul_(PCM_SCALE)
        if self.wave_augment is not None:
            rng = np.random.default_rng([self.seed, epoch, self.rank, batch_number, 0x77617665])
            plan = draw_wave_plan(self.wave_augment, len(y), rng)
            waves, y = apply_waves(waves, noise, y, plan, self.n_classes)
        x = self.model_input(self.features(waves), out=out)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, self.rank, batch_number])
            plan = draw_plan(self.augment, len(y), x.shape[2], x.shape[3], rng)
            if self.augment.p and (self.augment.freq_mask or self.augment.time_mask):
                x = apply_masks(x, plan, self.augment.mask_value)
            if self.augment.mixup_alpha:
                x, y = apply_mixup(x, y, plan, self.n_classes)
        return x, y


__all__ = ["WaveAugment", "CropDataset", "CropTransform", "NoiseBank", "read_spans"]
