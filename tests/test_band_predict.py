"""chirpid.band_predict (chirpid_io.cache.predict): a predictor chosen per mel band.

Checked against a per-row reference written with plain Python integers, on real windows
(the bundled recordings through the default recipe) and on hostile ones; through zarr
itself, the direct shard path, a cache built with it, the loader's device-side decode
(run on the CPU here) and verify.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from chirpid_io.cache import StorageOptions, build_cache, open_cache, verify_cache  # noqa: E402
from chirpid_io.cache import predict  # noqa: E402
from chirpid_io.cache.codec import register  # noqa: E402
from chirpid_io.config import SpectrogramConfig  # noqa: E402
from chirpid_io.errors import CacheError  # noqa: E402
from chirpid_io.manifest import samples_dir  # noqa: E402

register()


def _reference(window: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Per band: each mode's differences, its cost (sum of |signed byte|), the cheapest mode
    (ties to 3, 1, 2, 0), with Python ints one pixel at a time."""
    n_mels, frames = window.shape
    x = [[int(v) for v in row] for row in window]

    def value(i, j):
        return x[i][j] if i >= 0 and j >= 0 else 0

    modes, rows = [], []
    for i in range(n_mels):
        options = {}
        for mode in (3, 1, 2, 0):
            row = []
            for j in range(frames):
                v = value(i, j)
                if mode & 2:
                    v -= value(i - 1, j)
                if mode & 1:
                    v -= value(i, j - 1) - (value(i - 1, j - 1) if mode & 2 else 0)
                row.append(v % 256)
            cost = sum(min(b, 256 - b) for b in row)
            options[mode] = (cost, row)
        best = min((3, 1, 2, 0), key=lambda m: options[m][0])  # min keeps the first of equals
        modes.append(best)
        rows.append(options[best][1])
    return modes, np.array(rows, dtype=np.uint8)


@pytest.fixture(scope="module")
def real_windows():
    """Six real windows (224 x 313) from bundled recordings, default recipe, rounded."""
    from chirpid_io.audio import load, windows
    from chirpid_io.kernels import mel_spectrogram, to_storage

    config = SpectrogramConfig().replace(pad_short=True)
    paths = [samples_dir() / "mixed_birds" / "birds_10s.wav", samples_dir() / "bengalese_finch" / "bl26lb16.wav",
             sorted((samples_dir() / "great_tit").glob("*.wav"))[0]]  # 32 kHz, 32 kHz, 22.05 kHz
    waves = np.concatenate([windows(load(p, config.sample_rate), config).samples for p in paths])
    return to_storage(mel_spectrogram(waves, config).numpy(), "uint8")


def _hostile():
    rng = np.random.default_rng(11)
    checker = (np.indices((9, 13)).sum(0) % 2 * 255).astype(np.uint8)
    return [np.zeros((3, 8, 10), np.uint8), np.full((2, 8, 10), 255, np.uint8),
            rng.integers(0, 256, (3, 8, 10), dtype=np.uint8), checker[None],
            rng.integers(0, 256, (2, 20, 3), dtype=np.uint8),  # more bands than frames: 7 header rows
            rng.integers(0, 256, (1, 1, 1), dtype=np.uint8), rng.integers(0, 256, (1, 5, 1), dtype=np.uint8),
            np.repeat(rng.integers(0, 256, (1, 8, 1), dtype=np.uint8), 10, axis=2),  # flat along frames
            np.repeat(rng.integers(0, 256, (1, 1, 10), dtype=np.uint8), 8, axis=1)]  # flat along bands


def test_encoding_matches_a_pixel_by_pixel_reference(real_windows):
    cases = [w for batch in _hostile() for w in batch] + [real_windows[0][:40, :60], real_windows[-1][150:, 200:]]
    for window in cases:
        stored = predict.encode(window)
        header = predict.header_rows(*window.shape)
        modes, rows = _reference(window)
        assert stored.shape == (window.shape[0] + header, window.shape[1])
        assert stored[:header].reshape(-1)[: window.shape[0]].tolist() == modes
        assert not stored[:header].reshape(-1)[window.shape[0]:].any()
        np.testing.assert_array_equal(stored[header:], rows)


def test_round_trip_is_lossless_on_real_and_hostile_windows(real_windows):
    for batch in [real_windows, real_windows[2], *_hostile()]:
        stored = predict.encode(batch)
        np.testing.assert_array_equal(predict.decode(stored), batch)
        out = np.full(batch.shape, 7, np.uint8)
        assert predict.decode(stored, out=out) is out
        np.testing.assert_array_equal(out, batch)
    modes = predict.encode(real_windows)[:, 0, :224]
    assert {1, 2, 3} <= set(np.unique(modes).tolist())  # real windows mix the predictors


def test_the_device_decode_equals_the_cpu_decode_bit_for_bit(real_windows):
    for batch in [real_windows, *[b for b in _hostile() if b.ndim == 3]]:
        stored = predict.encode(batch)
        got = predict.undo_stored(torch.from_numpy(stored))
        assert got.dtype == torch.int32
        np.testing.assert_array_equal(got.numpy(), batch)
    # whatever the bytes (mode bytes above 3 included), both decoders agree
    junk = np.random.default_rng(5).integers(0, 256, (4, 9, 8), dtype=np.uint8)
    np.testing.assert_array_equal(predict.undo_stored(torch.from_numpy(junk)).numpy(), predict.decode(junk))


