"""The old PNG/CSV path: legacy_preprocess, read_legacy_dataset, LegacyPNGDataset.

The oracle is librosa itself, called here step by step on the same windows, so a change
of recipe, rounding, orientation, filter or naming in chirpid_io.legacy fails a test.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")
Image = pytest.importorskip("PIL.Image")
sf = pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")

from chirpid_io import legacy  # noqa: E402
from chirpid_io.errors import ManifestError  # noqa: E402

SR = 32_000
N = 160_000


def _write(path, wave, rate, subtype="FLOAT"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate, subtype=subtype)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Two classes; the comments say what the old recipe must do with each window."""
    root = tmp_path_factory.mktemp("legacy_src")
    rng = np.random.default_rng(1234)
    t = np.arange(12 * SR) / SR
    # a1: window 0 a loud tone (kept), window 1 quiet noise (energy-filtered), 2 s tail.
    a1 = 0.5 * np.sin(2 * np.pi * 2000 * t) + 0.01 * rng.standard_normal(t.size)
    a1[5 * SR:10 * SR] = 0.001 * rng.standard_normal(5 * SR)
    _write(root / "Alpha_bird" / "a1.wav", a1, SR)
    # a2: 10.5 s of steady noise + chirp at 44.1 kHz (resampled), 16-bit: 2 windows kept.
    t2 = np.arange(int(10.5 * 44_100)) / 44_100
    a2 = 0.2 * rng.standard_normal(t2.size) + 0.3 * np.sin(2 * np.pi * (500 + 300 * t2) * t2)
    _write(root / "Alpha_bird" / "a2.wav", np.clip(a2, -1, 1), 44_100, "PCM_16")
    # b1: 11 s of noise at 22.05 kHz: 2 windows kept.
    _write(root / "Beta_bird" / "b1.wav", 0.1 * rng.standard_normal(11 * 22_050), 22_050)
    # b2: 6 s at ~1e-9: passes the (relative) energy filter, dropped as silent (peak < 1e-8).
    _write(root / "Beta_bird" / "b2.wav", 1e-9 * rng.standard_normal(6 * SR), SR)
    # shorter than one window: decoded, no window; and a file that is not audio.
    _write(root / "Beta_bird" / "short.wav", 0.1 * rng.standard_normal(3 * SR), SR)
    (root / "Beta_bird" / "broken.wav").write_bytes(b"not a wav file at all")
    return root


