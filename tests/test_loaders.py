"""chirpid_io.loaders: dataset, chunk-aware sampler, splits, device loader, augmentation.

Two small synthetic caches are built once for the module (1 s windows, 32 mel bands,
4 windows per chunk so there are many chunks). Every window holds its own noise, so a
window's stored bytes identify it: the end-to-end tests recover which window each
output row is, whatever the order, workers or shuffling.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
sf = pytest.importorskip("soundfile")

from chirpid_io.cache import StorageOptions, build_cache, open_cache  # noqa: E402
from chirpid_io.config import SpectrogramConfig  # noqa: E402
from chirpid_io.errors import ConfigError  # noqa: E402
from chirpid_io.loaders import (  # noqa: E402
    STD_FLOOR, Augment, ChunkShuffleSampler, SpectrogramDataset, group_kfold, group_split, make_loader,
    window_groups,
)
from chirpid_io.loaders.augment import apply_masks, draw_plan  # noqa: E402

CONFIG = SpectrogramConfig(
    sample_rate=16_000, window_seconds=1.0, hop_seconds=1.0, n_mels=32, fmax=8_000, n_fft=512,
    win_length=512, hop_length=128, energy_threshold=None,
)
CLASSES = ("alpha", "beta", "gamma")
RECORDINGS_PER_CLASS = 6
SECONDS = 8  # -> 8 windows per recording, 144 windows in all


def _write_source(root, seconds=SECONDS, recordings=RECORDINGS_PER_CLASS):
    rng = np.random.default_rng(7)
    rows = ["path,label,group"]
    t = np.arange(16_000 * seconds) / 16_000
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for r in range(recordings):
            tone = 0.3 * np.sin(2 * np.pi * (600 + 1500 * c + 90 * r) * t)
            wave = tone + 0.1 * rng.standard_normal(t.size)
            sf.write(root / name / f"rec{r}.wav", wave.astype(np.float32), 16_000)
            rows.append(f"{name}/rec{r}.wav,{name},author{(r + c) % 4}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    src = _write_source(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("cache") / "c"
    build_cache(src, out, CONFIG, workers=0, progress=False, backend="torch", device="cpu",
                storage=StorageOptions(chunk_windows=4, shard_windows=16))
    return open_cache(out)


@pytest.fixture(scope="module")
def cache16(tmp_path_factory):
    src = _write_source(tmp_path_factory.mktemp("src16"), seconds=3, recordings=2)
    out = tmp_path_factory.mktemp("cache16") / "c"
    build_cache(src, out, CONFIG.replace(storage_dtype="float16"), workers=0, progress=False,
                backend="torch", device="cpu", storage=StorageOptions(chunk_windows=4, shard_windows=8))
    return open_cache(out)


@pytest.fixture(scope="module")
def stored(cache):
    return cache.specs[:]


def _identify(stored, x):
    """Cache window index of each row of a normalize=False, augment=None batch."""
    index = {row.tobytes(): i for i, row in enumerate(stored)}
    assert len(index) == len(stored), "synthetic windows should all differ"
    rows = np.rint(x.numpy()[:, 0] * 255).astype(np.uint8)
    return [index[row.tobytes()] for row in rows]


def _chunks_per_batch(order, chunk_windows, batch):
    return [len(np.unique(np.asarray(order[i:i + batch]) // chunk_windows)) for i in range(0, len(order), batch)]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("which", ["uint8", "float16"])
def test_batches_equal_direct_cache_reads(cache, cache16, which):
    c = cache if which == "uint8" else cache16
    loader = make_loader(c, 10, device="cpu", normalize=False, seed=5)
    order = loader.sampler.order(0)
    seen = 0
    for x, y in loader:
        want_idx = order[seen:seen + len(y)]
        raw = c.read(want_idx)
        assert x.dtype == torch.float32 and x.shape == (len(want_idx), 1, *c.config.shape)
        want = raw.astype(np.float32) * np.float32(c.value_scale)
        np.testing.assert_array_equal(x.numpy()[:, 0], want)
        np.testing.assert_array_equal(y.numpy(), c.labels[want_idx])
        assert y.dtype == torch.int64
        seen += len(y)
    assert seen == len(c)


def test_stored_differences_are_summed_up_by_the_loader(cache, cache16):
    """The CUDA path reads the stored differences and sums them up on the device; the same
    code runs on the CPU here, and must give exactly what reading whole windows gives."""
    from chirpid_io.loaders.loader import SpectrogramLoader

    windows = np.array([7, 3, 3, len(cache) - 1, 0])
    assert cache.delta_axes == (1, 2) and cache16.delta_axes == ()  # float16: no differences
    residuals = cache.read(windows, residuals=True)
    whole = cache.read(windows)
    assert not np.array_equal(residuals, whole)
    summed = np.cumsum(np.cumsum(residuals, axis=2, dtype=np.uint8), axis=1, dtype=np.uint8)
    np.testing.assert_array_equal(summed, whole)
    few = np.array([3, 0, 3, len(cache16) - 1])
    np.testing.assert_array_equal(cache16.read(few, residuals=True), cache16.read(few))

    for c in (cache, cache16):
        plain = make_loader(c, 10, device="cpu", seed=3, augment=Augment())
        dataset = SpectrogramDataset(c, residuals=True)
        loader = SpectrogramLoader(dataset, ChunkShuffleSampler(dataset, c.chunk_windows, seed=3), 10,
                                   device="cpu", seed=3, augment=Augment())
        pairs = list(zip(plain, loader))
        assert len(pairs) == len(plain)
        for (x, y), (xr, yr) in pairs:
            assert torch.equal(x, xr) and torch.equal(y, yr)


def test_normalisation_matches_float64(cache):
    loader = make_loader(cache, 16, device="cpu", shuffle=False)
    x, _ = next(iter(loader))
    raw = cache.read(np.arange(16)).astype(np.float64) / 255
    mean, std = cache.stats["mean"], np.maximum(cache.stats["std"], STD_FLOOR)
    want = (raw - mean[None, :, None]) / std[None, :, None]
    np.testing.assert_allclose(x.numpy()[:, 0], want, rtol=0, atol=2e-5)
    # the cache's stats are those of the data: normalised bands have mean ~0 and std ~1
    everything = torch.cat([x for x, _ in make_loader(cache, 50, device="cpu", shuffle=False)])
    np.testing.assert_allclose(everything.double().mean(dim=(0, 1, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(everything.double().std(dim=(0, 1, 3), unbiased=False).numpy(), 1, atol=1e-3)


def test_custom_stats_and_std_floor(cache):
    mean = np.linspace(0.1, 0.5, 32)
    std = np.full(32, 0.2)
    std[3] = 0.0  # a band constant in "training": divided by the floor, not by zero
    loader = make_loader(cache, 8, device="cpu", shuffle=False, normalize={"mean": mean, "std": std})
    x, _ = next(iter(loader))
    raw = cache.read(np.arange(8)).astype(np.float64) / 255
    want = (raw - mean[None, :, None]) / np.maximum(std, STD_FLOOR)[None, :, None]
    np.testing.assert_allclose(x.numpy()[:, 0], want, rtol=1e-6, atol=1e-4)
    with pytest.raises(ConfigError, match="32 values"):
        make_loader(cache, 8, normalize={"mean": mean[:5], "std": std[:5]})


# --------------------------------------------------------------------------- coverage


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on 2 cores
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("workers", [0, 1, 3])
def test_every_window_once_per_epoch(cache, stored, shuffle, workers):
    loader = make_loader(cache, 20, device="cpu", shuffle=shuffle, normalize=False, num_workers=workers, seed=2)
    assert len(loader) == 8  # 144 windows: 7 full batches and one of 4
    epochs = []
    for _ in range(2):
        got = []
        for x, y in loader:
            ids = _identify(stored, x)
            np.testing.assert_array_equal(y.numpy(), cache.labels[ids])
            got += ids
        assert sorted(got) == list(range(len(cache)))
        epochs.append(got)
    assert loader.epoch == 2  # a full pass advances the epoch
    if shuffle:
        assert epochs[0] != epochs[1]
        assert epochs[0] == loader.sampler.order(0).tolist()  # workers keep the sampler's order
    else:
        assert epochs[0] == epochs[1] == list(range(len(cache)))


def test_subset_indices_and_validation_keeps_everything(cache, stored):
    subset = np.arange(3, 140, 2)  # 69 windows
    loader = make_loader(cache, 10, indices=subset, device="cpu", shuffle=False, normalize=False)
    got = [i for x, _ in loader for i in _identify(stored, x)]
    assert got == subset.tolist()
    train = make_loader(cache, 10, indices=subset, device="cpu", normalize=False, drop_last=True)
    assert len(train) == 6 and sum(len(y) for _, y in train) == 60
    with pytest.raises(ConfigError, match="validation"):
        make_loader(cache, 10, shuffle=False, drop_last=True)


def test_world_size_three_is_disjoint_complete_equal():
    for n in (144, 100):
        parts = [ChunkShuffleSampler(n, 4, seed=1, rank=r, world_size=3) for r in range(3)]
        orders = [list(p) for p in parts]
        assert len({len(o) for o in orders}) == 1 and len(orders[0]) == -(-n // 3)
        together = sum(orders, [])
        assert set(together) == set(range(n))
        assert len(together) - len(set(together)) == (-n) % 3  # wrap-around padding only
        dropped = [list(ChunkShuffleSampler(n, 4, seed=1, rank=r, world_size=3, drop_last=True)) for r in range(3)]
        flat = sum(dropped, [])
        assert all(len(o) == n // 3 for o in dropped) and len(set(flat)) == len(flat) == n // 3 * 3
    # with n divisible, the ranks partition the epoch exactly
    orders = [set(ChunkShuffleSampler(144, 4, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert set.union(*orders) == set(range(144)) and sum(map(len, orders)) == 144


def test_loader_world_size(cache, stored):
    got = []
    for rank in range(3):
        loader = make_loader(cache, 16, device="cpu", normalize=False, rank=rank, world_size=3, seed=4)
        ids = [i for x, _ in loader for i in _identify(stored, x)]
        assert len(ids) == 48
        got += ids
    assert sorted(got) == list(range(144))


# --------------------------------------------------------------------------- order


def test_order_depends_on_seed_and_epoch_only():
    a = ChunkShuffleSampler(200, 8, seed=3)
    b = ChunkShuffleSampler(200, 8, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(6)
    assert list(a) != first and sorted(a) == list(range(200))
    assert list(ChunkShuffleSampler(200, 8, seed=4)) != list(ChunkShuffleSampler(200, 8, seed=3))
    assert list(ChunkShuffleSampler(200, 8, shuffle=False)) == list(range(200))


def test_batches_touch_few_chunks():
    n, chunk, batch = 4096, 16, 64
    sampler = ChunkShuffleSampler(n, chunk, pool_chunks=4, seed=0)
    ours = _chunks_per_batch(sampler.order(), chunk, batch)
    random = _chunks_per_batch(np.random.default_rng(0).permutation(n), chunk, batch)
    # a batch of 64 spans at most two pools of 4 chunks; a random batch ~ 63 chunks
    assert max(ours) <= 2 * 4
    assert np.mean(ours) < 0.2 * np.mean(random)
    # still a real shuffle: consecutive positions are rarely neighbours
    order = sampler.order()
    assert np.mean(np.abs(np.diff(order)) == 1) < 0.2


def test_chunk_locality_on_a_split(cache):
    train, _ = group_split(cache, 0.25)
    dataset = SpectrogramDataset(cache, train)
    sampler = ChunkShuffleSampler(dataset, cache.chunk_windows, pool_chunks=2, seed=0)
    order = sampler.order()
    assert sorted(order.tolist()) == list(range(len(train)))
    windows = dataset.indices[order]
    ours = _chunks_per_batch(windows, cache.chunk_windows, 8)
    assert max(ours) <= 2 * 2


def test_sampler_resume_mid_epoch():
    sampler = ChunkShuffleSampler(150, 8, seed=9)
    sampler.set_epoch(2)
    full = list(sampler)
    it = iter(sampler)
    head = [next(it) for _ in range(37)]
    state = sampler.state_dict()
    assert state["consumed"] == 37 and state["epoch"] == 2
    resumed = ChunkShuffleSampler(150, 8, seed=9)
    resumed.load_state_dict(state)
    assert len(resumed) == 150 - 37
    assert head + list(resumed) == full
    assert len(resumed) == 150  # only the one iteration continues mid-epoch
    with pytest.raises(ConfigError, match="seed"):
        ChunkShuffleSampler(150, 8, seed=1).load_state_dict(state)


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_resume_mid_epoch_continues_exactly(cache, workers):
    kw = dict(device="cpu", seed=11, augment=Augment(gain_db=3.0), num_workers=workers)
    reference = make_loader(cache, 12, **kw)
    reference.set_epoch(1)
    full = list(reference)
    partial = make_loader(cache, 12, **kw)
    partial.set_epoch(1)
    it = iter(partial)
    for _ in range(4):
        next(it)
    state = partial.state_dict()
    assert state == {**state, "epoch": 1, "consumed": 48}
    resumed = make_loader(cache, 12, **kw)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 4
    for (x, y), (xr, yr) in zip(full[4:], rest):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    assert resumed.epoch == 2


def test_abandoned_pass_restarts_the_epoch(cache, stored):
    loader = make_loader(cache, 16, device="cpu", normalize=False, seed=8)
    first = [_identify(stored, batch[0]) for _, batch in zip(range(3), loader)]
    assert loader.state_dict()["consumed"] == 48
    again = [_identify(stored, x) for x, _ in loader]  # a new pass: the whole epoch 0
    assert again[:3] == first and len(sum(again, [])) == 144
    assert loader.epoch == 1 and loader.state_dict()["consumed"] == 0


def test_read_ahead_thread_stops_and_reports_errors(cache, monkeypatch):
    import threading

    def readers():
        return [t for t in threading.enumerate() if t.name == "chirpid-io-read-ahead"]

    loader = make_loader(cache, 8, device="cpu", prefetch=3)
    for _, _ in zip(range(2), loader):  # leave early: the generator closes, the thread ends
        pass
    assert not readers()
    calls = []

    def failing(positions):
        calls.append(positions)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return SpectrogramDataset.read_batch(loader.dataset, positions)

    monkeypatch.setattr(loader.dataset, "read_batch", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        list(loader)
    assert not readers()


# --------------------------------------------------------------------------- augmentation


def test_masks_within_bounds_and_per_sample():
    aug = Augment()  # the old sizes: 14 bins, 39 frames, p 0.8
    plan = draw_plan(aug, 64, 32, 126, np.random.default_rng(0))
    x = apply_masks(torch.ones(64, 1, 32, 126), plan, -5.0)[:, 0]
    masked = (x == -5.0).numpy()
    assert set(np.unique(x.numpy())) <= {1.0, -5.0}
    shapes = set()
    for b in range(64):
        rows = np.flatnonzero(masked[b].all(axis=1))  # bands masked over all frames
        cols = np.flatnonzero(masked[b].all(axis=0))  # frames masked over all bands
        assert len(rows) <= 14 and len(cols) <= 39
        for span in (rows, cols):  # one contiguous span each
            assert len(span) == 0 or span[-1] - span[0] + 1 == len(span)
        expect = np.zeros((32, 126), bool)
        expect[rows] = True
        expect[:, cols] = True
        np.testing.assert_array_equal(masked[b], expect)
        assert len(rows) == plan.freq_width[b] and len(cols) == plan.time_width[b]
        shapes.add((tuple(rows), tuple(cols)))
    assert len(shapes) > 40  # different masks per sample
    untouched = (plan.freq_width == 0) & (plan.time_width == 0)
    assert 0.05 < untouched.mean() < 0.45  # p=0.8 (plus the odd zero-width draw)


def test_loader_augmentation_is_exact_and_reproducible(cache):
    aug = Augment(freq_mask=10, time_mask=30, p=1.0, mask_value=0.0, gain_db=6.0)
    plain = make_loader(cache, 16, device="cpu", seed=1)
    noisy = make_loader(cache, 16, device="cpu", seed=1, augment=aug)
    again = make_loader(cache, 16, device="cpu", seed=1, augment=aug)
    other = make_loader(cache, 16, device="cpu", seed=2, augment=aug)
    (x0, y0), (x1, y1), (x2, _), (x3, _) = (next(iter(l)) for l in (plain, noisy, again, other))
    assert torch.equal(x1, x2)  # same seed, same epoch: same batch
    assert not torch.equal(x1, x3)
    assert torch.equal(y0, y1)
    # rebuild each batch from its plan (seed, epoch, rank, batch number): gain shift in
    # [0, 1] units, clip, normalise, mask
    order = plain.sampler.order(0)
    for number, (x, _) in zip(range(3), make_loader(cache, 16, device="cpu", seed=1, augment=aug)):
        plan = draw_plan(aug, 16, 32, 126, np.random.default_rng([1, 0, 0, number]))
        raw = cache.read(order[16 * number:16 * (number + 1)]).astype(np.float64) / 255
        shifted = np.clip(raw + (plan.gain_db / CONFIG.top_db)[:, None, None], 0, 1)
        want = (shifted - cache.stats["mean"][None, :, None]) / np.maximum(cache.stats["std"], STD_FLOOR)[None, :, None]
        masks = apply_masks(torch.zeros(16, 1, 32, 126), plan, 1.0)[:, 0].numpy() == 1.0
        want[masks] = 0.0
        np.testing.assert_allclose(x.numpy()[:, 0], want, rtol=0, atol=5e-5)
        assert np.ptp(plan.gain_db) > 1.0 and np.abs(plan.gain_db).max() <= 6.0
    # another epoch, other draws
    noisy.set_epoch(1)
    again.set_epoch(0)
    assert not torch.equal(next(iter(noisy))[0], next(iter(again))[0])


def test_mixup_gives_soft_labels(cache):
    aug = Augment(p=0.0, mixup_alpha=0.4)
    plain = make_loader(cache, 16, device="cpu", seed=3, normalize=False)
    mixed = make_loader(cache, 16, device="cpu", seed=3, normalize=False, augment=aug)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(mixed))
    plan = draw_plan(aug, 16, 32, 126, np.random.default_rng([3, 0, 0, 0]))
    lam = torch.as_tensor(plan.lam, dtype=torch.float32)
    partner = torch.as_tensor(plan.partner)
    assert y1.dtype == torch.float32 and y1.shape == (16, 3)
    torch.testing.assert_close(y1.sum(1), torch.ones(16))
    want_y = torch.zeros(16, 3)
    want_y[torch.arange(16), y0] += lam
    want_y[torch.arange(16), y0[partner]] += 1 - lam
    torch.testing.assert_close(y1, want_y)
    want_x = lam.view(-1, 1, 1, 1) * x0 + (1 - lam).view(-1, 1, 1, 1) * x0[partner]
    torch.testing.assert_close(x1, want_x)
    assert not torch.equal(x1, x0)


# --------------------------------------------------------------------------- dataset


def test_dataset_reads_and_survives_pickle_and_fork(cache, stored):
    ds = SpectrogramDataset(cache.path, indices=[5, 90, 6])
    specs, labels = ds.read_batch([2, 0, 1])
    np.testing.assert_array_equal(specs, stored[[6, 5, 90]])
    np.testing.assert_array_equal(labels, cache.labels[[6, 5, 90]])
    image, label = ds[1]
    np.testing.assert_array_equal(image, stored[90])
    assert label == cache.labels[90]
    copy = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert "specs" not in copy.cache.__dict__  # the open array did not travel
    np.testing.assert_array_equal(copy.read_batch([0, 1])[0], stored[[5, 90]])
    ds._pid = -1  # as seen from a forked child
    before = ds.cache
    np.testing.assert_array_equal(ds.read_batch([1])[0], stored[[90]])
    assert ds.cache is not before
    with pytest.raises(IndexError):
        SpectrogramDataset(cache, indices=[len(cache)])


def test_getitems_reads_any_order_with_repeats(cache, stored):
    rng = np.random.default_rng(0)
    ds = SpectrogramDataset(cache)
    for size in (1, 5, 17, 60):
        positions = rng.integers(0, len(cache), size)  # repeats and any order
        specs, labels = ds.read_batch(positions)
        np.testing.assert_array_equal(specs, stored[positions])
        np.testing.assert_array_equal(labels, cache.labels[positions])
    assert ds.read_batch([]).specs.shape == (0, *CONFIG.shape)
    with pytest.raises(IndexError):
        ds.read_batch([len(cache)])


@pytest.mark.parametrize("workers", [0, 1])
def test_a_plain_dataloader_with_its_default_collate_reads_the_dataset(cache, stored, workers):
    from torch.utils.data import DataLoader

    batches = list(DataLoader(SpectrogramDataset(cache), batch_size=7, num_workers=workers))
    assert len(batches) == -(-len(cache) // 7)
    np.testing.assert_array_equal(torch.cat([x for x, _ in batches]).numpy(), stored)
    np.testing.assert_array_equal(torch.cat([y for _, y in batches]).numpy(), cache.labels)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_cpu_workers_transform_in_shared_memory_to_the_same_batches(cache):
    augment = Augment(gain_db=3.0, mixup_alpha=0.0)
    here = list(make_loader(cache, 16, device="cpu", augment=augment, seed=5))
    there = make_loader(cache, 16, device="cpu", augment=augment, seed=5, num_workers=2)
    batches = list(there)
    assert len(batches) == len(here)
    for (x0, y0), (x1, y1) in zip(here, batches):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert x1.is_shared()  # filled where it was allocated: nothing copied to hand it over


def test_a_training_loader_with_no_batch_is_refused(cache):
    with pytest.raises(ConfigError, match="gives no batch at all. Fix: a smaller batch size, or drop_last=False"):
        make_loader(cache, len(cache) + 1, drop_last=True, device="cpu")
    assert len(make_loader(cache, len(cache) + 1, device="cpu")) == 1


# --------------------------------------------------------------------------- splits


def _fake_cache(groups, labels, recording_ids, column="group"):
    columns = {"recording_id": pa.array(recording_ids, pa.int64()), "label": pa.array(labels, pa.int32())}
    if groups is not None:
        columns[column] = pa.array(groups, pa.string())
    return SimpleNamespace(windows=pa.table(columns), labels=np.asarray(labels, np.int64), path="fake")


def _check_folds(folds, n, groups, labels):
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen.tolist()) == list(range(n))  # every window validated exactly once
    for train, val in folds:
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
        assert not set(groups[train]) & set(groups[val])  # no group on both sides


def test_group_kfold_on_a_cache(cache):
    folds = group_kfold(cache, 3, seed=0)
    groups = window_groups(cache)
    labels = cache.labels
    assert set(groups) == {f"group:author{i}" for i in range(4)}
    _check_folds(folds, len(cache), groups, labels)
    for train, _ in folds:
        assert set(labels[train]) == {0, 1, 2}
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, group_kfold(cache, 3, seed=0)))
    same = group_kfold(cache, 3, group="author", seed=0)  # the old column name
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, same))
    with pytest.raises(ConfigError, match="k=5"):
        group_kfold(cache, 5)


def test_group_kfold_stratifies_many_groups():
    rng = np.random.default_rng(0)
    labels, groups, recs = [], [], []
    for g in range(60):  # recordists with 1-2 classes and 2-30 windows
        classes = rng.choice(8, size=rng.integers(1, 3), replace=False)
        for c in classes:
            size = int(rng.integers(2, 31))
            labels += [int(c)] * size
            groups += [f"r{g}"] * size
            recs += [g * 10 + int(c)] * size
    labels, groups = np.array(labels), np.array(groups, dtype=object)
    fake = _fake_cache(groups.tolist(), labels.tolist(), recs)
    for k in (4, 5):
        folds = group_kfold(fake, k, seed=1)
        keys = window_groups(fake)
        _check_folds(folds, len(labels), keys, labels)
        totals = np.bincount(labels, minlength=8)
        for train, val in folds:
            assert set(labels[train]) == set(range(8))
            share = np.bincount(labels[val], minlength=8) / totals
            assert np.abs(share - 1 / k).max() < 0.15  # near 1/k of every class
    train, val = group_split(fake, 0.2, seed=3)
    assert not set(groups[train]) & set(groups[val])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    share = np.bincount(labels[val], minlength=8) / np.bincount(labels, minlength=8)
    assert np.abs(share - 0.2).max() < 0.12
    assert not np.array_equal(group_split(fake, 0.2, seed=4)[1], val)  # the seed matters


def test_group_fallback_to_recording_id():
    labels = [0] * 6 + [1] * 6
    recs = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for fake in (_fake_cache(None, labels, recs), _fake_cache([""] * 12, labels, recs)):
        keys = window_groups(fake)
        assert list(keys) == [f"recording:{r}" for r in recs]
        _check_folds(group_kfold(fake, 3), 12, keys, np.array(labels))
    # only the empty cells fall back; "author" reads the same column
    mixed = _fake_cache(["a", "a", None, "", "b", "b", "", "", "c", "c", "d", "d"], labels, recs)
    keys = window_groups(mixed, "author")
    assert list(keys[:4]) == ["group:a", "group:a", "recording:1", "recording:1"]
    legacy = _fake_cache(["x"] * 6 + ["y"] * 6, labels, recs, column="author")
    assert set(window_groups(legacy)) == {"author:x", "author:y"}
    with pytest.raises(ConfigError, match="no column 'site'"):
        group_kfold(mixed, 2, group="site")


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("workers", [0, 1])
def test_cuda_loader_equals_cpu(cache, workers):
    aug = Augment(gain_db=4.0)
    gpu = make_loader(cache, 16, device="cuda", seed=6, augment=aug, num_workers=workers)
    cpu = make_loader(cache, 16, device="cpu", seed=6, augment=aug)
    batches = 0
    for (xg, yg), (xc, yc) in zip(gpu, cpu):
        assert xg.device.type == "cuda" and xg.dtype == torch.float32
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-5)
        torch.testing.assert_close(yg.cpu(), yc, rtol=0, atol=0)
        batches += 1
    assert batches == len(cpu) == 9
    slots = [s for s in gpu._pinned if s is not None]
    assert len(slots) == 2 and all(s[0].is_pinned() and s[1].is_pinned() for s in slots)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_are_ready_on_the_callers_stream(cache):
    loader = make_loader(cache, 32, device="cuda", normalize=False, shuffle=False)
    caller = torch.cuda.Stream()
    total = 0.0
    it = iter(loader)
    with torch.cuda.stream(caller):  # a caller on its own stream must see finished batches
        while True:
            with torch.cuda.stream(loader._stream):  # delay the loader's copies: a missing
                torch.cuda._sleep(50_000_000)  # wait would then read unfinished memory
            try:
                x, _ = next(it)
            except StopIteration:
                break
            total += float(x.double().sum())
    on_cpu = sum(float(x.double().sum()) for x, _ in make_loader(cache, 32, normalize=False, shuffle=False))
    assert total == pytest.approx(on_cpu, rel=1e-12)  # the same float32 values, summed in another order


def test_a_dropped_loader_takes_its_workers_with_it(cache):
    """A loader dropped by its user ends its worker processes at once (no reference cycle
    keeps them until a garbage collection), so the workers of the next loader, forked
    later, do not inherit them (they used to print "can only test a child process")."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom chirpid_io.loaders import Augment, make_loader\n"
        "for _ in range(4):\n"
        "    loader = make_loader(sys.argv[1], 16, device='cpu', num_workers=2, augment=Augment())\n"
        "    for _ in range(2):\n"
        "        assert sum(len(y) for _, y in loader) == len(loader.sampler)\n"
        "    del loader\n")
    result = subprocess.run([sys.executable, "-c", script, str(cache.path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "can only test a child process" not in result.stderr
