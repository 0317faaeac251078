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


# -- the waveform cache ------------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import soundfile as sf  # noqa: E402

from chirpid_io import audio  # noqa: E402
from chirpid_io.cache import build_cache, open_cache, verify_cache  # noqa: E402
from chirpid_io.cache.format import WaveformStorage  # noqa: E402
from chirpid_io.errors import CacheError  # noqa: E402

from test_cache import CONFIG, STORAGE, make_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WAVES = WaveformStorage(chunk_seconds=0.25, shard_chunks=8)


def build_waves(source, out, storage=WAVES, **kw):
    kw.setdefault("workers", 0)
    return build_cache(source, out, CONFIG, storage=storage, progress=False, **kw)


def recording_audio(cache, k: int) -> np.ndarray:
    """Recording ``k``'s int16 samples as the cache holds them, from its rows."""
    first, samples = cache.wave_spans()
    rows = cache.read(np.arange(first[k], first[k] + -(-samples[k] // cache.chunk_samples)))
    flat = rows.reshape(-1)
    assert not flat[samples[k]:].any()  # the last row is zero past the recording's end
    return flat[: samples[k]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("wave-corpus"))
    rng = np.random.default_rng(9)
    # a clip shorter than a chunk, and one at 44.1 kHz stereo (downmixed, resampled)
    sf.write(root / "alpha" / "tiny.wav", (rng.standard_normal(700) * 3000).astype(np.int16), 16000)
    stereo = (0.2 * rng.standard_normal((44_100 * 2, 2))).astype(np.float32)
    sf.write(root / "beta" / "stereo.flac", stereo, 44_100)
    return root


@pytest.fixture(scope="module", params=["flac", "delta-zstd"])
def waves(request, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"waves-{request.param}") / "cache"
    report = build_waves(corpus, out, WaveformStorage(codec=request.param, chunk_seconds=0.25, shard_chunks=8))
    return out, report


def test_a_waveform_cache_holds_every_recording_bit_exact_as_int16(corpus, waves):
    out, report = waves
    cache = open_cache(out)
    assert cache.kind == "waveform" and cache.chunk_samples == 4000
    paths = cache.recordings.column("path").to_pylist()
    assert len(paths) == report.recordings_added == 10 and not report.skipped
    for k, path in enumerate(paths):
        held = recording_audio(cache, k)
        source = corpus / path
        native = sf.info(source).samplerate
        if native == CONFIG.sample_rate and sf.info(source).channels == 1 and source.suffix == ".wav":
            want = sf.read(source, dtype="int16")[0]  # 16-bit at the recipe's rate: the file's own samples
        else:
            want = audio.to_int16(audio.load(source, CONFIG.sample_rate))  # what the build decodes to
        np.testing.assert_array_equal(held, want, err_msg=path)
    assert verify_cache(out).ok


def test_the_statistics_are_those_of_a_spectrogram_cache_of_the_same_audio(corpus, waves, tmp_path):
    """The band sums come from the recipe's windows of the stored int16 audio: a
    spectrogram cache of the same samples (written as 16-bit files) has the same ones."""
    out, _ = waves
    cache = open_cache(out)
    same = tmp_path / "same"
    for k, path in enumerate(cache.recordings.column("path").to_pylist()):
        target = (same / path).with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, recording_audio(cache, k), CONFIG.sample_rate, subtype="PCM_16")
    spectrogram = build_cache(same, tmp_path / "spec", CONFIG, storage=STORAGE, workers=0, progress=False)
    assert spectrogram.windows_total > 0
    assert open_cache(tmp_path / "spec").attrs["band_sums"] == cache.attrs["band_sums"]
    assert cache.stats_windows == spectrogram.windows_total


def test_a_crop_at_a_window_start_is_the_spectrogram_cache_image(corpus, waves, tmp_path):
    """Exactly the build's image of the same int16 samples; and against a spectrogram
    cache built from the source (float audio, before rounding to int16), within one
    storage level on a few values."""
    import torch

    from chirpid_io.kernels import mel_spectrogram, to_storage
    from chirpid_io.loaders.crops import CropTransform

    out, _ = waves
    cache = open_cache(out)
    spec_path = tmp_path / "spec"
    build_cache(corpus, spec_path, CONFIG, storage=STORAGE, workers=0, progress=False)
    spec = open_cache(spec_path)
    rec_of = {p: k for k, p in enumerate(cache.recordings.column("path").to_pylist())}
    first, samples = cache.wave_spans()
    transform = CropTransform(cache, CONFIG, None, None, None, 0, 0)
    windows = spec.windows
    paths, starts = windows.column("path").to_pylist(), windows.column("start_seconds").to_pylist()
    crops = np.zeros((len(spec), CONFIG.n_samples), np.int16)
    from chirpid_io.loaders.crops import read_spans

    k = np.array([rec_of[p] for p in paths])
    read_spans(cache, first[k], samples[k], np.round(np.array(starts) * CONFIG.sample_rate).astype(np.int64),
               CONFIG.n_samples, crops)
    floats = audio.from_int16(crops)
    built = to_storage(mel_spectrogram(floats, CONFIG).numpy(), CONFIG.storage_dtype)
    loader_side = transform.features(torch.from_numpy(floats)).numpy()
    np.testing.assert_array_equal(loader_side, built.astype(np.float32))  # the very same numbers
    stored = spec.read(np.arange(len(spec)))
    gap = np.abs(built.astype(np.int16) - stored.astype(np.int16))
    assert gap.max() <= 1 and (gap > 0).mean() < 2e-3, ((gap > 0).mean(), gap.max())


def test_a_killed_waveform_build_resumes_to_the_same_files(corpus, waves, tmp_path):
    out, _ = waves
    codec = open_cache(out).storage.codec
    script = (
        "import sys\nfrom chirpid_io.cache import build_cache\nfrom chirpid_io.cache.format import WaveformStorage\n"
        "from test_cache import CONFIG\nfrom killpoint import kill_after_commits\n"
        "kill_after_commits(3)  # killed from inside after three commits: exact on any machine\n"
        f"build_cache(sys.argv[1], sys.argv[2], CONFIG, storage=WaveformStorage(codec={codec!r}, chunk_seconds=0.25, "
        "shard_chunks=8), workers=0, progress=False)\n")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, str(corpus), str(killed)],
                            env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    report = build_waves(corpus, killed, open_cache(out).storage)
    assert 0 < report.recordings_added < 10 and report.recordings_already_cached > 0
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name not in ("zarr.json", "build-journal.jsonl", "build.lock")
                          and not p.name.endswith(".parquet")}
    assert files(killed) == files(out)  # every shard and array byte for byte
    a, b = open_cache(killed), open_cache(out)
    assert a.recordings.drop(["content_hash"]).to_pylist() == b.recordings.drop(["content_hash"]).to_pylist()
    assert a.attrs["band_sums"] == b.attrs["band_sums"]


