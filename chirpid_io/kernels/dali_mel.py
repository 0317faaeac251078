"""The DALI backend: an NVIDIA DALI pipeline computes the mel power, torch scales it.

The pipeline is ``external_source -> spectrogram -> mel_filter_bank``, with CPU operators
(``device_id=None``) for a CPU device and GPU operators for a CUDA one. DALI's defaults
differ from the recipe, so the window is passed explicitly: ``filters.hann_window``
zero-padded to ``n_fft`` (hence ``window_length = n_fft``, which also makes the centre
padding ``n_fft // 2`` as in torch and librosa). The dB step is the shared
``torch_stft.scale``: ``fn.to_decibels`` floors ``x / max`` at a ratio, where librosa floors
``x`` at an absolute ``amin`` first, and the two differ for quiet or silent clips.

A pipeline is built once per (config, batch size, device) and reused; each call feeds
one batch and runs one iteration.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np
import torch

from ..config import SpectrogramConfig
from ..errors import BackendUnavailableError, ConfigError
from .filters import hann_window
from .torch_stft import scale

_INSTALL_HINT = "install it with `pip install 'chirpid-io[dali]'` (Linux only), or use backend='torch'"


def mel_spectrogram(waves, config: SpectrogramConfig, device=None) -> torch.Tensor:
    """(B, n_samples) float32 (numpy or torch) -> (B, n_mels, frames) scaled log-mel.

    ``device``: ``None`` or CPU runs DALI's CPU operators; a CUDA device runs its GPU
    operators and returns the result on that device.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    batch = torch.as_tensor(waves).detach().to("cpu", torch.float32).contiguous()
    if batch.ndim == 1:
        batch = batch.unsqueeze(0)
    power = _runner(config, batch.shape[0], str(device)).run(batch.numpy())
    return scale(power, config)


def _import_dali():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(f"the dali backend needs NVIDIA DALI: {_INSTALL_HINT}") from None
    from nvidia.dali import Pipeline, fn, types
    from nvidia.dali.plugin.pytorch import feed_ndarray

    return Pipeline, fn, types, feed_ndarray


class _Runner:
    """One built DALI pipeline and the lock that keeps two threads from interleaving."""

    def __init__(self, config: SpectrogramConfig, batch_size: int, device: torch.device):
        Pipeline, fn, types, self._feed_ndarray = _import_dali()
        if config.power not in (1, 2):
            raise ConfigError(
                f"power={config.power} is not supported by the dali backend (DALI's "
                "spectrogram computes power 1 or 2 only): use backend='torch'"
            )
        self.device = device
        on_gpu = device.type == "cuda"
        if on_gpu and device.index is None:
            self.device = device = torch.device("cuda", torch.cuda.current_device())
        self.pipe = Pipeline(
            batch_size=batch_size,
            num_threads=min(4, os.cpu_count() or 1),
            device_id=device.index if on_gpu else None,
            # one feed, one run: nothing to prefetch from an external source we feed by hand
            prefetch_queue_depth=1,
        )
        with self.pipe:
            waves = fn.external_source(name="waves", dtype=types.FLOAT, ndim=1)
            if on_gpu:
                waves = waves.gpu()
            spec = fn.spectrogram(
                waves,
                nfft=config.n_fft,
                window_length=config.n_fft,
                window_fn=hann_window(config.win_length, config.n_fft).tolist(),
                window_step=config.hop_length,
                power=int(config.power),
                center_windows=config.center,
                reflect_padding=config.pad_mode == "reflect",
                layout="ft",
            )
            mel = fn.mel_filter_bank(
                spec,
                sample_rate=float(config.sample_rate),
                nfilter=config.n_mels,
                freq_low=float(config.fmin),
                freq_high=float(config.fmax),
                mel_formula=config.mel_scale,
                normalize=config.mel_norm == "slaney",
            )
            self.pipe.set_outputs(mel)
        self.pipe.build()
        self.lock = threading.Lock()

    def run(self, waves: np.ndarray) -> torch.Tensor:
        """(B, n) float32 -> (B, n_mels, frames) float32 mel power on the runner's device."""
        with self.lock:
            self.pipe.feed_input("waves", waves)
            (mel,) = self.pipe.run()
            dense = mel.as_tensor()  # every clip has the same shape, so the list is one tensor
            out = torch.empty(dense.shape(), dtype=torch.float32, device=self.device)
            if self.device.type == "cuda":
                # copy on torch's stream (ordered after whatever last used `out`'s memory),
                # and wait for it: the next run may reuse DALI's output buffer
                stream = torch.cuda.current_stream(self.device)
                self._feed_ndarray(dense, out, cuda_stream=stream)
                stream.synchronize()
            else:
                self._feed_ndarray(dense, out)
        return out


@lru_cache(maxsize=4)
def _runner(config: SpectrogramConfig, batch_size: int, device: str) -> _Runner:
    return _Runner(config, batch_size, torch.device(device))


def filter_bank(config: SpectrogramConfig) -> np.ndarray:
    """DALI's own (n_mels, n_freqs) mel filter bank, read out by feeding it an identity.

    ``mel_filter_bank`` applied to an identity "spectrogram" (freq x time) returns its
    weights column by column; used to check DALI against ``filters.mel_matrix``.
    """
    Pipeline, fn, types, _ = _import_dali()
    pipe = Pipeline(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    with pipe:
        eye = fn.external_source(name="eye", dtype=types.FLOAT, ndim=2, layout="ft")
        pipe.set_outputs(fn.mel_filter_bank(
            eye, sample_rate=float(config.sample_rate), nfilter=config.n_mels,
            freq_low=float(config.fmin), freq_high=float(config.fmax),
            mel_formula=config.mel_scale, normalize=config.mel_norm == "slaney",
        ))
    pipe.build()
    pipe.feed_input("eye", [np.eye(config.n_freqs, dtype=np.float32)])
    (out,) = pipe.run()
    return np.array(out.as_tensor(), dtype=np.float64)[0]
