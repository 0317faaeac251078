"""Mel back-ends against the float64 reference and against librosa, plus filters and config.

Every backend must compute the old recipe's numbers: within 0.01 dB of the float64 numpy
reference and within 0.05 dB of ``librosa.feature.melspectrogram`` + ``power_to_db``, on
noise, chirps, pure tones and real recordings, with each clip scaled on its own.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from chirpid_io import audio
from chirpid_io.config import SpectrogramConfig
from chirpid_io.errors import ConfigError
from chirpid_io.kernels import filters, mel_spectrogram
from chirpid_io.kernels.torch_stft import MelFrontend

CONFIG = SpectrogramConfig()
DB = CONFIG.replace(scaling="db")
BACKENDS = ("torch", "torchaudio", "dali")
SAMPLES = Path(__file__).resolve().parents[1] / "chirpid_io" / "data" / "samples"
SEED = 20240517

REF_TOL_DB = 0.01
LIBROSA_TOL_DB = 0.05


def _need(backend: str) -> None:
    if backend == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")


def _seconds() -> np.ndarray:
    return np.arange(CONFIG.n_samples) / CONFIG.sample_rate


def _chirp(f0: float, f1: float) -> np.ndarray:
    """Linear sweep from f0 to f1 Hz over the 5 s window."""
    t, duration = _seconds(), CONFIG.window_seconds
    return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))


def _tone(f: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * f * _seconds())


@cache
def _real_clips() -> np.ndarray:
    paths = sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in (".wav", ".mp3"))
    clips = []
    for path in paths:
        wave = audio.load(path, CONFIG.sample_rate)[: CONFIG.n_samples]
        clips.append(np.pad(wave, (0, CONFIG.n_samples - len(wave))))
    return np.stack(clips) if clips else np.empty((0, CONFIG.n_samples), np.float32)


@cache
def _signals(kind: str) -> np.ndarray:
    """(B, n_samples) float32 test batch of one kind."""
    if kind == "noise":
        rng = np.random.default_rng(SEED)
        levels = np.array([[1.0], [0.05], [3.0], [1e-3]])
        batch = rng.standard_normal((4, CONFIG.n_samples)) * levels
    elif kind == "chirp":
        batch = np.stack([_chirp(50, 15950), _chirp(15000, 200), _chirp(1000, 4000)])
    elif kind == "tone":
        batch = np.stack([_tone(f) for f in (440.0, 3000.0, 9000.0)])
    else:
        batch = _real_clips()
        if len(batch) == 0:
            pytest.skip(f"no sample recordings under {SAMPLES}")
    return np.ascontiguousarray(batch, dtype=np.float32)


@cache
def _reference(kind: str) -> np.ndarray:
    return mel_spectrogram(_signals(kind), DB, backend="reference").numpy()


@cache
def _librosa(kind: str) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    images = []
    for y in _signals(kind):
        power = librosa.feature.melspectrogram(
            y=y, sr=32000, n_fft=2048, hop_length=512, n_mels=224, fmin=0, fmax=16000,
            pad_mode="constant",
        )
        images.append(librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=80))
    return np.stack(images)


KINDS = ("noise", "chirp", "tone", "real")


@pytest.mark.parametrize("kind", KINDS)
def test_reference_matches_librosa(kind):
    # The reference itself is the thing the backends are held to: pin it to librosa tightly.
    assert np.abs(_reference(kind) - _librosa(kind)).max() <= 1e-3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference_and_librosa(backend, kind):
    _need(backend)
    out = mel_spectrogram(_signals(kind), DB, backend=backend)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    out = out.numpy()
    assert out.shape == (len(_signals(kind)), 224, 313)
    assert np.abs(out - _reference(kind)).max() <= REF_TOL_DB
    assert np.abs(out - _librosa(kind)).max() <= LIBROSA_TOL_DB


@pytest.mark.parametrize("backend", BACKENDS + ("reference",))
def test_five_seconds_give_224_by_313(backend):
    _need(backend)
    wave = _signals("noise")[0]
    assert CONFIG.shape == (224, 313)
    assert tuple(mel_spectrogram(wave, CONFIG, backend=backend).shape) == (1, 224, 313)


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_tone_peaks_in_nearest_band(backend, scale):
    _need(backend)
    config = DB.replace(mel_scale=scale)
    freqs = np.array([100.0, 250.0, 440.0, 1000.0, 2500.0, 6000.0, 12000.0, 15000.0])
    low, high = filters.hz_to_mel([config.fmin, config.fmax], scale)
    centres = filters.mel_to_hz(np.linspace(low, high, config.n_mels + 2), scale)[1:-1]
    expected = np.abs(centres[None, :] - freqs[:, None]).argmin(axis=1)
    tones = np.stack([_tone(f) for f in freqs]).astype(np.float32)
    out = mel_spectrogram(tones, config, backend=backend)
    loudest_band = out.numpy().max(axis=2).argmax(axis=1)
    np.testing.assert_array_equal(loudest_band, expected)


@pytest.mark.parametrize("backend", BACKENDS + ("reference",))
def test_each_clip_is_scaled_on_its_own(backend):
    _need(backend)
    loud = _signals("noise")[0]
    quiet = _chirp(300, 8000).astype(np.float32) * 1e-3
    together = mel_spectrogram(np.stack([loud, quiet]), DB, backend=backend).numpy()
    alone = [mel_spectrogram(w[None], DB, backend=backend).numpy()[0] for w in (loud, quiet)]
    np.testing.assert_allclose(together[0], alone[0], atol=1e-3)
    np.testing.assert_allclose(together[1], alone[1], atol=1e-3)
    # a batch-wide reference would leave the quiet clip's maximum some 60 dB below 0
    assert together[1].max() == 0.0


@pytest.mark.parametrize("backend", BACKENDS + ("reference",))
def test_minmax_spans_zero_to_one(backend):
    _need(backend)
    out = mel_spectrogram(_signals("chirp"), CONFIG, backend=backend).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out.min(axis=(1, 2)), 0.0, atol=0)
    np.testing.assert_allclose(out.max(axis=(1, 2)), 1.0, atol=1e-6)
    # the floor is -80 dB, so min-max is (dB + 80) / 80
    db = mel_spectrogram(_signals("chirp"), DB, backend=backend).numpy()
    np.testing.assert_allclose(out, (db + 80.0) / 80.0, atol=1e-5)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_matrix_equals_librosa(htk, norm):
    librosa = pytest.importorskip("librosa")
    config = CONFIG.replace(mel_scale="htk" if htk else "slaney", mel_norm=norm)
    expected = librosa.filters.mel(
        sr=32000, n_fft=2048, n_mels=224, fmin=0.0, fmax=16000.0, htk=htk, norm=norm, dtype=np.float64
    )
    np.testing.assert_allclose(filters.mel_matrix(config), expected, rtol=0, atol=1e-12)


def test_mel_matrix_other_rates_equal_librosa():
    librosa = pytest.importorskip("librosa")
    config = CONFIG.replace(
        sample_rate=22050, n_fft=1024, win_length=1024, n_mels=64, fmin=150.0, fmax=11025.0
    )
    expected = librosa.filters.mel(
        sr=22050, n_fft=1024, n_mels=64, fmin=150.0, fmax=11025.0, dtype=np.float64
    )
    np.testing.assert_allclose(filters.mel_matrix(config), expected, rtol=0, atol=1e-12)


def test_hann_window_is_periodic_and_centred():
    def periodic(n):
        return torch.hann_window(n, periodic=True, dtype=torch.float64).numpy()

    np.testing.assert_allclose(filters.hann_window(2048, 2048), periodic(2048), atol=1e-15)
    padded = filters.hann_window(1000, 2048)
    np.testing.assert_array_equal(padded[:524], 0.0)
    np.testing.assert_array_equal(padded[1524:], 0.0)
    np.testing.assert_allclose(padded[524:1524], periodic(1000), atol=1e-15)


def test_torchaudio_filter_bank_matches_mel_matrix():
    from chirpid_io.kernels.torchaudio_mel import transform

    for config in (DB, DB.replace(mel_scale="htk"), DB.replace(mel_norm=None)):
        weights = transform(config, "cpu").mel_scale.fb.double().numpy().T
        expected = filters.mel_matrix(config)
        # torchaudio builds it in float32: a few float32 ulps of each band's peak weight
        assert np.abs(weights - expected).max() <= 2e-5 * expected.max()


def test_dali_filter_bank_matches_mel_matrix():
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from chirpid_io.kernels.dali_mel import filter_bank

    others = [dict(mel_scale="htk"), dict(mel_norm=None), dict(fmin=300.0, fmax=12000.0)]
    for config in [DB] + [DB.replace(**changes) for changes in others]:
        expected = filters.mel_matrix(config)
        assert np.abs(filter_bank(config) - expected).max() <= 2e-5 * expected.max()


def test_dali_missing_names_the_install(monkeypatch):
    from chirpid_io.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import now fails, as if absent
    with pytest.raises(BackendUnavailableError, match=r"pip install 'chirpid-io\[dali\]'"):
        mel_spectrogram(_signals("noise"), DB.replace(n_mels=17), backend="dali")


def test_dali_refuses_other_powers():
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    with pytest.raises(ConfigError, match="power"):
        mel_spectrogram(_signals("noise"), DB.replace(power=1.5), backend="dali")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "changes",
    [dict(pad_mode="reflect"), dict(win_length=1500), dict(center=False), dict(power=1.0),
     dict(mel_scale="htk", mel_norm=None), dict(fmin=200.0, fmax=12000.0, n_mels=96, hop_length=320)],
    ids=["reflect", "short-window", "no-centre", "magnitude", "htk", "band"],
)
def test_other_recipes_match_reference(backend, changes):
    _need(backend)
    config = DB.replace(**changes)
    # A DC offset makes constant and reflect padding differ strongly in the edge frames.
    # Noise, not tones: power=1 spans 80 dB of magnitude (160 dB of power), deeper than
    # float32 can resolve in a tone's spectral valleys.
    waves = _signals("noise")[:3] + np.float32(0.5)
    expected = mel_spectrogram(waves, config, backend="reference").numpy()
    out = mel_spectrogram(waves, config, backend=backend).numpy()
    assert out.shape == expected.shape == (3, config.n_mels, config.frames)
    assert np.abs(out - expected).max() <= REF_TOL_DB


def test_frontend_moved_with_to_matches_mel_spectrogram():
    waves = torch.from_numpy(_signals("noise"))
    model = torch.nn.Sequential(MelFrontend(CONFIG)).to("cpu")
    assert torch.equal(model(waves), mel_spectrogram(waves, CONFIG, backend="torch"))
    # the window and mel buffers follow .to(dtype) too, and the input follows them
    wide = MelFrontend(DB).to(torch.float64)(waves)
    assert wide.dtype == torch.float64
    assert np.abs(wide.numpy() - _reference("noise")).max() <= REF_TOL_DB


# -- GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_equals_cpu(backend):
    _need(backend)
    waves = np.concatenate([_signals("noise"), _signals("chirp")])
    cpu = mel_spectrogram(waves, DB, backend=backend, device="cpu")
    gpu = mel_spectrogram(waves, DB, backend=backend, device="cuda")
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() <= REF_TOL_DB
    expected = mel_spectrogram(waves, DB, backend="reference").numpy()
    assert np.abs(gpu.cpu().numpy() - expected).max() <= REF_TOL_DB


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_frontend_moved_to_cuda_matches_mel_spectrogram():
    waves = torch.from_numpy(_signals("noise")).cuda()
    model = torch.nn.Sequential(MelFrontend(CONFIG)).to("cuda")
    assert torch.allclose(model(waves), mel_spectrogram(waves, CONFIG, backend="torch"), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_empty_batch_gives_an_empty_result(backend):
    out = mel_spectrogram(np.zeros((0, CONFIG.n_samples), np.float32), CONFIG, backend=backend)
    assert tuple(out.shape) == (0, 224, 313)


def test_torch_backend_is_batch_invariant_on_cpu():
    # a resumed build re-batches windows differently: the numbers must not depend on it
    waves = torch.from_numpy(np.concatenate([_signals("noise"), _signals("chirp")]))
    together = mel_spectrogram(waves, CONFIG)
    alone = torch.cat([mel_spectrogram(w[None], CONFIG) for w in waves])
    assert torch.equal(together, alone)