def _quiet_preprocess(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's audioread fallback warns on broken.wav
        return legacy.legacy_preprocess(*args, **kwargs)


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy_out")
    return out, _quiet_preprocess(source, out)


def _expected_windows(source, cap=None):
    """[(png name, class id, window samples)] computed with librosa directly."""
    out, index = [], 0
    for class_id, cls in enumerate(["Alpha_bird", "Beta_bird"]):
        count = 0
        for name in ["a1.wav", "a2.wav"] if class_id == 0 else ["b1.wav", "b2.wav", "short.wav"]:
            y, _ = librosa.load(source / cls / name, sr=SR)
            thr = 0.75 * np.mean(librosa.feature.rms(y=y, frame_length=2048, hop_length=512))
            for start in range(0, len(y) - N + 1, N):
                if cap is not None and count >= cap:
                    break
                w = y[start:start + N]
                if np.sqrt(np.mean(w**2)) > thr:
                    if np.max(np.abs(w)) >= 1e-8:
                        out.append((f"{name[:-4]}_{index}_{index}.png", class_id, w))
                    index += 1
                    count += 1
    return out


def _old_pixels(window):
    s = librosa.feature.melspectrogram(
        y=window, sr=SR, n_fft=2048, hop_length=512, n_mels=224, fmin=0, fmax=16000,
        pad_mode="constant",
    )
    db = librosa.power_to_db(s, ref=np.max, amin=1e-10, top_db=80)
    scaled = (db - db.min()) / (db.max() - db.min())
    return scaled, np.uint8(np.clip(scaled, 0, 1) * 255)


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def test_pngs_are_the_old_recipe_with_truncation(source, built):
    out, summary = built
    expected = _expected_windows(source)
    assert [e[0] for e in expected] == ["a1_0_0.png", "a2_1_1.png", "a2_2_2.png", "b1_3_3.png", "b1_4_4.png"]
    assert sorted(p.name for p in (out / "spectrograms").iterdir()) == sorted(e[0] for e in expected)
    rounded_somewhere = False
    for name, _, window in expected:
        with Image.open(out / "spectrograms" / name) as img:
            assert img.mode == "L" and img.size == (313, 224)
            pixels = np.asarray(img)
        scaled, want = _old_pixels(window)
        np.testing.assert_array_equal(pixels, want)
        rounded_somewhere |= bool((np.rint(scaled * 255) != pixels).any())
        # Row 0 is the lowest mel band: a 2 kHz tone window has its peak row where librosa puts it.
        assert pixels.mean(axis=1).argmax() == want.mean(axis=1).argmax()
    assert rounded_somewhere, "PNG values must truncate (uint8(v*255)), not round"


def test_csvs_and_summary(source, built):
    out, summary = built
    expected = _expected_windows(source)
    header, rows = _rows(out / "spectrograms.csv")
    assert header == ["filename", "class_id", "author"]
    assert rows == [[name, str(cid), "unknown"] for name, cid, _ in expected]
    assert _rows(out / "classes.csv") == (
        ["class_id", "scientific_name", "common_name"],
        [["0", "Alpha_bird", "Alpha_bird"], ["1", "Beta_bird", "Beta_bird"]],
    )
    header, recs = _rows(out / "recordings.csv")
    assert header == list(legacy.RECORDING_COLUMNS)
    usable = {r[3]: int(r[5]) for r in recs}
    assert usable == {"Alpha_bird/a1.wav": 1, "Alpha_bird/a2.wav": 2, "Beta_bird/b1.wav": 2, "Beta_bird/b2.wav": 0}
    assert summary.written == 5
    assert summary.recordings == 5  # broken.wav failed; short.wav decoded but has no window
    assert [f for f, _ in summary.failed] == ["Beta_bird/broken.wav"]
    assert summary.dropped_energy == 1  # a1's quiet middle window
    assert summary.dropped_silent == 1  # b2's 1e-9 window
    assert summary.per_class == {"Alpha_bird": 3, "Beta_bird": 2}


def test_per_class_cap_fills_recording_by_recording(source, tmp_path):
    summary = _quiet_preprocess(source, tmp_path, cap_per_class=1)
    expected = _expected_windows(source, cap=1)
    assert [e[0] for e in expected] == ["a1_0_0.png", "b1_1_1.png"]
    _, rows = _rows(tmp_path / "spectrograms.csv")
    assert [r[0] for r in rows] == ["a1_0_0.png", "b1_1_1.png"]
    # a1's second window, a2's two, b1's second and b2's one were never examined
    assert summary.capped == 5 and summary.written == 2


def test_read_legacy_dataset_matches_the_pngs(built):
    out, _ = built
    data = legacy.read_legacy_dataset(out / "spectrograms.csv")
    _, rows = _rows(out / "spectrograms.csv")
    assert data.images.dtype == np.uint8 and data.images.shape == (5, 224, 313)
    for image, row in zip(data.images, rows):
        with Image.open(out / "spectrograms" / row[0]) as img:
            np.testing.assert_array_equal(image, np.asarray(img))
    assert data.labels.dtype == np.int64
    assert data.labels.tolist() == [int(r[1]) for r in rows]
    assert data.filenames == [r[0] for r in rows] and data.authors == ["unknown"] * 5
    assert data.class_names == {0: "Alpha_bird", 1: "Beta_bird"}


def test_read_legacy_dataset_errors_name_the_problem(built, tmp_path):
    out, _ = built
    _, rows = _rows(out / "spectrograms.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,class_id\n" + "".join(f"{r[0]},{r[1]}\n" for r in rows))
    with pytest.raises(ManifestError, match="'author'"):
        legacy.read_legacy_dataset(bad, out / "spectrograms")
    gone = tmp_path / "gone.csv"
    gone.write_text("filename,class_id,author\nnope_9_9.png,0,x\n" + f"{rows[0][0]},0,x\n")
    with pytest.raises(ManifestError, match="nope_9_9.png"):
        legacy.read_legacy_dataset(gone, out / "spectrograms")


def test_dataset_items_are_standardised_pngs(built):
    out, _ = built
    ds = legacy.LegacyPNGDataset(out / "spectrograms.csv", out / "spectrograms", augment=False, seed=0)
    _, rows = _rows(out / "spectrograms.csv")
    pngs = np.stack([np.asarray(Image.open(out / "spectrograms" / r[0])) for r in rows]) / 255.0
    # fewer than 1000 items: the sample is all of them
    assert ds.mean == pytest.approx(pngs.mean(), rel=1e-6)
    assert ds.std == pytest.approx(pngs.std(ddof=1) + 1e-8, rel=1e-6)
    assert len(ds) == 5
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.float32 and tuple(x.shape) == (1, 224, 313)
        assert y == int(rows[i][1])
        np.testing.assert_allclose(x[0].numpy(), (pngs[i] - pngs.mean()) / ds.std, atol=1e-5)


def test_augmentation_masks_whole_bands_with_zero(built):
    out, _ = built
    ds = legacy.LegacyPNGDataset(out / "spectrograms.csv", out / "spectrograms", seed=0)
    plain = legacy.LegacyPNGDataset(
        out / "spectrograms.csv", out / "spectrograms", augment=False, stats=(ds.mean, ds.std)
    )
    ref = plain[0][0][0]
    torch.manual_seed(0)
    masked_draws = 0
    for _ in range(20):
        x = ds[0][0][0]
        changed = x != ref
        assert (x[changed] == 0).all()
        rows, cols = changed.all(dim=1), changed.all(dim=0)
        assert torch.equal(changed, rows[:, None] | cols[None, :])
        assert rows.sum() < 14 and cols.sum() < 39  # torchaudio draws widths in [0, param)
        masked_draws += bool(changed.any())
    assert 8 <= masked_draws <= 20  # p = 0.8, minus draws of width 0


def test_legacy_loader_batches(built):
    out, _ = built
    ds = legacy.LegacyPNGDataset(out / "spectrograms.csv", out / "spectrograms", augment=False, seed=0)
    train = list(legacy.legacy_loader(ds, batch_size=2, num_workers=0))
    assert [tuple(x.shape) for x, _ in train] == [(2, 1, 224, 313)] * 2  # drop_last
    val = list(legacy.legacy_loader(ds, batch_size=2, train=False, num_workers=0))
    assert sum(len(y) for _, y in val) == 5
    assert torch.cat([y for _, y in val]).tolist() == ds.labels
    np.testing.assert_array_equal(val[0][0][1].numpy(), ds[1][0].numpy())
