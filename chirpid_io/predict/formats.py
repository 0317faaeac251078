"""The field's output formats for per-window predictions.

- ``parquet`` / ``csv``: one row per window: recording, start_seconds, end_seconds,
  padded (the window ran past the recording's end and was zero-padded), then one column
  per class in the model's class order, probabilities in [0, 1].
- ``birdclef``: a Kaggle BirdCLEF submission: ``row_id`` = ``<recording stem>_<end
  second>`` for consecutive 5 s windows, then one column per class in the model's order.
- ``raven``: Raven Pro selection tables, one tab-separated ``.txt`` per recording with
  ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz), High Freq (Hz),
  Species, Confidence``: one row per window and species above the threshold.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..errors import ConfigError

FORMATS = ("parquet", "csv", "birdclef", "raven")
#: Columns of the per-window table before the class columns.
WINDOW_COLUMNS = ("recording", "start_seconds", "end_seconds", "padded")
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Species", "Confidence")


def class_columns(class_names: list[str]) -> list[str]:
    """The class columns' names: the class names, prefixed where one collides."""
    return [f"p_{n}" if n in WINDOW_COLUMNS else n for n in class_names]


def check_formats(formats, config) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown output format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if "birdclef" in formats and not (config.window_seconds == 5.0 and config.hop_seconds == 5.0):
        raise ConfigError(f"the birdclef format scores consecutive 5 s windows; these are {config.window_seconds} s "
                          f"every {config.hop_seconds} s. Fix: --window-seconds 5 --hop-seconds 5, or another format")
    return formats


def birdclef_rows(name: str, start_seconds: np.ndarray, window_seconds: float) -> list[str]:
    """``row_id`` of each window: the recording's stem and the second its window ends."""
    stem = Path(name).stem
    return [f"{stem}_{int(round(s + window_seconds))}" for s in start_seconds]


def raven_text(start_seconds, end_seconds, probabilities: np.ndarray, class_names, threshold: float,
               low_hz: float, high_hz: float) -> str:
    """A Raven selection table for one recording (detections at or above ``threshold``)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(RAVEN_COLUMNS)
    selection = 0
    for w, c in zip(*np.nonzero(probabilities >= threshold)):
        selection += 1
        writer.writerow([selection, "Spectrogram 1", 1, f"{start_seconds[w]:.3f}", f"{end_seconds[w]:.3f}",
                         f"{low_hz:.1f}", f"{high_hz:.1f}", class_names[c], f"{probabilities[w, c]:.4f}"])
    return out.getvalue()


def raven_name(name: str, unique_stem: bool) -> str:
    """A selection table's file name: the recording's stem when no other recording of the
    run shares it, else its path with folders joined by '__'."""
    if unique_stem:
        return f"{Path(name).stem}.selections.txt"
    safe = name.replace("\\", "/").strip("/").replace("/", "__")
    return f"{Path(safe).with_suffix('')}.selections.txt"
