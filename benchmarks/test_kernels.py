"""Stage "mel": 5 s windows -> scaled log-mel images (224 x 313).

Old path: librosa, one clip at a time (``chirpid_io.legacy.legacy_spectrogram``: mel power,
``power_to_db``, per-clip min-max). chirpid-io: ``chirpid_io.kernels.mel_spectrogram`` with
each backend (torch, torchaudio, dali) at batch sizes 1, 8 and 64 on ``--bench-device``;
the float64 reference backend is a definition, not a contender, and is left out. Every
round turns the same ``--mel-clips`` real windows into images; throughput is clips per
second, including the host-to-device copy on a GPU.
"""

from __future__ import annotations

import pytest

from corpus import corpus_windows
from memory import Inputs, probe

UNIT = "clips/s"
BACKENDS = ("torch", "torchaudio", "dali")
BATCH_SIZES = (1, 8, 64)


def test_mel_old(measure, mel_windows):
    pytest.importorskip("librosa")
    from chirpid_io.legacy import legacy_spectrogram

    legacy_spectrogram(mel_windows[0])  # warm librosa's caches outside the timed rounds
    measure(lambda: [legacy_spectrogram(w) for w in mel_windows], stage="mel", side="old",
            items=len(mel_windows), unit=UNIT, label="librosa, one clip at a time")


@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_mel_new(measure, mel_windows, settings, synchronize, backend, batch):
    import torch

    from chirpid_io.errors import BackendUnavailableError
    from chirpid_io.kernels import mel_spectrogram

    device = settings.device
    waves = torch.from_numpy(mel_windows)  # host memory, as a loader hands it over
    try:
        mel_spectrogram(waves[:batch], backend=backend, device=device)
    except (ImportError, BackendUnavailableError) as exc:
        pytest.skip(f"{backend} unavailable: {str(exc).splitlines()[0][:120]}")

    def run():
        out = [mel_spectrogram(waves[i:i + batch], backend=backend, device=device)
               for i in range(0, len(waves), batch)]
        synchronize()
        return out

    measure(run, stage="mel", side="new", items=len(waves), unit=UNIT,
            label=f"{backend}, batch {batch}, {device}")


@probe("mel", "old", "librosa, one clip at a time, uint8 images kept")
def mel_memory_old(inputs: Inputs):
    from chirpid_io.legacy import legacy_pixels, legacy_spectrogram

    waves = corpus_windows(inputs.corpus, inputs.mel_clips * inputs.scale)
    legacy_spectrogram(waves[0])
    return lambda: len([legacy_pixels(legacy_spectrogram(w)) for w in waves])


@probe("mel", "new", "torch backend, batch 64, uint8 images kept")
def mel_memory_new(inputs: Inputs):
    import torch

    from chirpid_io.kernels import mel_spectrogram, to_storage

    waves = torch.from_numpy(corpus_windows(inputs.corpus, inputs.mel_clips * inputs.scale))
    mel_spectrogram(waves[:64], device=inputs.device)

    def work():
        out = [to_storage(mel_spectrogram(waves[i:i + 64], device=inputs.device).cpu(), "uint8")
               for i in range(0, len(waves), 64)]
        return sum(len(batch) for batch in out)

    return work
