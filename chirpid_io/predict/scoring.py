"""Waveform windows -> model input -> probabilities (and embeddings): the serving path.

Every step is the one training used: the recipe's kernel (``kernels.mel_spectrogram``),
quantisation to the cache's storage dtype (``kernels.to_storage``), then
:class:`~chirpid_io.loaders.transform.ModelInput` with the statistics the loader
normalised with. So a window scored here and the same window read from its cache by the
loader reach the model as the identical tensor (tests/test_predict.py checks it).
"""

from __future__ import annotations

import numpy as np

from ..kernels import value_scale
from ..loaders.transform import ModelInput


def probabilities(logits, task: str):
    """Logits -> probabilities: softmax over classes (task "single") or a sigmoid per
    class ("multilabel"); float32, on the logits' device."""
    import torch

    logits = logits.float()
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)


class TorchScorer:
    """Scores (B, n_samples) float32 windows with a registry entry's model.

    ``probabilities``: softmax for a single-label model, a sigmoid per class for a
    multi-label one. ``embed=True`` also returns the penultimate features.
    """

    def __init__(self, entry, *, device=None, backend: str = "torch"):
        import torch

        self.entry = entry
        self.config = entry.config
        self.class_names = list(entry.class_names)
        self.task = entry.task
        self.model = entry.model
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in self.model.parameters()), torch.device("cpu"))
        self.model.to(self.device).eval()
        # on a CPU the channels-last layout halves a convolutional model's time (BirdCNN,
        # batch 32 on this 2-core machine: 27 -> 12 ms per window); it changes no input
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.backend = backend
        self.model_input = ModelInput(entry.stats, value_scale(self.config.storage_dtype), self.config.n_mels)

    def inputs(self, waves: np.ndarray):
        """The model input of ``waves``: (B, 1, n_mels, frames) float32 on the device."""
        import torch

        from ..kernels import mel_spectrogram, to_storage

        images = mel_spectrogram(waves, self.config, backend=self.backend, device=self.device)
        stored = torch.from_numpy(to_storage(images.cpu().numpy(), self.config.storage_dtype))
        return self.model_input(stored.to(self.device))

    def __call__(self, waves: np.ndarray, embed: bool = False):
        """(probabilities (B, C), embeddings (B, D) or None), float32 numpy."""
        import torch

        with torch.inference_mode():
            x = self.inputs(waves)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features = None
            if embed and hasattr(self.model, "embed") and hasattr(self.model, "classifier"):
                features = self.model.embed(x)
                logits = self.model.classifier(features)  # dropout is the identity in eval mode
            else:
                logits = self.model(x)
                if embed and hasattr(self.model, "embed"):
                    features = self.model.embed(x)
            out = probabilities(logits, self.task).cpu().numpy()
            return out, None if features is None else features.float().cpu().numpy()
