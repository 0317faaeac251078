"""The old ChirpID PNG/CSV data path: a faithful baseline, and a reader for migration.

Three things live here:

- :func:`legacy_preprocess` turns recordings into the old PNG/CSV set exactly as the old
  code did (librosa on one core, one window after another, one PNG per window).
- :class:`LegacyPNGDataset` and :func:`legacy_loader` load such a set the old way (Pillow
  per item, per-item standardisation and SpecAugment, a plain ``DataLoader``).
- :func:`read_legacy_dataset` reads a whole old set into arrays so that it can be imported
  into a chirpid-io cache without recomputing anything.

The first two exist to be measured against (``benchmarks/``); they are slow on purpose.

Old quirks that are KEPT, because they define the old numbers or the old cost:

- ``uint8(value * 255)`` truncates; chirpid-io's cache rounds. A PNG pixel can therefore
  be one level below the cache's value for the same window.
- The energy filter uses the whole recording's mean frame RMS (frames of 2048, hop 512,
  centred) times 0.75, and the window RMS in float32, as the old training code did.
- The per-class cap counts windows that passed the energy filter, *before* silent or
  degenerate windows are dropped, so a class can end up with fewer than ``cap`` PNGs.
- Every recording is decoded and held in memory before any window is cut (the old
  ``load_audio_files`` step), so memory grows with the data set.
- PNG names are ``{recording stem}_{i}_{i}.png`` where ``i`` counts the windows kept so
  far over the whole run (the old ``segment_index``), e.g. ``XC592536_17_17.png``;
  indices of dropped silent windows leave gaps.
- The PNG's top row (array row 0) is the lowest mel band, as the old code wrote the
  array without flipping it (the images look upside down in a viewer). The cache uses
  the same orientation, so a PNG and a cache row compare element by element.
- Loading: Pillow opens every PNG on every access, ``/255``, one global scalar mean/std
  from 1000 random items (unseeded unless ``seed`` is given), then a SpecAugment object
  built anew for every item. The ``DataLoader`` uses pin_memory, persistent workers and
  batch 42.

Old bugs that destroyed data are documented here and NOT reproduced:

- Training wrote every pixel of every PNG as one CSV row (70 112 columns) and reshaped it
  back; a wrong reshape order scrambled the images. Images here stay (224, 313) arrays.
- The validation loader had ``drop_last=True``, silently dropping validation windows;
  :func:`legacy_loader` drops the last partial batch only when ``train=True``.
- "Restore best weights" was a shallow dict copy (a no-op), so the last epoch's weights
  were saved; nothing here trains, and chirpid-io's trainers restore a real copy.

librosa, Pillow and torchaudio are imported inside the functions that use them (they come
with the ``bench`` extra); importing this module costs numpy only.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .config import SpectrogramConfig
from .errors import ManifestError
from .inputs.legacy_png import CLASSES_CSV, PNG_DIR, RECORDINGS_CSV, WINDOWS_CSV  # noqa: F401 - public names
from .manifest import discover

#: The old recipe; the legacy path never takes another one.
RECIPE = SpectrogramConfig()
#: Windows kept per class, filled recording by recording in metadata order.
CAP_PER_CLASS = 100
#: Items drawn (without replacement) for the global mean/std.
STATS_ITEMS = 1000
#: Peak amplitude below which the old code called a window silent and dropped it.
SILENT_PEAK = 1e-8
#: SpecAugment as the old training used it: max mask widths (mel bins, frames), probability.
FREQ_MASK, TIME_MASK, AUGMENT_P = 14, 39, 0.8

WINDOW_COLUMNS = ("filename", "class_id", "author")
CLASS_COLUMNS = ("class_id", "scientific_name", "common_name")
RECORDING_COLUMNS = (
    "primary_label", "scientific_name", "common_name", "filename", "author",
    "usable_segments", "class_id",
)
#: File and folder names written by :func:`legacy_preprocess` come from the one reader of
#: old sets: ``CLASSES_CSV, PNG_DIR, RECORDINGS_CSV, WINDOWS_CSV`` (imported above).


# --------------------------------------------------------------------------- the recipe


def legacy_load(path: str | os.PathLike) -> np.ndarray:
    """``librosa.load(path, sr=32000)``: mono float32 at the recipe's rate (soxr_hq)."""
    import librosa

    wave, _ = librosa.load(path, sr=RECIPE.sample_rate, mono=True)
    return wave


