"""The torch backend: ``torch.stft`` and one mel-matrix matmul, batched, CPU or CUDA."""

from __future__ import annotations

import torch

from ..config import SpectrogramConfig
from .filters import hann_window, mel_matrix


class MelFrontend(torch.nn.Module):
    """Waveforms (B, n_samples) -> scaled log-mel images (B, n_mels, frames).

    Holds the window and the mel matrix as buffers, so ``.to(device)`` moves them with the
    model and a network can compute its own features on its own device. Every clip is
    scaled on its own (the dB reference and the top_db floor never cross clips).
    """

    def __init__(self, config: SpectrogramConfig | None = None):
        super().__init__()
        self.config = config or SpectrogramConfig()
        window = torch.tensor(hann_window(self.config.win_length, self.config.n_fft))
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel", torch.tensor(mel_matrix(self.config), dtype=torch.float32), persistent=False)

    def mel_power(self, waves: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = torch.stft(
            waves, n_fft=c.n_fft, hop_length=c.hop_length, window=self.window,
            center=c.center, pad_mode=c.pad_mode, return_complex=True,
        )
        if c.power == 2.0:
            # re^2 + im^2: no square root, and far faster than summing a view_as_real pair
            power = spec.real.square() + spec.imag.square()
        else:
            power = spec.abs().pow(c.power)
        return torch.matmul(self.mel, power)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return scale(self.mel_power(waves.to(self.window.dtype)), self.config)


def scale(power: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """Per-clip dB (ref = the clip's max), top_db floor, then min-max; (B, M, T) in, out."""
    db = 10.0 * torch.log10(power.clamp_min(config.amin))
    # ref = max(S) per clip, so subtracting the clip's max dB is the same as dividing by it
    db = db - db.amax(dim=(-2, -1), keepdim=True)
    if config.top_db is not None:
        db = db.clamp_min(-config.top_db)
    if config.scaling == "db":
        return db
    low = db.amin(dim=(-2, -1), keepdim=True)
    span = -low  # the max is exactly 0 dB after the reference subtraction
    return torch.where(span > 0, (db - low) / span.clamp_min(torch.finfo(db.dtype).tiny), 0.0)
