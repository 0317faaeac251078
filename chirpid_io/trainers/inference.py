"""classify: recordings (files or waves) -> species, in memory, seeing what training saw.

Each recording is cut into windows covering all of it (the last zero-padded), or, with
``energy_filter=True``, only the windows the recipe's energy filter keeps (as the cache
did); windows of many recordings share model batches; every window goes through the
serving path of ``chirpid_io.predict.scoring`` (the training recipe, quantisation and
``ModelInput``). For archives and files on disk, ``chirpid_io.predict.predict`` writes the
same per-window results as tables, resumably.
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
    be scored. ``probabilities``: the recording-level probabilities (single-label: the
    mean softmax over windows; multi-label: each species' highest window probability);
    ``window_probabilities``: (n_windows, n_classes); ``start_seconds``: where each window
    starts; ``padded``: which ran past the end and were zero-padded."""

    source: str
    label: str | None
    confidence: float | None
    probabilities: np.ndarray | None = None
    window_probabilities: np.ndarray | None = None
    start_seconds: np.ndarray | None = None
    padded: np.ndarray | None = None
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
             class_names: Sequence[str] | None = None, stats: dict | bool | None = None, task: str = "single",
             batch_size: int = 64, device=None, backend: str = "torch", energy_filter: bool = False) -> list[Prediction]:
    """Classify recordings: file paths, or float waves already at ``config.sample_rate`` Hz.

    ``model_or_entry``: a registry ``ModelEntry`` (recipe, classes, normalisation and task
    come with it) or a bare model with ``config``, ``class_names``, ``stats`` (the
    per-band ``{"mean", "std"}`` the loader normalised with, e.g. ``cache.stats``; False if
    it did not normalise) and ``task``. A recording that cannot be decoded or yields no
    window gets ``label=None`` and a ``reason``.
    """
    from types import SimpleNamespace

    from ..predict.scoring import TorchScorer

    entry = model_or_entry if hasattr(model_or_entry, "check_features") else None
    if entry is not None:
        entry.check_features(config or entry.config)
    else:
        if config is None or class_names is None or stats is None:
            raise ConfigError("classify needs the model's SpectrogramConfig, class names and normalisation: pass a "
                              "registry entry, or config=..., class_names=... and stats=cache.stats (stats=False "
                              "when training did not normalise)")
        entry = SimpleNamespace(model=model_or_entry, config=config, class_names=list(class_names),
                                stats=stats or None, task=task)
    scorer = TorchScorer(entry, device=device, backend=backend)
    was_training = scorer.model.training
    if isinstance(paths_or_waves, (str, os.PathLike, np.ndarray)):
        paths_or_waves = [paths_or_waves]
    results = []
    try:
        for item, source in enumerate(paths_or_waves):
            results.append(_one(scorer, source, item, batch_size, energy_filter))
    finally:
        scorer.model.train(was_training)
    return results


def _one(scorer, source, item: int, batch_size: int, energy_filter: bool) -> Prediction:
    from ..predict.windows import Chunk, Ending, kept, peaks_ok, recording_windows
    from ..streaming import Cutter

    names = scorer.class_names
    config = scorer.config
    if isinstance(source, np.ndarray):
        name, wave = f"<wave {item}>", np.asarray(source, dtype=np.float32).reshape(-1)
        if wave.size == 0 or not np.isfinite(wave).all():
            return Prediction(name, None, None, reason="empty or non-finite samples", class_names=names)
        cutter = Cutter(config.n_samples, config.hop_samples)
        pairs = cutter.add(wave) + cutter.finish(pad_last=True)
        samples = np.stack([w for _, w in pairs])
        starts = np.array([s for s, _ in pairs]) / config.sample_rate
        padded = np.array([s + config.n_samples > wave.size for s, _ in pairs])
        rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=1))
        chunks, threshold = [Chunk(samples, starts, padded, rms, peaks_ok(samples))], None
        if energy_filter and config.energy_threshold is not None:
            from ..audio import frame_rms

            threshold = config.energy_threshold * frame_rms(wave, config.n_fft, config.hop_length).mean()
    else:
        name = str(source)
        chunks, threshold = [], None
        try:
            for part in recording_windows(Path(source), config, energy_filter=energy_filter):
                if isinstance(part, Ending):
                    threshold = part.threshold
                else:
                    chunks.append(part)
        except ChirpIOError as exc:
            return Prediction(name, None, None, reason=getattr(exc, "reason", str(exc)), class_names=names)
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            return Prediction(name, None, None, reason=f"unexpected decoder failure ({type(exc).__name__}: {exc})",
                              class_names=names)
    samples = np.concatenate([c.samples for c in chunks])
    starts = np.concatenate([c.start_seconds for c in chunks])
    padded = np.concatenate([c.padded for c in chunks])
    if energy_filter:
        keep = kept(np.concatenate([c.rms for c in chunks]), np.concatenate([c.audible for c in chunks]), threshold,
                    padded, config.pad_short)
        samples, starts, padded = samples[keep], starts[keep], padded[keep]
    if not len(samples):
        return Prediction(name, None, None, reason="no window above the energy threshold (silent or near-silent)",
                          class_names=names)
    probabilities = np.concatenate([scorer(samples[i : i + batch_size])[0] for i in range(0, len(samples), batch_size)])
    overall = probabilities.max(axis=0) if scorer.task == "multilabel" else probabilities.mean(axis=0)
    best = int(overall.argmax())
    return Prediction(name, names[best], float(overall[best]), overall, probabilities, starts, padded,
                      class_names=names)
