"""Training from waveforms: crop sampling, reading crops, waveform augmentation, and the
waveform cache (``build-cache --store waveform``) with its crop loader."""

from __future__ import annotations

import numpy as np
import pytest

from chirpid_io.errors import ConfigError
from chirpid_io.loaders.crops import (
    PCM_SCALE,
    NoiseBank,
    WaveAugment,
    apply_waves,
    draw_wave_plan,
    mix_noise,
    read_spans,
)
from chirpid_io.loaders.samplers import CropSampler

torch = pytest.importorskip("torch")


# -- which crops an epoch holds ----------------------------------------------------------
LENGTHS = [100, 50, 1000, 10, 333]


def test_crops_lie_inside_their_recordings_and_depend_only_on_seed_and_epoch():
    for weighting in ("recording", "duration"):
        a = CropSampler(LENGTHS, 40, weighting=weighting, seed=7)
        b = CropSampler(LENGTHS, 40, weighting=weighting, seed=7)
        first = list(a)
        assert first == list(b)  # same seed, same epoch
        a.set_epoch(1)
        assert list(a) != first  # a new epoch, new crops
        a.set_epoch(0)
        assert list(a) == first
        for rec, start in first:
            assert 0 <= start <= max(0, LENGTHS[rec] - 40)
        assert list(CropSampler(LENGTHS, 40, weighting=weighting, seed=8)) != first


def test_recording_weighting_takes_each_recording_once_per_epoch():
    s = CropSampler(LENGTHS, 40, weighting="recording", seed=0)
    for epoch in range(3):
        s.set_epoch(epoch)
        assert sorted(r for r, _ in s) == list(range(len(LENGTHS)))


def test_duration_weighting_draws_recordings_in_proportion_to_their_length():
    lengths = [1000, 3000, 6000]
    s = CropSampler(lengths, 10, weighting="duration", seed=0)
    assert len(s) == sum(lengths) // 10  # as many crops as fit in the audio
    counts = np.zeros(3)
    for epoch in range(20):
        s.set_epoch(epoch)
        counts += np.bincount([r for r, _ in s], minlength=3)
    share = counts / counts.sum()
    np.testing.assert_allclose(share, [0.1, 0.3, 0.6], atol=0.01)  # 20,000 draws: 3 sigma < 0.01
    # and the starts are uniform over each recording's room: the mean start is half of it
    s.set_epoch(0)
    starts = np.array([st for r, st in s if r == 2])
    assert abs(starts.mean() / (6000 - 10) - 0.5) < 0.05


def test_fixed_windows_cover_each_recording_as_predict_cuts_them():
    s = CropSampler([100, 50, 10], 40, weighting="windows", hop=30, shuffle=False)
    assert list(s) == [(0, 0), (0, 30), (0, 60), (1, 0), (1, 30), (2, 0)]


def test_a_crop_epoch_resumes_mid_way_and_splits_between_ranks_without_overlap():
    whole = CropSampler(LENGTHS * 4, 40, weighting="duration", seed=3)
    whole.set_epoch(2)
    full = list(whole)
    state = {"epoch": 2, "consumed": 7, "seed": 3, "rank": 0, "world_size": 1, "n": whole.n}
    resumed = CropSampler(LENGTHS * 4, 40, weighting="duration", seed=3)
    resumed.load_state_dict(state)
    assert list(resumed) == full[7:]
    parts = []
    for rank in range(2):
        r = CropSampler(LENGTHS * 4, 40, weighting="duration", seed=3, rank=rank, world_size=2, split="disjoint")
        r.set_epoch(2)
        parts.append(list(r))
    assert sorted(parts[0] + parts[1]) == sorted(full)


def test_crop_sampler_refuses_bad_settings():
    with pytest.raises(ConfigError, match="weighting must be one of recording, duration, windows"):
        CropSampler([10], 5, weighting="random")
    with pytest.raises(ConfigError, match="at least one sample"):
        CropSampler([10, 0], 5)
    with pytest.raises(ConfigError, match="positive hop"):
        CropSampler([10], 5, weighting="windows")


