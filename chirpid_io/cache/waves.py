"""Filling a waveform cache: each recording's int16 audio as chunk rows, plus the band
sums of its windows for the statistics.

Every recording that decodes is stored whole (short clips too: a crop of one is
zero-padded), its audio cut into rows of ``chunk_samples`` (the last zero-padded) as it
decodes, so a recording of hours passes through in bounded memory. The per-band
statistics that normalise crops come from the recipe's own windows of the same int16
audio, through the same kernel and storage rounding as a spectrogram cache: so
``cache.stats`` means the same in both kinds of cache, and a recording with no window
(shorter than one without ``--pad-short``, or silent) adds audio but no statistics.
"""

from __future__ import annotations

import numpy as np

from ..audio import from_int16
from .stats import band_sums


class RowCutter:
    """int16 blocks in -> whole rows of ``width`` samples out; ``last()`` pads the rest."""

    def __init__(self, width: int):
        self.width = width
        self.held = np.zeros(0, np.int16)
        self.samples = 0

    def add(self, block: np.ndarray) -> np.ndarray:
        self.samples += len(block)
        data = np.concatenate([self.held, block]) if len(self.held) else block
        whole = len(data) // self.width * self.width
        self.held = data[whole:].copy()
        return data[:whole].reshape(-1, self.width)

    def last(self) -> np.ndarray:
        if not len(self.held):
            return np.zeros((0, self.width), np.int16)
        row = np.zeros((1, self.width), np.int16)
        row[0, : len(self.held)] = self.held
        self.held = np.zeros(0, np.int16)
        return row


def store_waveforms(todo, writer, config, report, *, backend, device, workers, progress) -> None:
    """Recordings -> int16 rows and window band sums -> ``writer``, in input order."""
    from tqdm import tqdm

    from ..errors import AudioDecodeError
    from .build import _decode_in_order, _no_bar

    width = writer.layout.row_shape[0]
    bar = tqdm(total=len(todo), unit="rec", desc="build-cache", disable=_no_bar(progress), dynamic_ncols=True)
    for rec, decoded in _decode_in_order(todo, config, workers, waveform=True):
        report.input_bytes += decoded.info.get("size_bytes") or 0
        row = {"path": rec.relpath, "class_name": rec.label, "group": rec.group, "manifest_index": rec.index,
               "source": dict(rec.source)}
        if decoded.chunks is None and decoded.pcm is None:  # unreadable: skipped with its reason
            writer.add_recording({**row, **decoded.info, "status": "skipped", "reason": decoded.reason},
                                 secondary=rec.secondary)
            report.skipped.append((rec.relpath, decoded.reason))
            bar.update(1)
            continue
        cutter = RowCutter(width)
        writer.start_recording(row, rec.secondary)
        try:
            items = decoded.chunks if decoded.chunks is not None else [decoded.pcm, decoded.windows]
            for item in items:
                if item is None:
                    continue
                if isinstance(item, np.ndarray):  # int16 audio
                    _add_rows(writer, cutter.add(item), cutter, width, config.sample_rate)
                elif len(item.samples):  # windows of it: the statistics
                    writer.add_band_sums(_window_sums(item.samples, config, backend, device))
        except AudioDecodeError as exc:
            writer.abort_recording()
            writer.add_recording({**row, **decoded.info, "status": "skipped", "reason": exc.reason},
                                 secondary=rec.secondary)
            report.skipped.append((rec.relpath, exc.reason))
            bar.update(1)
            continue
        finally:
            if decoded.chunks is not None:
                decoded.chunks.close()
        _add_rows(writer, cutter.last(), cutter, width, config.sample_rate, final=True)
        if cutter.samples == 0:  # decoded to nothing: nothing to crop from
            writer.abort_recording()
            writer.add_recording({**row, **decoded.info, "status": "skipped", "reason": "holds no samples"},
                                 secondary=rec.secondary)
            report.skipped.append((rec.relpath, "holds no samples"))
            bar.update(1)
            continue
        note = "" if not decoded.reason else f"stored; no window for the statistics: {decoded.reason}"
        writer.end_recording(**decoded.info, status="ok", reason=note, samples=cutter.samples)
        report.recordings_added += 1
        report.windows_added += -(-cutter.samples // width)
        report.audio_seconds += cutter.samples / config.sample_rate
        bar.update(1)
        bar.set_postfix(audio=f"{report.audio_seconds / 3600:.2f} h", refresh=False)
    bar.close()


def _add_rows(writer, rows: np.ndarray, cutter: RowCutter, width: int, rate: int, final: bool = False) -> None:
    if not len(rows):
        return
    first = (cutter.samples - len(cutter.held)) // width - len(rows) if not final else -(-cutter.samples // width) - 1
    starts = (first + np.arange(len(rows))) * width / rate
    real = np.minimum(width, cutter.samples - (first + np.arange(len(rows))) * width)  # samples before the padding
    floats = from_int16(rows).astype(np.float64)
    rms = np.sqrt(np.square(floats).sum(axis=1) / np.maximum(real, 1)).astype(np.float32)
    writer.add_windows(rows, starts, rms)


def _window_sums(samples: np.ndarray, config, backend, device):
    """Band sums of the windows' stored images, as a spectrogram cache would hold them."""
    from ..kernels import mel_spectrogram, to_storage

    images = mel_spectrogram(samples, config, backend=backend, device=device).cpu().numpy()
    finite = np.isfinite(images).all(axis=(1, 2))
    return band_sums(to_storage(images[finite], config.storage_dtype))
