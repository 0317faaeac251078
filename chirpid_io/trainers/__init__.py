"""Models, the AMP training loop, cross-validation, the model registry, the experiment
log and recording-level inference.

    from chirpid_io.trainers import BirdCNN, TrainConfig, fit
    result = fit(BirdCNN(n_classes), train_loader, val_loader, TrainConfig(epochs=30))

Importing this package is cheap: torch loads when a name is first used (PEP 562).
"""

from __future__ import annotations

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
