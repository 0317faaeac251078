"""Models, the AMP training loop, cross-validation, the model registry, the experiment
log and recording-level inference.

    from chirpid_io.trainers import BirdCNN, TrainConfig, fit
    result = fit(BirdCNN(n_classes), train_loader, val_loader, TrainConfig(epochs=30))

Importing this package is cheap: torch loads when a name is first used (PEP 562).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BirdCNN": "chirpid_io.trainers.models",
    "BirdCNNv5c": "chirpid_io.trainers.models",
    "MODELS": "chirpid_io.trainers.models",
    "build_model": "chirpid_io.trainers.models",
    "count_parameters": "chirpid_io.trainers.models",
    "TrainConfig": "chirpid_io.trainers.loop",
    "FitResult": "chirpid_io.trainers.loop",
    "fit": "chirpid_io.trainers.loop",
    "confusion_metrics": "chirpid_io.trainers.loop",
    "cross_validate": "chirpid_io.trainers.crossval",
    "CVResult": "chirpid_io.trainers.crossval",
    "ModelRegistry": "chirpid_io.trainers.registry",
    "ModelEntry": "chirpid_io.trainers.registry",
    "RegistryError": "chirpid_io.trainers.registry",
    "ExperimentLog": "chirpid_io.trainers.explog",
    "plot_history": "chirpid_io.trainers.explog",
    "plot_confusion": "chirpid_io.trainers.explog",
    "classify": "chirpid_io.trainers.inference",
    "Prediction": "chirpid_io.trainers.inference",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chirpid_io.trainers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return __all__
