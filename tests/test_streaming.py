"""Long recordings in bounded memory (issue 12, item 3): streamed decoding equals the
whole-file path, and a long recording is built chunk by chunk.

No real recording of minutes with a clear licence ships in the registries we can reach,
so the long files here are assembled from the bundled recordings (real bird audio,
concatenated, at 44.1 kHz stereo as field recordings often are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chirpid_io import audio, streaming
from chirpid_io.cache import StorageOptions, build_cache, open_cache, verify_cache
from chirpid_io.config import SpectrogramConfig
from chirpid_io.inputs import samples_dir
from chirpid_io.kernels import mel_spectrogram, to_storage

RECIPE = SpectrogramConfig(sample_rate=16_000, n_fft=512, win_length=512, hop_length=128, n_mels=32, fmax=8_000.0)


def assembled(seconds: float, rate: int = 44_100) -> np.ndarray:
    """Real bird audio (the bundled clips, resampled and concatenated), stereo."""
    pieces, total = [], 0
    clips = sorted(samples_dir().rglob("*.wav"))
    while total < seconds * rate:
        for clip in clips:
            wave = audio.load(clip, rate)
            pieces.append(wave)
            total += len(wave)
    mono = np.concatenate(pieces)[: int(seconds * rate)]
    return np.stack([mono, 0.5 * np.roll(mono, 441)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def long_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    stereo = assembled(150.0)
    for name in ("field.ogg", "field.flac"):  # Vorbis: what soundscape archives hold
        # in blocks: libsndfile's Vorbis encoder crashes on one very large write
        with sf.SoundFile(root / name, "w", 44_100, 2) as f:
            for start in range(0, len(stereo), 1 << 16):
                f.write(stereo[start : start + (1 << 16)])
    raw = bytearray((root / "field.flac").read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4000] = bytes(b ^ 0xFF for b in raw[middle : middle + 4000])
    (root / "damaged.flac").write_bytes(bytes(raw))
    return root


@pytest.mark.parametrize("name", ["field.ogg", "field.flac"])
def test_a_streamed_decode_equals_the_whole_file(long_files, name):
    whole = audio.load(long_files / name, 32_000)
    info: dict = {}
    blocks = list(streaming.stream(long_files / name, 32_000, block_seconds=7.3, info=info))
    streamed = np.concatenate(blocks)
    assert len(blocks) > 10 and len(streamed) == len(whole)
    assert np.max(np.abs(streamed - whole)) <= 1e-6
    assert info["sample_rate"] == 44_100 and info["channels"] == 2


def _expected(path: Path, config: SpectrogramConfig):
    cut = audio.windows(audio.load(path, config.sample_rate), config)
    return cut, to_storage(mel_spectrogram(cut.samples, config).numpy(), config.storage_dtype)


@pytest.mark.parametrize("threshold", [0.75, None])
def test_a_long_recording_is_built_in_chunks_as_the_whole_file_would_be(long_files, tmp_path, threshold):
    config = RECIPE.replace(energy_threshold=threshold)
    folder = tmp_path / "in" / "soundscape"
    folder.mkdir(parents=True)
    (folder / "field.ogg").symlink_to(long_files / "field.ogg")
    out = tmp_path / "cache"
    report = build_cache(tmp_path / "in", out, config, storage=StorageOptions(shard_windows=8), workers=1,
                         progress=False)
    cut, images = _expected(long_files / "field.ogg", config)
    cache = open_cache(out)
    rows = cache.windows.to_pylist()
    assert report.windows_added == len(rows) == len(cut.samples) > 0 and len(rows) > 8  # several shards
    np.testing.assert_allclose([r["start_seconds"] for r in rows], cut.start_seconds, atol=1e-9)
    stored = cache.read(np.arange(len(cache))).astype(np.int16)
    # the samples differ by at most 1e-6, so a value may round to the next level, no more
    assert np.abs(stored - images).max() <= 1 and np.mean(stored != images) < 1e-3
    assert cache.recordings.column("duration_seconds").to_pylist() == [pytest.approx(150.0, abs=1e-3)]
    assert verify_cache(out).ok


def test_damage_midway_drops_the_recordings_windows_and_the_next_one_is_intact(long_files, tmp_path):
    folder = tmp_path / "in" / "soundscape"
    folder.mkdir(parents=True)
    (folder / "a_damaged.flac").symlink_to(long_files / "damaged.flac")  # first: its windows reach disk
    (folder / "b_field.flac").symlink_to(long_files / "field.flac")
    config = RECIPE.replace(energy_threshold=None)
    out = tmp_path / "cache"
    report = build_cache(tmp_path / "in", out, config, storage=StorageOptions(shard_windows=4), workers=1,
                         progress=False)
    assert [p for p, _ in report.skipped] == ["soundscape/a_damaged.flac"]
    assert "damaged mid-stream" in report.skipped[0][1]
    cache = open_cache(out)
    cut, images = _expected(long_files / "field.flac", config)
    assert len(cache) == len(cut.samples)
    assert set(cache.windows.column("path").to_pylist()) == {"soundscape/b_field.flac"}
    assert np.abs(cache.read(np.arange(len(cache))).astype(np.int16) - images).max() <= 1
    assert verify_cache(out).ok


def test_frame_energy_and_cutter_match_the_whole_file_functions():
    rng = np.random.default_rng(3)
    wave = rng.standard_normal(123_457).astype(np.float32)
    energy = streaming.FrameEnergy(2048, 512)
    cutter = streaming.Cutter(10_000, 4_000)
    pairs = []
    for start in range(0, wave.size, 9_999):
        energy.add(wave[start : start + 9_999])
        pairs += cutter.add(wave[start : start + 9_999])
    assert energy.mean() == pytest.approx(audio.frame_rms(wave, 2048, 512).mean(), rel=1e-12)
    full = len(pairs)
    assert [s for s, _ in pairs] == list(range(0, wave.size - 10_000 + 1, 4_000))
    pairs += cutter.finish(pad_last=True)
    assert len(pairs) == streaming.cover_count(wave.size, 10_000, 4_000) == full + 1
    last_start, last = pairs[-1]
    np.testing.assert_array_equal(last[: wave.size - last_start], wave[last_start:])
    assert not last[wave.size - last_start :].any()
