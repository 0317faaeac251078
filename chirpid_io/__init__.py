"""chirpid-io: GPU-accelerated audio features and data loading for bird-sound classifiers.

Importing this package is cheap: torch, torchaudio, zarr, pyarrow and DALI load only
when a name that needs them is first used (PEP 562).
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "SpectrogramConfig": "chirpid_io.config",
    "preset": "chirpid_io.config",
    "ChirpIOError": "chirpid_io.errors",
    "ConfigError": "chirpid_io.errors",
    "AudioDecodeError": "chirpid_io.errors",
    "BackendUnavailableError": "chirpid_io.errors",
    "ManifestError": "chirpid_io.errors",
    "CacheError": "chirpid_io.errors",
    "FingerprintMismatchError": "chirpid_io.errors",
    "discover": "chirpid_io.manifest",
    "samples_dir": "chirpid_io.manifest",
    "build_cache": "chirpid_io.cache",
    "open_cache": "chirpid_io.cache",
    "verify_cache": "chirpid_io.cache",
    "StorageOptions": "chirpid_io.cache",
    "read_legacy_dataset": "chirpid_io.legacy",
    "make_loader": "chirpid_io.loaders",
    "fit": "chirpid_io.trainers.loop",
    "TrainConfig": "chirpid_io.trainers.loop",
    "ModelRegistry": "chirpid_io.trainers.registry",
    "classify": "chirpid_io.trainers.inference",
    "train": "chirpid_io.trainers.run",
    "TorchScorer": "chirpid_io.predict",
    "PredictOptions": "chirpid_io.predict",
    "export_onnx": "chirpid_io.export",
    "OnnxModel": "chirpid_io.export",
    "merge_cache": "chirpid_io.cache.merge",
    "load": "chirpid_io.audio",
    "windows": "chirpid_io.audio",
    "mel_spectrogram": "chirpid_io.kernels",
    "MelFrontend": "chirpid_io.kernels",
}

__all__ = sorted(_LAZY) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
