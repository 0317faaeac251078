"""classify: recordings -> species, seeing exactly what training saw.

Each recording is decoded and windowed with the model's own SpectrogramConfig
(``audio.load`` + ``audio.windows``, the energy filter included), turned into log-mel
images by the same kernel as the cache (``kernels.mel_spectrogram``), quantised to the
cache's storage dtype and scaled back (``kernels.to_storage`` x value scale), and
normalised per band with the statistics the loader used, exactly as
``chirpid_io.loaders`` does. Windows of many recordings share batches; the softmax is
averaged over a recording's windows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import SpectrogramConfig
from ..errors import ChirpIOError, ConfigError


@dataclass
class Prediction:
    """One recording's result. ``label`` is None (with ``reason``) when no window could
    be scored. ``probabilities``: the mean softmax (n_classes,); ``window_probabilities``:
    (n_windows, n_classes); ``start_seconds``: where each window starts."""

    source: str
    label: str | None
    confidence: float | None
    probabilities: np.ndarray | None = None
    window_probabilities: np.ndarray | None = None
    start_seconds: np.ndarray | None = None
    reason: str = ""
    class_names: list[str] = field(default_factory=list)

    def to_dict(self, top: int = 3) -> dict:
        """JSON-ready summary: label, confidence, top classes, window count, reason."""
        out = {"source": self.source, "label": self.label, "confidence": self.confidence,
               "windows": 0 if self.window_probabilities is None else len(self.window_probabilities)}
        if self.probabilities is not None:
            order = np.argsort(-self.probabilities)[:top]
            out["top"] = [{"label": self.class_names[i], "probability": float(self.probabilities[i])} for i in order]
        if self.reason:
            out["reason"] = self.reason
        return out


def classify(paths_or_waves, model_or_entry, *, config: SpectrogramConfig | None = None,
             class_names: Sequence[str] | None = None, stats: dict | bool | None = None, batch_size: int = 64,
             device=None, backend: str = "torch") -> list[Prediction]:
    """Classify recordings: file paths, or float waves already at ``config.sample_rate`` Hz.

    ``model_or_entry``: a registry ``ModelEntry`` (recipe, classes and normalisation come
    with it) or a bare model with ``config``, ``class_names`` and ``stats`` (the per-band
    ``{"mean", "std"}`` the training loader normalised with, e.g. ``cache.stats``; False
    if it did not normalise). ``device``: where features and the model run (the model is
    moved there; default: where its parameters are). A recording that cannot be decoded
    or yields no window gets ``label=None`` and a ``reason``.
    """
    import torch

    entry = model_or_entry if hasattr(model_or_entry, "check_features") else None
    model = entry.model if entry is not None else model_or_entry
    if entry is not None:
        config = config or entry.config
        entry.check_features(config)
        class_names = class_names if class_names is not None else entry.class_names
        if stats is None:
            stats = entry.stats if entry.stats is not None else False
    if config is None or class_names is None or stats is None:
        raise ConfigError("classify needs the model's SpectrogramConfig, class names and normalisation: "
                          "pass a registry entry, or config=..., class_names=... and stats=cache.stats "
                          "(stats=False when training did not normalise)")
    stats = stats or None
    if isinstance(paths_or_waves, (str, os.PathLike, np.ndarray)):
        paths_or_waves = [paths_or_waves]
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    model.eval()
    prepare = _Prepare(config, stats, device)

    results: list[Prediction | None] = [None] * len(paths_or_waves)
    cut: dict[int, tuple[str, np.ndarray]] = {}  # item -> (source, start_seconds)
    queue: list[tuple[int, np.ndarray]] = []  # (item, windows (K, n_samples)) waiting for a batch
    window_probs: dict[int, list[np.ndarray]] = {}

    def run(flush: bool) -> None:
        while queue and (flush or sum(len(w) for _, w in queue) >= batch_size):
            items, parts, taken = [], [], 0
            while queue and taken < batch_size:
                item, waves = queue[0]
                take = waves[: batch_size - taken]
                items.append((item, len(take)))
                parts.append(take)
                taken += len(take)
                if len(take) == len(waves):
                    queue.pop(0)
                else:
                    queue[0] = (item, waves[len(take):])
            probs = _score(model, prepare(np.concatenate(parts), backend)).cpu().numpy()
            offset = 0
            for item, n in items:
                window_probs.setdefault(item, []).append(probs[offset : offset + n])
                offset += n

    for item, source in enumerate(paths_or_waves):
        name, kept, reason = _windows(source, config, item)
        if reason:
            results[item] = Prediction(name, None, None, reason=reason, class_names=list(class_names))
            continue
        cut[item] = (name, kept.start_seconds)
        queue.append((item, kept.samples))
        run(flush=False)
    run(flush=True)
    model.train(was_training)

    for item, (name, starts) in cut.items():
        probs = np.concatenate(window_probs[item])
        mean = probs.mean(axis=0)
        best = int(mean.argmax())
        results[item] = Prediction(name, class_names[best], float(mean[best]), mean, probs, starts,
                                   class_names=list(class_names))
    return results


def _windows(source, config: SpectrogramConfig, item: int):
    """(display name, Windows, reason): decode/window one input; failures become reasons."""
    from .. import audio

    if isinstance(source, np.ndarray):
        name, wave = f"<wave {item}>", np.asarray(source, dtype=np.float32).reshape(-1)
        if wave.size == 0 or not np.isfinite(wave).all():
            return name, None, "empty or non-finite samples"
    else:
        name = str(source)
        try:
            wave = audio.load(Path(source), config.sample_rate)
        except ChirpIOError as exc:
            return name, None, getattr(exc, "reason", str(exc))
        except Exception as exc:  # one bad file never stops the batch
            return name, None, f"unexpected decoder failure ({type(exc).__name__}: {exc})"
    kept = audio.windows(wave, config)
    if len(kept.samples) == 0:
        seconds = len(wave) / config.sample_rate
        if seconds < config.window_seconds and not config.pad_short:
            return name, None, f"shorter than one window ({seconds:.2f} s < {config.window_seconds} s)"
        return name, None, "no window above the energy threshold (silent or near-silent)"
    return name, kept, ""


class _Prepare:
    """Waves -> model inputs, step for step as the cache builder and the loader do it."""

    def __init__(self, config: SpectrogramConfig, stats: dict | None, device):
        import torch

        self.config, self.device = config, device
        self.value_scale = 1 / 255 if config.storage_dtype == "uint8" else 1.0
        self.norm = None
        if stats is not None:
            from ..loaders.loader import STD_FLOOR

            mean = np.asarray(stats["mean"], dtype=np.float64)
            std = np.asarray(stats["std"], dtype=np.float64)
            self.norm = (torch.as_tensor(mean, dtype=torch.float32).view(1, 1, -1, 1).to(device),
                         torch.as_tensor(1.0 / np.maximum(std, STD_FLOOR), dtype=torch.float32)
                         .view(1, 1, -1, 1).to(device))

    def __call__(self, waves: np.ndarray, backend: str):
        import torch

        from ..kernels import mel_spectrogram, to_storage

        images = mel_spectrogram(waves, self.config, backend=backend, device=self.device)
        stored = torch.from_numpy(to_storage(images.cpu().numpy(), self.config.storage_dtype))
        x = stored.to(self.device).unsqueeze(1).to(torch.float32).mul_(self.value_scale)
        if self.norm is not None:
            mean, inv_std = self.norm
            x = x.sub_(mean).mul_(inv_std)
        return x


def _score(model, x):
    import torch

    with torch.inference_mode():
        return torch.softmax(model(x).float(), dim=1)