def legacy_threshold(wave: np.ndarray) -> float:
    """The old energy threshold: ``0.75 * mean(librosa.feature.rms(wave, 2048, 512))``."""
    import librosa

    rms = librosa.feature.rms(y=wave, frame_length=RECIPE.n_fft, hop_length=RECIPE.hop_length)
    return float(RECIPE.energy_threshold * np.mean(rms[0]))


def legacy_spectrogram(window: np.ndarray) -> np.ndarray | None:
    """The old [0, 1] image of one 5 s window: (224 mel bands, 313 frames) float32.

    librosa's mel power spectrogram (n_fft 2048, hop 512, centred with zero padding,
    224 Slaney mel bands from 0 to 16 000 Hz), ``power_to_db(ref=max, amin=1e-10,
    top_db=80)`` in dB, then the clip's own min-max. Returns None where the old code
    dropped the window: peak below 1e-8, a non-finite dB image, or a flat one.
    """
    import librosa

    window = np.asarray(window, dtype=np.float32)
    if window.size == 0 or np.max(np.abs(window)) < SILENT_PEAK:
        return None
    c = RECIPE
    power = librosa.feature.melspectrogram(
        y=window, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
        win_length=c.win_length, center=c.center, pad_mode=c.pad_mode, power=c.power,
        n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax,
    )
    db = librosa.power_to_db(power, ref=np.max, amin=c.amin, top_db=c.top_db)
    if not np.isfinite(db).all():
        return None
    low, high = db.min(), db.max()
    if high - low < 1e-8:
        return None
    return np.clip((db - low) / (high - low), 0.0, 1.0).astype(np.float32)


