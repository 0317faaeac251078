"""Prediction: per-window probabilities of whole recordings, the way training saw them.

    from chirpid_io.predict import PredictOptions, TorchScorer, list_sources, predict
    report = predict(TorchScorer(entry), list_sources(["soundscapes/"]), "out/", PredictOptions(),
                     formats=("parquet", "birdclef", "raven"))

``chirpid-io predict`` is this in one command. Importing this package costs numpy only.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "predict": "chirpid_io.predict.engine",
    "PredictOptions": "chirpid_io.predict.engine",
    "PredictReport": "chirpid_io.predict.engine",
    "TorchScorer": "chirpid_io.predict.scoring",
    "list_sources": "chirpid_io.predict.sources",
    "Source": "chirpid_io.predict.sources",
    "FORMATS": "chirpid_io.predict.formats",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
