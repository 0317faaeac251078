"""audio.load and audio.windows against exact synthetic signals and librosa's own loader."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from chirpid_io import audio
from chirpid_io.config import SpectrogramConfig
from chirpid_io.errors import AudioDecodeError

SR = 32_000


def tone(freq, seconds, rate, amplitude=0.5, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize("rate", [44_100, 11_025, 192_000])
def test_resampled_tone_keeps_frequency_and_level(tmp_path, rate):
    freq = 1_000.0 if rate == 11_025 else 3_000.0
    path = tmp_path / "tone.wav"
    sf.write(path, tone(freq, 2.0, rate), rate, subtype="FLOAT")
    wave = audio.load(path, SR)
    assert wave.dtype == np.float32 and len(wave) == int(np.ceil(2.0 * rate * SR / rate))
    middle = wave[SR // 4 : -SR // 4].astype(np.float64)  # away from the filter's edge effects
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    peak_hz = np.argmax(spectrum) * SR / len(middle)
    assert abs(peak_hz - freq) < 2.0
    rms = np.sqrt(np.mean(middle**2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=2e-3)


def test_load_matches_librosa_exactly(tmp_path):
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    path = tmp_path / "noise.wav"
    sf.write(path, (rng.standard_normal((44_100 * 2, 2)) * 0.1).astype(np.float32), 44_100, subtype="FLOAT")
    ours = audio.load(path, SR)
    theirs, _ = librosa.load(path, sr=SR)
    np.testing.assert_array_equal(ours, theirs)


def test_downmix_of_any_channel_count_is_the_mean(tmp_path):
    rng = np.random.default_rng(2)
    data = (rng.standard_normal((SR, 6)) * 0.1).astype(np.float32)
    path = tmp_path / "six.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    np.testing.assert_allclose(audio.load(path, SR), data.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("empty.wav", lambda p: p.write_bytes(b""), "0 bytes"),
        ("text.wav", lambda p: p.write_text("not audio at all"), "not decodable"),
        ("random.flac", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), "not decodable"),
        ("dir.wav", lambda p: p.mkdir(), "directory"),
        ("missing.wav", lambda p: None, "cannot be read"),
    ],
)
def test_bad_files_raise_one_typed_error_naming_the_file(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioDecodeError) as info:
        audio.load(path, SR)
    assert name in str(info.value) and reason in str(info.value)


def test_header_only_truncated_and_nonfinite_files(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(500, 1.0, SR), SR)
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(good.read_bytes()[:44])
    with pytest.raises(AudioDecodeError, match="no samples|not decodable"):
        audio.load(header_only, SR)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:1000])
    assert len(audio.load(truncated, SR)) == (1000 - 44) // 2  # what is there decodes
    nan = tone(500, 1.0, SR)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        audio.load(tmp_path / "nan.wav", SR)


def test_frame_rms_matches_librosa():
    librosa = pytest.importorskip("librosa")
    wave = np.random.default_rng(3).standard_normal(50_000).astype(np.float32)
    ours = audio.frame_rms(wave, 2048, 512)
    theirs = librosa.feature.rms(y=wave, frame_length=2048, hop_length=512, center=True, pad_mode="constant")[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_windows_cut_filter_and_starts():
    config = SpectrogramConfig()
    n = config.n_samples
    quiet, loud = 0.001, 0.5
    rng = np.random.default_rng(4)
    # four windows and a partial one: loud, quiet, loud, digital silence, partial
    wave = np.concatenate([
        rng.standard_normal(n) * loud, rng.standard_normal(n) * quiet,
        rng.standard_normal(n) * loud, np.zeros(n), rng.standard_normal(n // 2) * loud,
    ]).astype(np.float32)
    cut = audio.windows(wave, config)
    np.testing.assert_array_equal(cut.start_seconds, [0.0, 10.0])
    np.testing.assert_array_equal(cut.samples, np.stack([wave[:n], wave[2 * n : 3 * n]]))
    expected_rms = np.sqrt(np.mean(np.square(cut.samples, dtype=np.float64), axis=1))
    np.testing.assert_allclose(cut.rms, expected_rms, rtol=1e-6)
    kept_all = audio.windows(wave, config.replace(energy_threshold=None))
    np.testing.assert_array_equal(kept_all.start_seconds, [0.0, 5.0, 10.0])  # silence still dropped


def test_overlapping_windows_and_pad_short():
    config = SpectrogramConfig(hop_seconds=2.5, energy_threshold=None)
    wave = np.random.default_rng(5).standard_normal(config.n_samples * 2).astype(np.float32)
    cut = audio.windows(wave, config)
    np.testing.assert_array_equal(cut.start_seconds, [0.0, 2.5, 5.0])
    np.testing.assert_array_equal(cut.samples[1], wave[80_000:240_000])
    short = wave[:50_000]
    assert len(audio.windows(short, config).samples) == 0
    padded = audio.windows(short, config.replace(pad_short=True))
    assert padded.samples.shape == (1, config.n_samples)
    np.testing.assert_array_equal(padded.samples[0, :50_000], short)
    assert not padded.samples[0, 50_000:].any()