def legacy_pixels(image: np.ndarray) -> np.ndarray:
    """[0, 1] image -> the old PNG's uint8 pixels: ``uint8(value * 255)``, truncating."""
    return (np.asarray(image) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- preprocess


@dataclass
class LegacySummary:
    """What :func:`legacy_preprocess` wrote and dropped. Counts are windows unless named."""

    recordings: int = 0  #: recordings decoded
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (file, reason)
    written: int = 0  #: PNGs written
    dropped_energy: int = 0  #: below the energy threshold
    dropped_silent: int = 0  #: peak < 1e-8, non-finite or flat dB image
    capped: int = 0  #: not examined because their class was full
    per_class: dict[str, int] = field(default_factory=dict)  #: PNGs per class name
    seconds: float = 0.0  #: wall time
    out_dir: Path | None = None


def legacy_preprocess(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    audio_root: str | os.PathLike | None = None,
    class_map: str | os.PathLike | None = None,
    cap_per_class: int | None = CAP_PER_CLASS,
    progress: bool = False,
) -> LegacySummary:
    """Write the old PNG/CSV set for ``source`` into ``out_dir``, the old way.

    ``source`` is a folder with one sub-folder per class, or the old recording CSV
    (``filename, class_id, author`` and optionally ``primary_label, scientific_name,
    common_name``) whose files lie under ``audio_root`` (default: the CSV's folder);
    ``class_map`` is the old class map CSV. Inputs are read by :mod:`chirpid_io.manifest`.

    Class ids are positions in the alphabetical list of class names (scientific names),
    the old rule; with the old class map they equal the old ids. A folder's class name is
    its sub-folder name, used as both scientific and common name; the author is the
    recordist from the CSV (or a folder's ``manifest.csv`` group), else ``"unknown"``.

    Writes ``out_dir/spectrograms/*.png`` (8-bit grayscale, 313 wide x 224 high),
    ``spectrograms.csv`` (``filename, class_id, author`` per window), ``classes.csv``
    (``class_id, scientific_name, common_name``) and ``recordings.csv`` (the old
    per-recording table; ``usable_segments`` = PNGs written from it). A recording that
    cannot be decoded is skipped and listed in the summary, as the old code printed it.
    """
    from PIL import Image

    started = time.perf_counter()
    manifest = discover(source, audio_root=audio_root, class_map=class_map)
    if manifest.legacy is not None:
        raise ManifestError(
            f"{source}: this is already an old PNG set; read it with read_legacy_dataset"
        )
    out = Path(out_dir)
    png_dir = out / PNG_DIR
    png_dir.mkdir(parents=True, exist_ok=True)
    summary = LegacySummary(out_dir=out, per_class={name: 0 for name in manifest.class_names})
    n = RECIPE.n_samples

    # 1. Decode everything first and hold it, as the old load_audio_files did.
    loaded = []  # (recording, class id, author, wave, threshold)
    for rec in _progress(manifest.recordings, progress, "decode"):
        try:
            wave = legacy_load(rec.path)
        except Exception as exc:  # the old loop printed any error and went on
            summary.failed.append((rec.relpath, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        summary.recordings += 1
        if len(wave) // n == 0:
            continue  # shorter than one window: the old loader skipped it
        author = rec.group if rec.group != rec.relpath else "unknown"
        loaded.append((rec, manifest.label_index(rec.label), author, wave, legacy_threshold(wave)))

    # 2. Energy filter and per-class cap, recording by recording (extract_balanced_segments).
    kept = []  # (global index, recording, class id, author, window)
    per_class_cut: dict[int, int] = {}
    for rec, class_id, author, wave, threshold in loaded:
        starts = range(0, len(wave) - n + 1, n)
        for k, start in enumerate(starts):
            if cap_per_class is not None and per_class_cut.get(class_id, 0) >= cap_per_class:
                summary.capped += len(starts) - k
                break
            window = wave[start:start + n]
            if np.sqrt(np.mean(window**2)) > threshold:  # float32, as the old code
                kept.append((len(kept), rec, class_id, author, window))
                per_class_cut[class_id] = per_class_cut.get(class_id, 0) + 1
            else:
                summary.dropped_energy += 1

    # 3. One spectrogram and one PNG at a time (create_single_spectrogram).
    rows, usable = [], {}
    for index, rec, class_id, author, window in _progress(kept, progress, "spectrograms"):
        image = legacy_spectrogram(window)
        if image is None:
            summary.dropped_silent += 1
            continue
        name = f"{Path(rec.relpath).stem}_{index}_{index}.png"
        Image.fromarray(legacy_pixels(image)).save(png_dir / name)
        rows.append((name, class_id, author))
        summary.per_class[rec.label] += 1
        usable[rec.relpath] = usable.get(rec.relpath, 0) + 1
    summary.written = len(rows)

    _write_csv(out / WINDOWS_CSV, WINDOW_COLUMNS, rows)
    _write_csv(
        out / CLASSES_CSV, CLASS_COLUMNS,
        [(i, name, name) for i, name in enumerate(manifest.class_names)],
    )
    _write_csv(
        out / RECORDINGS_CSV, RECORDING_COLUMNS,
        [
            (rec.label, rec.label, rec.label, rec.relpath, author, usable.get(rec.relpath, 0), cid)
            for rec, cid, author, _, _ in loaded
        ],
    )
    summary.seconds = time.perf_counter() - started
    return summary


# --------------------------------------------------------------------------- reading


class LegacyDataset(NamedTuple):
    """An old PNG/CSV set in memory, rows in CSV order."""

    images: np.ndarray  #: (N, 224, 313) uint8, row 0 = lowest mel band
    labels: np.ndarray  #: (N,) int64, the old class_id
    filenames: list[str]
    authors: list[str]
    class_names: dict[int, str]  #: class_id -> scientific name (str(id) without a class map)


def read_legacy_dataset(
    csv_path: str | os.PathLike,
    png_dir: str | os.PathLike | None = None,
    *,
    class_map: str | os.PathLike | None = None,
    workers: int | None = None,
) -> LegacyDataset:
    """Read a whole old set into memory: the per-window CSV (``filename, class_id,
    author``) and every PNG, through the one reader of old sets
    (:func:`chirpid_io.inputs.legacy_png.read_set`, which finds ``png_dir`` and the class
    map when not given and names any missing column, bad row or PNG of the wrong size).
    The cache import reads recording by recording instead, in bounded memory."""
    from .inputs.legacy_png import read_set

    legacy = read_set(csv_path, png_dir, class_map)
    images = legacy.images(range(len(legacy.filenames)), workers=workers)
    return LegacyDataset(images, legacy.class_ids.astype(np.int64), list(legacy.filenames), list(legacy.authors),
                         dict(legacy.class_names))


# --------------------------------------------------------------------------- loading


class LegacyPNGDataset:
    """The old training dataset: one PNG opened per item, on every access.

    Items are ``(x, label)``: x a (1, 224, 313) float32 tensor ``(png / 255 - mean) / std``
    with one global scalar mean and std, then (``augment=True``) with probability 0.8 one
    frequency mask of up to 14 mel bins and one time mask of up to 39 frames set to 0,
    from torchaudio masking modules built anew for every item, as the old code did.

    ``mean``/``std`` come from ``stats`` when given (the old code applied the training
    fold's to validation), else from up to 1000 items drawn without replacement at
    construction: unseeded as the old code did, or from ``seed``. The std is the unbiased
    one plus 1e-8. Masks and the 0.8 coin draw from torch's global generator, so
    ``torch.manual_seed`` (and DataLoader's per-worker seeding) governs them.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        png_dir: str | os.PathLike,
        *,
        augment: bool = True,
        seed: int | None = None,
        stats: tuple[float, float] | None = None,
    ):
        from .inputs.legacy_png import read_set

        legacy = read_set(csv_path, png_dir)
        self.paths = [str(legacy.png_dir / name) for name in legacy.filenames]
        self.labels = legacy.class_ids.tolist()
        self.augment = augment
        self.mean, self.std = stats if stats is not None else self._stats(seed)

    def _stats(self, seed: int | None) -> tuple[float, float]:
        count = min(STATS_ITEMS, len(self.paths))
        if count < 2:
            raise ManifestError("need at least 2 PNG windows to compute the mean and std")
        if seed is None:
            chosen = np.random.choice(len(self.paths), count, replace=False)
        else:
            chosen = np.random.default_rng(seed).choice(len(self.paths), count, replace=False)
        # float64 running sums give the old stacked float32 mean/std without holding
        # 1000 images (280 MB) at once.
        total = squares = 0.0
        for i in chosen:
            x = self._pixels(int(i)).astype(np.float64)
            total += x.sum()
            squares += np.square(x).sum()
        n = count * RECIPE.n_mels * RECIPE.frames
        mean = total / n
        var = max(squares - n * mean * mean, 0.0) / (n - 1)
        return float(mean), float(np.sqrt(var) + 1e-8)

    def _pixels(self, index: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        x = torch.from_numpy(self._pixels(index)).unsqueeze(0)
        x = (x - self.mean) / self.std
        if self.augment and float(torch.rand(())) < AUGMENT_P:
            import torchaudio.transforms as T

            x = T.FrequencyMasking(FREQ_MASK)(x, mask_value=0.0)
            x = T.TimeMasking(TIME_MASK)(x, mask_value=0.0)
        return x, self.labels[index]


def legacy_loader(
    dataset: LegacyPNGDataset,
    batch_size: int = 42,
    *,
    train: bool = True,
    num_workers: int | None = None,
):
    """A ``torch.utils.data.DataLoader`` with the old settings.

    Batch 42, ``pin_memory`` when CUDA is available, persistent workers and a prefetch
    factor of 6 when ``num_workers > 0`` (default: ``min(10, cpu count)``; the old code
    used 10-14). ``train=True`` shuffles and drops the last partial batch; ``train=False``
    keeps every item (the old validation loader dropped some: a bug not reproduced).
    """
    import torch
    from torch.utils.data import DataLoader

    workers = min(10, os.cpu_count() or 1) if num_workers is None else num_workers
    extra = {"persistent_workers": True, "prefetch_factor": 6} if workers > 0 else {}
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=workers,
        pin_memory=torch.cuda.is_available(), **extra,
    )


# --------------------------------------------------------------------------- helpers


def _progress(items, enabled: bool, what: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=what, unit="item")


def _write_csv(path: Path, columns: tuple[str, ...], rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(tmp, path)