def test_zarr_writes_and_reads_the_codec(tmp_path, real_windows):
    from chirpid_io.cache.predict import BandPredict

    data = real_windows[:5, :50, :70]
    array = zarr.create_array(tmp_path / "a", shape=data.shape, dtype="uint8", chunks=(2, 50, 70),
                              filters=[BandPredict()])
    array[:] = data
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a")[:], data)
    with pytest.raises(ValueError, match="uint8"):
        zarr.create_array(tmp_path / "f", shape=(2, 4, 4), dtype="float16", filters=[BandPredict()])
    with pytest.raises(ValueError, match="no configuration"):
        BandPredict.from_dict({"name": predict.NAME, "configuration": {"axis": 1}})


CONFIG = SpectrogramConfig(sample_rate=16_000, window_seconds=1.0, hop_seconds=1.0, n_mels=32, fmax=8_000,
                           n_fft=512, win_length=512, hop_length=128, energy_threshold=None)


@pytest.fixture(scope="module")
def per_band_cache(tmp_path_factory):
    src = samples_dir()
    out = tmp_path_factory.mktemp("cache") / "c"
    build_cache(src, out, CONFIG, workers=0, progress=False, backend="torch", device="cpu",
                storage=StorageOptions(delta="per-band", chunk_windows=2, shard_windows=8))
    return out


def test_a_per_band_cache_reads_like_a_band_time_one(per_band_cache, tmp_path):
    src = samples_dir()
    build_cache(src, tmp_path / "ref", CONFIG, workers=0, progress=False, backend="torch", device="cpu",
                storage=StorageOptions(chunk_windows=2, shard_windows=8))
    cache, ref = open_cache(per_band_cache), open_cache(tmp_path / "ref")
    assert len(cache) == len(ref) > 20 and cache.storage.delta == "per-band"
    order = np.random.default_rng(0).permutation(len(cache))
    np.testing.assert_array_equal(cache.read(order), ref.read(order))
    np.testing.assert_array_equal(cache.specs[:], ref.specs[:])  # through zarr itself
    assert verify_cache(per_band_cache).ok
    meta = (per_band_cache / "specs" / "zarr.json").read_text()
    assert '"chirpid.band_predict"' in meta and "chirpid.band_delta" not in meta


def test_the_loader_undoes_the_stored_form_like_the_cpu(per_band_cache):
    from chirpid_io.loaders import Augment, ChunkShuffleSampler, SpectrogramDataset, make_loader
    from chirpid_io.loaders.loader import SpectrogramLoader

    cache = open_cache(per_band_cache)
    windows = np.array([5, 1, 1, len(cache) - 1, 0])
    stored = cache.read(windows, residuals=True)
    assert stored.shape == (5, 33, cache.config.shape[1]) == (5, *cache.stored_shape)
    whole = cache.read(windows)
    np.testing.assert_array_equal(cache.undo_residuals(torch.from_numpy(stored)).numpy(), whole)
    plain = make_loader(cache, 4, device="cpu", seed=3, augment=Augment())
    dataset = SpectrogramDataset(cache, residuals=True)
    loader = SpectrogramLoader(dataset, ChunkShuffleSampler(dataset, cache.chunk_windows, seed=3), 4,
                               device="cpu", seed=3, augment=Augment())
    pairs = list(zip(plain, loader))
    assert len(pairs) == len(plain)
    for (x, y), (xr, yr) in pairs:
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_verify_names_a_damaged_per_band_chunk(per_band_cache, tmp_path):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(per_band_cache, copy)
    shard = copy / "specs" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[40] ^= 0x01
    shard.write_bytes(bytes(raw))
    report = verify_cache(copy)
    assert not report.ok and any("chunk 0 of shard file specs/c/0/0/0" in p for p in report.problems)
    with pytest.raises(CacheError, match="CRC32C"):
        open_cache(copy).read([0])


def test_plain_zarr_reads_a_per_band_cache_through_the_entry_point(per_band_cache):
    names = {e.name for e in importlib.metadata.entry_points(group="zarr.codecs")}
    if predict.NAME not in names:
        pytest.skip(f"the installed chirpid-io predates {predict.NAME}: reinstall it (pip install -e .)")
    code = "import sys, zarr, numpy; numpy.save(sys.stdout.buffer, zarr.open_array(sys.argv[1])[:])"
    out = subprocess.run([sys.executable, "-c", code, str(per_band_cache / "specs")], capture_output=True, check=True)
    import io

    np.testing.assert_array_equal(np.load(io.BytesIO(out.stdout)), open_cache(per_band_cache).read(
        np.arange(len(open_cache(per_band_cache)))))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loader_on_a_per_band_cache_equals_cpu(per_band_cache, real_windows):
    from chirpid_io.loaders import Augment, make_loader

    stored = predict.encode(real_windows)
    got = predict.undo_stored(torch.from_numpy(stored).cuda())
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), real_windows)
    cache = open_cache(per_band_cache)
    gpu = make_loader(cache, 8, device="cuda", seed=2, augment=Augment(gain_db=3.0))
    cpu = make_loader(cache, 8, device="cpu", seed=2, augment=Augment(gain_db=3.0))
    assert gpu.dataset.residuals
    for (xg, yg), (xc, yc) in zip(gpu, cpu):
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-5)
        assert torch.equal(yg.cpu(), yc)
