"""Mel front-ends: one function, four interchangeable backends that compute the same numbers.

``mel_spectrogram(waves, config, backend=..., device=...)`` takes a (B, n_samples) float32
batch (numpy or torch) and returns (B, n_mels, frames) float32 with the recipe's scaling:

- ``"torch"``: ``torch.stft`` + a mel matmul, on CPU or CUDA (the default).
- ``"torchaudio"``: torchaudio's ``MelSpectrogram`` configured to the same recipe.
- ``"dali"``: an NVIDIA DALI pipeline (CPU operators without a GPU, GPU operators with one).
- ``"reference"``: float64 numpy, the definition of correct (returns float64).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..config import SpectrogramConfig
from ..errors import BackendUnavailableError, ConfigError



@dataclass(frozen=True)
class Backend:
    """A mel backend: ``gpu_checked`` is True only when a recorded run on a GPU checked its
    CUDA path (parity with the float64 reference and batch invariance, README "On a GPU");
    ``build-cache --backend auto`` picks only such backends on a GPU."""

    name: str
    description: str
    gpu_checked: bool = False


#: Every backend by name; the CLI's choices come from here.
BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", "torch.stft + a mel matmul, CPU or CUDA (checked on an H200: parity "
                     "within 2.5e-3 dB, bit-identical across batchings)", gpu_checked=True),
    "torchaudio": Backend("torchaudio", "torchaudio's MelSpectrogram set to the recipe"),
    "dali": Backend("dali", "an NVIDIA DALI pipeline (CPU operators here; its GPU pipeline has not "
                    "been checked by a recorded GPU run)"),
    "reference": Backend("reference", "float64 numpy, the definition of correct (slow)"),
}


def resolve_backend(backend: str, device) -> str:
    """The backend ``backend`` means on ``device``: "auto" is torch (the only one whose GPU
    path a recorded GPU run checked); a named one is returned as it is, with a warning when
    its GPU path is unchecked and ``device`` is CUDA."""
    import warnings

    if backend == "auto":
        return "torch"
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if str(device).startswith("cuda") and not BACKENDS[backend].gpu_checked:
        warnings.warn(f"the {backend} backend's GPU path has not been checked by a recorded GPU run (parity with "
                      "the reference, batch invariance); a resumed build may not equal a clean one. Use "
                      "--backend torch for checked results", stacklevel=2)
    return backend
#: On a CPU the torch kernels run this many clips at a time: beyond it the complex STFT
#: (10 MB for 4 default clips) falls out of cache and throughput halves (measured here:
#: 261 clips/s in groups of 4 against 118 in groups of 8, 2 threads).
CPU_GROUP = 4
#: On a GPU the torch kernels always run exactly this many clips, the last group padded
#: with silence: cuFFT and cuBLAS choose their algorithms by shape, so a clip's image
#: otherwise depends on the batch it is in (23 of 2.2 M stored uint8 values differed
#: between batches of 32 and of 5 on an H200: gpu_check.py batch_invariance), and a
#: resumed build, which batches clips differently, would not equal a clean one.
GPU_GROUP = 64


def mel_spectrogram(waves, config: SpectrogramConfig | None = None, backend: str = "torch", device=None):
    """Scaled log-mel images of a batch of equal-length clips.

    ``waves``: (B, n) or (n,) float32, numpy or torch. ``device``: where to compute
    (``None``: the tensor's own device, CPU for numpy). Returns a torch tensor
    (B, n_mels, 1 + n // hop_length) on that device, each clip scaled on its own.
    """
    import torch

    config = config or SpectrogramConfig()
    waves = torch.as_tensor(waves)
    if waves.ndim == 1:
        waves = waves.unsqueeze(0)
    if waves.ndim != 2:
        raise ConfigError(f"waves must be (batch, samples), got shape {tuple(waves.shape)}")
    device = torch.device(device) if device is not None else waves.device
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if waves.shape[0] == 0:
        frames = 1 + (waves.shape[1] - (0 if config.center else config.n_fft)) // config.hop_length
        dtype = torch.float64 if backend == "reference" else torch.float32
        return torch.empty((0, config.n_mels, frames), dtype=dtype, device=device)
    if backend in ("torch", "torchaudio"):
        if backend == "torch":
            kernel = frontend(config, str(device))
        else:
            from . import torchaudio_mel

            kernel = functools.partial(torchaudio_mel.mel_spectrogram, config=config)
        waves = waves.to(device, torch.float32)
        if device.type == "cpu":
            return torch.cat([kernel(group) for group in waves.split(CPU_GROUP)])
        n = len(waves)
        padded = torch.nn.functional.pad(waves, (0, 0, 0, -n % GPU_GROUP))
        return torch.cat([kernel(group) for group in padded.split(GPU_GROUP)])[:n]
    if backend == "dali":
        from . import dali_mel

        return dali_mel.mel_spectrogram(waves, config, device)
    from . import reference  # backend == "reference"

    return torch.from_numpy(reference.mel_spectrogram(waves.cpu().numpy(), config)).to(device)


@lru_cache(maxsize=8)
def frontend(config: SpectrogramConfig, device: str):
    """The torch backend's module for ``config`` on ``device``, built once and reused."""
    from .torch_stft import MelFrontend

    return MelFrontend(config).to(device)


def __getattr__(name: str):
    if name == "MelFrontend":
        from .torch_stft import MelFrontend

        return MelFrontend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def value_scale(dtype: str) -> float:
    """Stored value -> recipe value: 1/255 for uint8, 1 for float16 (the inverse of
    :func:`to_storage`'s scaling; the cache reader, the loader and serving all use it)."""
    return 1 / 255 if dtype == "uint8" else 1.0


def quantise(images, dtype: str):
    """:func:`to_storage`'s values as float32, in torch on the images' own device (the
    crop loader and the exported graph quantise there): ``torch.round`` is half to even,
    as ``np.rint``."""
    import torch

    if dtype == "uint8":
        return torch.round(images.clamp(0.0, 1.0) * 255.0)
    return images.to(torch.float16).to(torch.float32)


def to_storage(images, dtype: str) -> np.ndarray:
    """[0, 1] float images -> stored values: uint8 rounded to 0..255, or float16."""
    images = np.asarray(images, dtype=np.float32)
    if dtype == "uint8":
        return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images.astype(np.float16)
