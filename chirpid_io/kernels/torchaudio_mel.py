"""The torchaudio backend: ``torchaudio.transforms.MelSpectrogram`` set to the recipe.

torchaudio's defaults are not the recipe (HTK scale, no norm, reflect padding), so every
option is passed explicitly. The filter bank is torchaudio's own (``melscale_fbanks``,
computed in float32); the dB scaling is the shared per-clip ``torch_stft.scale``, because
``AmplitudeToDB(top_db=...)`` clamps a (B, F, T) batch against the whole batch's maximum.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..config import SpectrogramConfig
from ..errors import BackendUnavailableError
from .torch_stft import scale


def mel_spectrogram(waves: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """(B, n_samples) float32 -> (B, n_mels, frames) scaled log-mel, on ``waves.device``."""
    return scale(transform(config, str(waves.device))(waves), config)


@lru_cache(maxsize=8)
def transform(config: SpectrogramConfig, device: str) -> torch.nn.Module:
    """The ``MelSpectrogram`` module (mel power, no dB) for ``config`` on ``device``."""
    try:
        import torchaudio
    except ImportError as exc:  # a dependency, but torch/torchaudio version skew happens
        raise BackendUnavailableError(
            f"the torchaudio backend needs torchaudio ({exc}); install it with "
            "`pip install torchaudio` matching your torch, or use backend='torch'"
        ) from None
    module = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        win_length=config.win_length,
        hop_length=config.hop_length,
        f_min=float(config.fmin),
        f_max=float(config.fmax),
        n_mels=config.n_mels,
        # torch.hann_window is periodic by default: the same values as filters.hann_window,
        # and torch.stft zero-pads it to n_fft around the centre as the reference does.
        window_fn=torch.hann_window,
        power=config.power,
        center=config.center,
        pad_mode=config.pad_mode,
        norm=config.mel_norm,
        mel_scale=config.mel_scale,
    )
    return module.to(device).eval()