# -- reading crops from chunk rows -------------------------------------------------------
class RowCache:
    """Recordings laid out as a waveform cache lays them out: rows of ``chunk_samples``,
    each recording starting on a new row, its last row zero-padded."""

    def __init__(self, recordings, chunk_samples):
        self.chunk_samples = chunk_samples
        rows, self.first_row, self.reads = [], [], []
        for wave in recordings:
            self.first_row.append(len(rows))
            padded = np.zeros(-(-len(wave) // chunk_samples) * chunk_samples, np.int16)
            padded[: len(wave)] = wave
            rows += list(padded.reshape(-1, chunk_samples))
        self.rows = np.array(rows)
        self.first_row = np.array(self.first_row)
        self.samples = np.array([len(w) for w in recordings])

    def read(self, rows):
        self.reads.append(np.asarray(rows).tolist())
        return self.rows[rows]


def test_read_spans_gives_the_exact_samples_reading_each_row_once():
    rng = np.random.default_rng(0)
    recordings = [rng.integers(-32768, 32767, n, dtype=np.int16) for n in (1000, 37, 250, 4096)]
    cache = RowCache(recordings, 64)
    picks = [(0, 0), (0, 1000 - 100), (1, 0), (2, 150), (3, 1234), (3, 1240), (0, 5)]
    out = np.full((len(picks), 100), 7, np.int16)
    rec = np.array([p[0] for p in picks])
    read_spans(cache, cache.first_row[rec], cache.samples[rec], np.array([p[1] for p in picks]), 100, out)
    for (r, start), crop in zip(picks, out):
        want = np.zeros(100, np.int16)
        piece = recordings[r][start : start + 100]
        want[: len(piece)] = piece  # the 37-sample recording is zero-padded, never read past
        np.testing.assert_array_equal(crop, want)
    assert len(cache.reads) == 1 and len(set(cache.reads[0])) == len(cache.reads[0])  # one read, no row twice


def test_a_noise_folder_is_held_as_int16_and_short_segments_repeat(tmp_path):
    import soundfile as sf

    (tmp_path / "noise").mkdir()
    rng = np.random.default_rng(1)
    long = rng.integers(-20000, 20000, 16000).astype(np.int16)
    short = rng.integers(-20000, 20000, 300).astype(np.int16)
    sf.write(tmp_path / "noise" / "a.wav", long, 16000, subtype="PCM_16")
    sf.write(tmp_path / "noise" / "b.wav", short, 16000, subtype="PCM_16")
    (tmp_path / "noise" / "broken.wav").write_bytes(b"not audio")
    bank = NoiseBank.from_folder(tmp_path / "noise", 16000)
    assert bank.lengths.tolist() == [16000, 300]
    out = np.zeros((2, 1000), np.int16)
    bank.read([0, 1], [500, 0], 1000, out)
    np.testing.assert_array_equal(out[0], long[500:1500])  # PCM_16 at the recipe's rate: bit-exact
    np.testing.assert_array_equal(out[1], np.resize(short, 1000))
    with pytest.raises(ConfigError, match="more than 0.5 s of audio to hold in memory.*--store waveform"):
        NoiseBank.from_folder(tmp_path / "noise", 16000, max_seconds=0.5)
    with pytest.raises(ConfigError, match="not a folder"):
        NoiseBank.from_folder(tmp_path / "noise" / "a.wav", 16000)


# -- waveform augmentation ---------------------------------------------------------------
def test_noise_is_mixed_at_the_drawn_signal_to_noise_ratio():
    rng = np.random.default_rng(2)
    waves = torch.from_numpy(rng.normal(0, 0.1, (6, 8000)).astype(np.float64))
    noise = torch.from_numpy(rng.normal(0, 0.3, (6, 8000)).astype(np.float64))
    waves[4] = 0  # a silent crop stays silent
    noise[5] = 0  # silent noise adds nothing
    plan = draw_wave_plan(WaveAugment(noise_p=1.0, snr_low_db=0, snr_high_db=20), 6, np.random.default_rng(0))
    plan.noise[3] = False  # this crop draws no noise
    mixed = mix_noise(waves, noise, plan)
    added = mixed - waves
    for i in range(4):
        if i == 3:
            assert torch.equal(mixed[3], waves[3])
            continue
        snr = 10 * np.log10(float(waves[i].square().mean() / added[i].square().mean()))
        assert abs(snr - plan.snr_db[i]) < 1e-9
        np.testing.assert_allclose((added[i] / noise[i]).numpy(), float(added[i][0] / noise[i][0]))  # one factor
    assert torch.equal(mixed[4], waves[4]) and torch.equal(mixed[5], waves[5])


def test_gain_then_waveform_mixup_mixes_targets_with_the_same_weights():
    rng = np.random.default_rng(3)
    waves = torch.from_numpy(rng.normal(0, 0.1, (4, 100)))
    y = torch.tensor([0, 1, 2, 1])
    aug = WaveAugment(gain_db=6.0, mixup_alpha=0.4)
    plan = draw_wave_plan(aug, 4, np.random.default_rng(5))
    out, targets = apply_waves(waves, None, y, plan, n_classes=3)
    g = torch.from_numpy(plan.gain)[:, None]
    lam = torch.from_numpy(plan.lam)[:, None]
    p = torch.from_numpy(plan.partner)
    torch.testing.assert_close(out, lam * g * waves + (1 - lam) * (g * waves)[p], rtol=0, atol=1e-15)
    onehot = torch.nn.functional.one_hot(y, 3).double()
    torch.testing.assert_close(targets, lam * onehot + (1 - lam) * onehot[p])
    assert (np.abs(20 * np.log10(plan.gain)) <= 6.0).all() and not np.allclose(plan.gain, 1)


def test_wave_augment_refuses_bad_settings():
    with pytest.raises(ConfigError, match="noise_p must lie in"):
        WaveAugment(noise_p=2)
    with pytest.raises(ConfigError, match="snr_low_db <= snr_high_db"):
        WaveAugment(snr_low_db=10, snr_high_db=0)
    assert not WaveAugment().active and PCM_SCALE == 2.0**-15
