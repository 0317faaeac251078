"""The mel power spectrogram as plain matrix products: the exportable form of the torch kernel.

``torch.stft`` exports to ONNX as the ``STFT`` operator, which onnxruntime computes about 4x
slower than torch's FFT (590 ms for 16 five-second clips of the chirpid recipe on one
thread here, against 155 ms for torch's whole front end), and the exported front end
then costs more than the small BirdCNN itself. :class:`MatmulMelPower` computes the same
function with operators every runtime makes fast: framing by slices, and one Cooley-Tukey
step of the real DFT as two matrix products. With ``n_fft = N1 * N2`` (``n = N2 n1 + n2``,
``k = k1 + N1 k2``)::

    X[k1 + N1 k2] = sum_n2 W_N^(n2 k1) W_N2^(n2 k2) sum_n1 w[n] x[n] W_N1^(n1 k1)

the inner sum is one matrix product over ``n1`` for every frame at once, the twiddle
factors ``W_N^(n2 k1)`` are folded into the outer matrices (one per ``k1``), and the
bins beyond ``n_fft // 2`` are never formed: the mel matrix is laid out over ``(k1, k2)``
with zeros where ``k1 + N1 k2 > n_fft // 2``. About 3.2 G multiply-adds for 16 chirpid
clips (0.22 s in onnxruntime on one thread here, provisional), and the same values as
``torch.stft``'s up to float32 rounding (relative 5e-7 of the clip's peak power).

``N2`` divides ``gcd(n_fft, hop_length)``, so frames are strided slices of blocks of
``N2`` samples; it is the divisor closest to ``sqrt(n_fft)``. A recipe whose gcd is small
(an odd hop) gets a small ``N2``, and past ``MAX_SLICES`` frame offsets the frames are
gathered with one index table instead of sliced (correct, slower).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import SpectrogramConfig
from .filters import hann_window, mel_matrix

#: Above this many block offsets per frame the frames are gathered with an index table:
#: the slices would make the graph long for little gain.
MAX_SLICES = 128


def factors(n_fft: int, hop_length: int) -> tuple[int, int]:
    """(N1, N2): ``N1 * N2 == n_fft`` and ``N2`` divides ``gcd(n_fft, hop_length)``,
    ``N2`` as close to ``sqrt(n_fft)`` as that allows (the smaller on a tie)."""
    g = math.gcd(n_fft, hop_length)
    divisors = [d for d in range(1, g + 1) if g % d == 0]
    n2 = min(divisors, key=lambda d: (abs(math.log(d) - 0.5 * math.log(n_fft)), d))
    return n_fft // n2, n2


class MatmulMelPower(torch.nn.Module):
    """Waveforms (B, n_samples) float32 -> mel power (B, n_mels, frames) float32.

    The same function as ``MelFrontend(config).mel_power`` (centring with the recipe's pad
    mode, the zero-padded periodic Hann window, ``|X| ** power``, the recipe's mel
    matrix), built only from Pad, Slice/Gather, MatMul and elementwise operators.
    """

    def __init__(self, config: SpectrogramConfig):
        super().__init__()
        self.config = config
        n = config.n_fft
        n1, n2 = factors(n, config.hop_length)
        k2 = n2 // 2 + 1  # outer bins kept: every k = k1 + n1 * k2 <= n_fft // 2 needs k2 <= n2 // 2
        self.n1, self.n2, self.k2 = n1, n2, k2
        i1 = np.arange(n1)
        i2 = np.arange(n2)
        j2 = np.arange(k2)
        inner = 2 * np.pi * np.outer(i1, i1) / n1  # (k1, n1)
        # outer[k1] maps (a_re | a_im)[n2] to (X_re | X_im)[k2]: twiddle and DFT over n2 in one
        angle = -2 * np.pi * (np.outer(i1, i2)[:, :, None] / n + np.outer(i2, j2)[None] / n2)  # (k1, n2, k2)
        cos, sin = np.cos(angle), np.sin(angle)
        mel = mel_matrix(config)  # (n_mels, n_fft // 2 + 1)
        k = i1[:, None] + n1 * j2[None, :]
        laid = np.zeros((mel.shape[0], n1, k2))
        laid[:, k <= n // 2] = mel[:, k[k <= n // 2]]

        def constant(name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.tensor(np.ascontiguousarray(value), dtype=torch.float32),
                                 persistent=False)

        constant("window", hann_window(config.win_length, n).reshape(n1, 1, 1, n2))
        constant("inner_re", np.cos(inner))
        constant("inner_im", -np.sin(inner))
        constant("outer_re", np.concatenate([cos, sin], 2))   # a_re: X_re += a_re cos, X_im += a_re sin
        constant("outer_im", np.concatenate([-sin, cos], 2))  # a_im: X_re -= a_im sin, X_im += a_im cos
        constant("mel", laid.reshape(mel.shape[0], -1).T)      # (n1 * k2, n_mels)
        steps = n // n2
        if steps > MAX_SLICES:
            index = (np.arange(config.frames)[None, :] * (config.hop_length // n2) + np.arange(n1)[:, None])
            self.register_buffer("block_index", torch.tensor(index, dtype=torch.int64), persistent=False)
        else:
            self.block_index = None

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        """(n1, B, frames, n2): frame t's samples ``n2 * i + j`` at ``[i, :, t, j]``, windowed."""
        c = self.config
        if c.center:
            half = c.n_fft // 2
            waves = torch.nn.functional.pad(waves.unsqueeze(1), (half, half), mode=c.pad_mode).squeeze(1)
        count = 1 + (waves.shape[-1] - c.n_fft) // c.hop_length
        stride = c.hop_length // self.n2
        blocks_needed = (count - 1) * stride + self.n1
        blocks = waves[:, : blocks_needed * self.n2].reshape(waves.shape[0], blocks_needed, self.n2)
        if self.block_index is not None:
            framed = blocks[:, self.block_index[:, :count]].transpose(0, 1)
        else:
            framed = torch.stack([blocks[:, i : i + (count - 1) * stride + 1 : stride] for i in range(self.n1)])
        return framed * self.window

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        n1, n2, k2 = self.n1, self.n2, self.k2
        framed = self.frames(waves)
        batch, count = framed.shape[1], framed.shape[2]
        flat = framed.reshape(n1, batch * count * n2)
        a_re = torch.matmul(self.inner_re, flat).reshape(n1, batch * count, n2)
        a_im = torch.matmul(self.inner_im, flat).reshape(n1, batch * count, n2)
        spectrum = torch.matmul(a_re, self.outer_re) + torch.matmul(a_im, self.outer_im)  # (k1, B*T, 2 k2)
        re, im = spectrum[..., :k2], spectrum[..., k2:]
        power = re * re + im * im
        if self.config.power != 2.0:
            power = power.sqrt().pow(self.config.power)  # |X| ** p, as the torch kernel's abs().pow(p)
        power = power.transpose(0, 1).reshape(batch, count, n1 * k2)
        return torch.matmul(power, self.mel).transpose(1, 2)
