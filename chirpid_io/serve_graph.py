"""ServeGraph: waveform windows -> probabilities, as one torch module that exports to ONNX.

Every step is the serving path's own arithmetic, in its order:

1. the mel power spectrogram (``kernels.matmul_stft.MatmulMelPower``: the torch kernel's
   function as matrix products, which onnxruntime runs fast where its STFT operator does
   not);
2. ``kernels.torch_stft.scale`` itself (per-clip dB against the clip's peak, the top_db
   floor, min-max);
3. quantisation to the storage dtype as ``kernels.to_storage`` does it (uint8: round half
   to even of ``clip(x, 0, 1) * 255``, kept as float; float16: a float16 round trip);
4. ``loaders.transform.ModelInput``'s float32 constants, multiply then add;
5. the model, then softmax (task "single") or a sigmoid per class ("multilabel").

The only difference from the torch path is step 1: a different summation order of the
same DFT, which moves the mel power by about 5e-7 of the clip's peak (``torch.stft`` is
as far from a float64 reference). Where a window's [0, 1] value lies within that of a
uint8 rounding boundary, the stored value can differ by one level (1/255): on 10 real
5 s windows of the bundled recordings at the chirpid recipe, 4 of 701,120 values (the
torch path differs from the float64 reference in as many). A window without such a value
gets the torch path's probabilities within 1.2e-7; one with a flipped value within 9e-6
(BirdCNN) or 2.2e-4 (BirdCNNv5c, random weights), the model's own response to a one-level
change of one input (``tests/test_export.py``).

:func:`torch_reference` is the torch path that the graph is checked against, step for
step as prediction does it (``mel_spectrogram``, ``to_storage``, ``ModelInput``, model).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch

from .errors import ConfigError
from .kernels import quantise, value_scale
from .kernels.matmul_stft import MatmulMelPower
from .kernels.torch_stft import scale
from .loaders.transform import ModelInput
from .predict.scoring import TorchScorer, probabilities


#: Architectures whose ``forward(x)`` is ``classifier(dropout(embed(x)))``; others are
#: checked on a probe input before their embeddings are exported.
_KNOWN_HEADS = ("BirdCNN", "BirdCNNv5c")


class ServeGraph(torch.nn.Module):
    """Waveform windows (B, n_samples) float32 at the recipe's rate -> probabilities
    (B, n_classes), and with ``embeddings=True`` also the model's penultimate features
    (B, D) as a second output. Built from a registry ``ModelEntry``; the model is copied
    to the CPU in eval mode (the entry is left as it was)."""

    def __init__(self, entry, *, embeddings: bool = True):
        super().__init__()
        config = entry.config
        if entry.task not in ("single", "multilabel"):
            raise ConfigError(f"model {entry.name!r} v{entry.version}: unknown task {entry.task!r} (single or "
                              "multilabel)")
        self.config, self.task, self.embeddings = config, entry.task, embeddings
        self.mel_power = MatmulMelPower(config)
        self.model = copy.deepcopy(getattr(entry.model, "_orig_mod", entry.model)).cpu().eval()
        model_input = ModelInput(entry.stats, value_scale(config.storage_dtype), config.n_mels)
        input_scale, input_shift = model_input.constants("cpu")
        self.register_buffer("input_scale", input_scale.clone(), persistent=False)
        self.register_buffer("input_shift", input_shift.clone(), persistent=False)
        if embeddings:
            self._check_head()
        self.eval()

    def train(self, mode: bool = True) -> "ServeGraph":
        """A serving graph has no training mode: the model stays in eval mode."""
        return super().train(False)

    def _check_head(self) -> None:
        model = self.model
        name = type(model).__name__
        if not (callable(getattr(model, "embed", None)) and callable(getattr(model, "classifier", None))):
            raise ConfigError(f"{name} has no embed() and classifier to split its output at; export it without "
                              "embeddings (--no-embeddings, embeddings=False)")
        if name in _KNOWN_HEADS:
            return
        probe = torch.rand((1, 1, *self.config.shape), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            whole, split = model(probe), model.classifier(model.embed(probe))
        if whole.shape != split.shape or not torch.allclose(whole, split, rtol=1e-5, atol=1e-6):
            raise ConfigError(f"{name}: forward(x) is not classifier(embed(x)), so its embeddings cannot be a "
                              "second output of the same pass; export it without embeddings (--no-embeddings)")

    def model_input(self, waves: torch.Tensor) -> torch.Tensor:
        """Steps 1-4: waves -> the model's input (B, 1, n_mels, frames)."""
        images = scale(self.mel_power(waves), self.config)
        stored = quantise(images, self.config.storage_dtype)
        return stored.unsqueeze(1) * self.input_scale + self.input_shift

    def forward(self, waves: torch.Tensor):
        x = self.model_input(waves)
        if not self.embeddings:
            return probabilities(self.model(x), self.task)
        features = self.model.embed(x)
        # dropout sits between the two in training; in eval mode it is the identity
        return probabilities(self.model.classifier(features), self.task), features


class TorchOutputs(NamedTuple):
    """What the torch serving path computes for a batch of windows (numpy, float32)."""

    inputs: np.ndarray  #: (B, 1, n_mels, frames) model input
    probabilities: np.ndarray  #: (B, n_classes)
    embeddings: np.ndarray | None  #: (B, D), when the model has ``embed``


def torch_reference(entry, waves, *, embeddings: bool = True) -> TorchOutputs:
    """What ``chirpid-io predict`` computes for (B, n_samples) float32 windows on the CPU
    (``predict.scoring.TorchScorer`` itself: the torch mel kernel, ``to_storage``,
    ``ModelInput``, the model, softmax or sigmoid). What an exported graph is measured
    against."""
    scorer = TorchScorer(entry, device="cpu")
    waves = np.asarray(waves, dtype=np.float32)
    with torch.inference_mode():
        inputs = scorer.inputs(waves).cpu().numpy()
    probs, features = scorer(waves, embed=embeddings)
    return TorchOutputs(inputs, probs, features if embeddings else None)