def test_verify_names_a_damaged_and_a_missing_chunk_of_audio(waves, tmp_path):
    import shutil

    out, _ = waves
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / "waves" / "c" / "1" / "0"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    found = verify_cache(copy)
    assert not found.ok and any("chunk 0 of shard file waves/c/1/0" in p and "CRC32C" in p for p in found.problems)
    with pytest.raises(CacheError, match="windows 8-8 could not be read"):
        open_cache(copy).read([8])
    (copy / "waves" / "c" / "2" / "0").unlink()
    with pytest.raises(CacheError, match="shard files its .* windows need are missing"):
        open_cache(copy)


def test_zarr_reads_a_waveform_cache(waves):
    out, _ = waves
    cache = open_cache(out)
    np.testing.assert_array_equal(cache.specs[:], cache.read(np.arange(len(cache))))


def test_the_cli_builds_a_waveform_cache_and_refuses_mixed_options(corpus, tmp_path, capsys):
    from chirpid_io.cli import main

    out = tmp_path / "cli"
    assert main(["build-cache", str(corpus), str(out), "--store", "waveform", "--wave-codec", "delta-zstd",
                 "--sample-rate", "16000", "--window-seconds", "1", "--n-fft", "512", "--win-length", "512", "--hop-length", "128",
                 "--n-mels", "32", "--fmax", "8000", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "chunks: " in text and " h of audio added" in text
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "waveforms: 10 recordings" in shown and "chirpid.pcm(method=delta-zstd" in shown
    assert "MiB per audio hour; int16 PCM: 109.9" in shown
    for args, words in ((["--wave-codec", "flac"], "add --store waveform"),
                        (["--store", "waveform", "--level", "5"], "a waveform cache takes the --wave-* options"),
                        (["--store", "spectrogram"], "is a waveform cache; an append cannot make it a spectrogram")):
        assert main(["build-cache", str(corpus), str(out), *args, "--sample-rate", "16000", "--window-seconds", "1", "--win-length", "512",
                     "--n-fft", "512", "--hop-length", "128", "--n-mels", "32", "--fmax", "8000"]) == 1
        assert words in capsys.readouterr().err


# -- the crop loader ---------------------------------------------------------------------
def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_crop_batches_are_deterministic_resumable_and_the_same_from_workers(waves):
    from chirpid_io.loaders import Augment, make_loader

    out, _ = waves
    args = dict(device="cpu", seed=3, augment=Augment(), wave_augment=WaveAugment(gain_db=6, mixup_alpha=0.4),
                crop_weighting="duration")
    loader = make_loader(out, 4, **args)
    first = batches(loader)
    second = batches(loader)  # the next epoch: other crops
    assert not torch.equal(first[0][0], second[0][0])
    again = make_loader(out, 4, **args)
    for (x, y), (x2, y2) in zip(first, batches(again)):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    resumed = make_loader(out, 4, **args)
    iterator = iter(resumed)
    next(iterator), next(iterator)
    state = resumed.state_dict()
    fresh = make_loader(out, 4, **args)
    fresh.load_state_dict(state)
    rest = batches(fresh)
    assert len(rest) == len(first) - 2
    for (x, y), (x2, y2) in zip(first[2:], rest):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    workers = make_loader(out, 4, num_workers=1, **args)
    for (x, y), (x2, y2) in zip(first, batches(workers)):  # transformed in a worker, in shared memory
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_validation_scores_the_fixed_windows_and_model_input_is_normalised(waves):
    from chirpid_io.loaders import make_loader

    out, _ = waves
    cache = open_cache(out)
    val = make_loader(cache, 5, device="cpu", shuffle=False)
    _, samples = cache.wave_spans()
    from chirpid_io.streaming import cover_count

    assert sum(len(y) for _, y in val) == sum(cover_count(int(n), CONFIG.n_samples, CONFIG.hop_samples)
                                             for n in samples)
    x, _ = next(iter(make_loader(cache, 64, device="cpu", shuffle=False)))
    assert x.shape[1:] == (1, *CONFIG.shape)
    # normalised by the cache's statistics: per band, mean near 0 over many windows
    assert abs(float(x.mean())) < 0.5


def test_background_noise_from_a_waveform_cache_is_mixed_in(waves, corpus, tmp_path):
    from chirpid_io.loaders import make_loader

    out, _ = waves
    noise_root = tmp_path / "noise"
    (noise_root / "n").mkdir(parents=True)
    sf.write(noise_root / "n" / "hiss.wav", np.random.default_rng(4).standard_normal(16000 * 3).astype(np.float32)
             * 0.1, 16000)
    noise = tmp_path / "noise-cache"
    build_waves(noise_root, noise)
    quiet = make_loader(out, 4, device="cpu", seed=1)
    noisy = make_loader(out, 4, device="cpu", seed=1, wave_augment=WaveAugment(noise_p=1.0, snr_low_db=0,
                                                                               snr_high_db=0), background=noise)
    (x, _), (x2, _) = next(iter(quiet)), next(iter(noisy))
    assert not torch.equal(x, x2)
    with pytest.raises(ConfigError, match="no background noise was given"):
        make_loader(out, 4, device="cpu", wave_augment=WaveAugment(noise_p=0.5))
    spec = tmp_path / "spec"
    build_cache(corpus, spec, CONFIG, storage=STORAGE, workers=0, progress=False)
    with pytest.raises(ConfigError, match="crops, waveform augmentation and background noise need a waveform cache"):
        make_loader(spec, 4, crop_seconds=2.0)
    with pytest.raises(ConfigError, match="give a waveform cache .* or a folder"):
        make_loader(out, 4, wave_augment=WaveAugment(noise_p=0.5), background=spec)


def test_waveform_parts_merge_into_the_single_build(corpus, tmp_path):
    from chirpid_io.cache.merge import merge_cache

    single = tmp_path / "single"
    build_waves(corpus, single)
    for i in range(2):
        build_waves(corpus, tmp_path / "parts", part=(i, 2))
    merged = tmp_path / "merged"
    merge_cache(merged, sorted((tmp_path / "parts").iterdir()), progress=False)
    a, b = open_cache(merged), open_cache(single)
    np.testing.assert_array_equal(a.read(np.arange(len(a))), b.read(np.arange(len(b))))
    assert a.recordings.to_pylist() == b.recordings.to_pylist()
    assert a.windows.to_pylist() == b.windows.to_pylist()
    assert a.attrs["band_sums"] == b.attrs["band_sums"] and a.attrs["stats"] == b.attrs["stats"]
    assert verify_cache(merged).ok


def test_train_on_a_waveform_cache_then_predict_serves_it(waves, corpus, tmp_path, capsys):
    from chirpid_io.cli import main

    out, _ = waves
    registry = tmp_path / "registry"
    assert main(["train", str(out), str(registry), "--epochs", "1", "--batch-size", "4", "--model-arg", "width=8",
                 "--wave-gain-db", "3", "--wave-mixup-alpha", "0.4", "--no-report", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "epoch   1" in text and "registered cache v1" in text
    log = next((registry / "runs").glob("*.jsonl")).read_text().splitlines()
    assert json.loads(log[0])["config"]["wave_augment"]["mixup_alpha"] == 0.4
    assert main(["predict", str(registry), str(corpus / "alpha" / "alpha_0.wav"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["windows"] == 3 and summary["label"] in open_cache(out).class_names


def test_a_crop_loader_that_would_give_no_batch_is_refused(waves):
    from chirpid_io.loaders import make_loader

    out, _ = waves
    with pytest.raises(ConfigError, match="crops per epoch with batch_size 1000 and drop_last=True gives no batch"):
        make_loader(out, 1000, drop_last=True, device="cpu")
    assert len(make_loader(out, 1000, device="cpu")) == 1  # without drop_last: one short batch
