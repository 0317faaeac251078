"""Trust (issue 10): a cache, a model folder or a checkpoint handed over by a stranger.

Each test attacks as a hostile user would, on real files and real processes: edited model
folders and crafted checkpoints must run nothing; links, FIFOs, deleted shards and edited
metadata are damage that every reader refuses and ``verify`` names; no command loses or
shrinks a finished cache; every failure is one line that names the file and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chirpid_io.cache import build_cache, open_cache, verify_cache
from chirpid_io.cache.writer import CacheWriter
from chirpid_io.errors import CacheError, ManifestError

from test_cache import CONFIG, STORAGE, SR, assert_same, build, make_corpus, snapshot, write_recording

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "chirpid_io" / "data" / "samples"


def run_cli(*args, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """``python -m chirpid_io ARGS`` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "chirpid_io", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with exit 1 and a single error line holding every needle."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("trust-corpus"))


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trust-clean") / "cache"
    build(corpus, out)
    return out


@pytest.fixture
def copy(clean, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(clean, out)
    return out


def edit_attrs(cache: Path, change) -> None:
    document = json.loads((cache / "zarr.json").read_text())
    change(document["attributes"])
    (cache / "zarr.json").write_text(json.dumps(document))


def rewrite_vector(cache: Path, name: str, values: np.ndarray) -> None:
    """Store ``values`` as array ``name`` properly (valid CRC): damage a CRC cannot catch."""
    from chirpid_io.cache.files import LocalStore
    from chirpid_io.cache.vectors import write_vector

    write_vector(LocalStore(cache), name, values, -1, "window")


# --------------------------------------------------------------------------- models, checkpoints

TRAIN_CONFIG = ["--epochs", "2", "--model-arg", "width=4", "--device", "cpu", "--amp", "off", "--batch-size", "16",
                "--no-progress"]


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """Two species of the bundled samples, short windows: trains in a second."""
    from test_trainers import CONFIG as TRAIN_RECIPE

    root = tmp_path_factory.mktemp("trust-train")
    table = root / "table.csv"
    import csv

    with open(SAMPLES / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("great_tit", "zebra_finch")]
    with open(table, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "group"])
        for r in rows:
            out.writerow([r["path"], r["label"], r["group"] if r["label"] == "great_tit" else Path(r["path"]).stem])
    build_cache(table, root / "cache", TRAIN_RECIPE, audio_root=SAMPLES, workers=0, progress=False)
    return root / "cache"


@pytest.fixture(scope="module")
def registry(small_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("trust-models") / "models"
    result = run_cli("train", small_cache, root, "--name", "birds", *TRAIN_CONFIG)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def edited_registry(registry, tmp_path):
    out = tmp_path / "models"
    shutil.copytree(registry, out)
    return out


@pytest.mark.parametrize("edit", [
    {"architecture": None, "model_class": "subprocess:run", "model_kwargs": {"args": ["touch", "{marker}"]}},
    {"architecture": "subprocess:run", "model_kwargs": {"args": ["touch", "{marker}"]}},
    {"model_kwargs": {"n_classes": 2, "width": 4, "args": ["touch", "{marker}"]}},
    {"model_kwargs": {"n_classes": 2, "width": {"__class__": "os.system"}}},
])
def test_an_edited_model_folder_runs_no_code(edited_registry, tmp_path, edit):
    marker = tmp_path / "MARKER"
    meta_path = edited_registry / "birds" / "v1" / "model.json"
    meta = json.loads(meta_path.read_text())
    for key, value in json.loads(json.dumps(edit).replace("{marker}", str(marker))).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    meta_path.write_text(json.dumps(meta))
    result = run_cli("predict", edited_registry, SAMPLES / "zebra_finch" / "bells.wav")
    assert not marker.exists()
    line = one_line_error(result, "model.json")
    assert "birdcnn" in line or "constructor argument" in line or "plain value" in line


def test_a_crafted_checkpoint_runs_no_code(small_cache, tmp_path):
    import torch

    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    torch.save({"format": "chirpid-io training checkpoint", "version": 2, "model": Payload()}, checkpoints / "last.pt")
    result = run_cli("train", small_cache, tmp_path / "models", *TRAIN_CONFIG, "--checkpoint-dir", checkpoints,
                     "--resume")
    assert not marker.exists()
    line = one_line_error(result, "last.pt", "not a chirpid-io checkpoint")
    assert "weights_only" not in result.stderr


def test_a_foreign_checkpoint_is_refused(small_cache, tmp_path):
    import torch

    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    torch.save({"weight": torch.zeros(3)}, checkpoints / "last.pt")  # some other program's file
    result = run_cli("train", small_cache, tmp_path / "models", *TRAIN_CONFIG, "--checkpoint-dir", checkpoints,
                     "--resume")
    one_line_error(result, "last.pt", "not a chirpid-io training checkpoint")


@pytest.mark.parametrize("change, needle", [(["--optimizer", "sgd"], "optimizer: 'adamw' in the checkpoint, 'sgd' now"),
                                            (["--lr", "0.5"], "lr: 0.001 in the checkpoint, 0.5 now")])
def test_resume_with_other_hyperparameters_is_refused(small_cache, tmp_path, change, needle):
    checkpoints = tmp_path / "ckpt"
    first = run_cli("train", small_cache, tmp_path / "models", *TRAIN_CONFIG, "--checkpoint-dir", checkpoints)
    assert first.returncode == 0, first.stderr
    result = run_cli("train", small_cache, tmp_path / "models", *TRAIN_CONFIG, "--checkpoint-dir", checkpoints,
                     "--resume", *change)
    one_line_error(result, needle, "start a new run")


def test_resume_on_another_cache_is_refused(small_cache, tmp_path):
    checkpoints = tmp_path / "ckpt"
    assert run_cli("train", small_cache, tmp_path / "m", *TRAIN_CONFIG, "--checkpoint-dir", checkpoints).returncode == 0
    other = tmp_path / "other"
    shutil.copytree(small_cache, other)
    edit_attrs(other, lambda a: a.update(cache_id="0" * 32))  # the same content, another cache
    result = run_cli("train", other, tmp_path / "m", *TRAIN_CONFIG, "--checkpoint-dir", checkpoints, "--resume")
    one_line_error(result, "cache_id")


def test_resume_with_more_epochs_continues_the_schedule_and_records_it(small_cache, tmp_path):
    from chirpid_io.trainers import ModelRegistry, TrainConfig
    from chirpid_io.trainers.explog import read_log
    from chirpid_io.trainers.loop import cosine_factor

    checkpoints, models = tmp_path / "ckpt", tmp_path / "models"
    assert run_cli("train", small_cache, models, *TRAIN_CONFIG, "--checkpoint-dir", checkpoints, "--experiment-log",
                   tmp_path / "a.jsonl").returncode == 0
    longer = [a if a != "2" else "4" for a in TRAIN_CONFIG]  # --epochs 4
    result = run_cli("train", small_cache, models, *longer, "--checkpoint-dir", checkpoints, "--resume", "--experiment-log",
                     tmp_path / "b.jsonl")
    assert result.returncode == 0, result.stderr
    epochs = [r for r in read_log(tmp_path / "b.jsonl") if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [3, 4]
    config = TrainConfig(epochs=4)
    for record in epochs:  # the cosine of the new length, not the stale one (which gave lr 0.0)
        assert record["lr"] == pytest.approx(1e-3 * cosine_factor(record["epoch"], config))
    entry = ModelRegistry(models).load("cache", "latest")
    assert entry.meta["train_config"]["epochs"] == 4 and entry.meta["resumed_at_epoch"] == 2
    assert entry.meta["train_config"]["optimizer"] == "adamw"


def test_unreadable_weights_are_one_line(edited_registry):
    weights = edited_registry / "birds" / "v1" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    one_line_error(run_cli("predict", edited_registry, SAMPLES / "zebra_finch" / "bells.wav"), "weights.pt")


def test_one_class_and_absent_classes_are_warned_about(tmp_path):
    recordings = tmp_path / "one"
    for i in range(3):
        write_recording(recordings / "alpha" / f"a{i}.wav", 600, 3.0, seed=i)
    assert build(recordings, tmp_path / "cache").windows_total > 0
    result = run_cli("train", tmp_path / "cache", tmp_path / "models", *TRAIN_CONFIG)
    assert "warning:" in result.stderr and "1 class(es)" in result.stderr


# --------------------------------------------------------------------------- links, FIFOs, holes


@pytest.mark.parametrize("key", ["specs/c/1/0/0", "windows.parquet", "labels/c/0", "specs/c/0", "zarr.json"])
def test_a_link_inside_a_cache_is_damage_even_to_identical_content(copy, tmp_path, key):
    outside = tmp_path / "outside"
    target = copy / key
    shutil.move(target, outside)  # the very same bytes, reached through a link
    target.symlink_to(outside, target_is_directory=outside.is_dir())
    findings = verify_cache(copy).problems
    assert any(p.startswith(f"{key}: is a symbolic link") for p in findings), findings
    with pytest.raises(CacheError, match="symbolic link"):
        cache = open_cache(copy)
        cache.windows
        cache.read(np.arange(len(cache)))


def test_a_link_to_a_system_file_is_never_read(copy):
    (copy / "windows.parquet").unlink()
    (copy / "windows.parquet").symlink_to("/etc/passwd")
    with pytest.raises(CacheError, match="windows.parquet: is a symbolic link"):
        open_cache(copy).windows


def test_a_deleted_shard_is_damage_for_verify_read_and_loader(copy):
    from chirpid_io.loaders import make_loader

    cache = open_cache(copy)  # opened before the shard goes
    (copy / "specs/c/1/0/0").unlink()
    with pytest.raises(CacheError, match=r"windows 4-4 could not be read: shard file specs/c/1/0/0 is missing"):
        cache.read([0, 4])
    with pytest.raises(CacheError, match=r"1 of the \d+ shard files .* missing .*first: specs/c/1/0/0 is missing"):
        open_cache(copy)
    with pytest.raises(CacheError, match="shard files"):
        make_loader(copy, 4, device="cpu")
    report = verify_cache(copy)
    assert not report.ok and any("specs/c/1/0/0" in p for p in report.problems), report.problems


def test_a_fifo_in_place_of_a_shard_blocks_nothing(copy):
    shard = copy / "specs/c/0/0/0"
    shard.unlink()
    os.mkfifo(shard)
    probe = textwrap.dedent(f"""
        from chirpid_io.cache import open_cache, verify_cache
        report = verify_cache({str(copy)!r})
        print(report.problems)
        try:
            open_cache({str(copy)!r})
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "specs/c/0/0/0: is not a regular file or folder" in result.stdout
    assert "CacheError" in result.stdout


# --------------------------------------------------------------------------- edited metadata


def test_nan_statistics_are_refused_and_named(copy):
    edit_attrs(copy, lambda a: a["stats"]["mean"].__setitem__(3, float("nan")))
    with pytest.raises(CacheError, match=r"stats.mean holds 1 non-finite"):
        open_cache(copy)
    assert any("stats.mean holds 1 non-finite" in p for p in verify_cache(copy).problems)


def test_labels_outside_the_class_list_are_refused_and_named(copy):
    labels = open_cache(copy).labels.astype(np.int32)
    labels[5] = 99
    rewrite_vector(copy, "labels", labels)
    with pytest.raises(CacheError, match="1 label.s. outside the 3 classes"):
        open_cache(copy)
    assert any("labels: 1 label(s) outside the 3 classes (first at window 5)" in p
               for p in verify_cache(copy).problems)


def test_a_specs_dtype_other_than_the_configs_is_one_finding(copy):
    meta = json.loads((copy / "specs/zarr.json").read_text())
    meta["data_type"] = "float16"
    (copy / "specs/zarr.json").write_text(json.dumps(meta))
    problems = verify_cache(copy).problems
    assert problems == ["specs/zarr.json says data_type 'float16', the cache's config says 'uint8'"], problems


def test_edited_band_sums_or_stats_are_found_against_the_data(copy):
    edit_attrs(copy, lambda a: a["band_sums"]["sum"].__setitem__(0, a["band_sums"]["sum"][0] + 1))
    assert any("band_sums disagree with the stored windows" in p for p in verify_cache(copy).problems)


def test_a_count_of_10_12_is_refused_without_work(copy):
    def huge(attrs):
        attrs["counts"]["windows"] = 10**12
        attrs["counts"]["per_class"]["alpha"] += 10**12 - sum(attrs["counts"]["per_class"].values())

    edit_attrs(copy, huge)
    probe = textwrap.dedent(f"""
        from chirpid_io.cache import open_cache, verify_cache
        print(verify_cache({str(copy)!r}).problems)
        open_cache({str(copy)!r})
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "holds 12 windows, the attributes count 1000000000000" in result.stdout or \
           "shard files" in result.stdout, result.stdout
    assert "CacheError" in result.stderr and "MemoryError" not in result.stderr


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "not valid JSON"),
    (lambda p: edit_attrs(p.parent, lambda a: a.pop("config")), "attribute 'config' is missing"),
    (lambda p: edit_attrs(p.parent, lambda a: a["counts"].update(windows=-5)), "counts.windows is -5"),
    (lambda p: edit_attrs(p.parent, lambda a: a.update(fingerprint="0" * 16)), "does not match the config"),
    (lambda p: p.write_text("[1, 2]"), "not an object"),
])
@pytest.mark.parametrize("command", ["inspect", "verify", "train"])
def test_damaged_metadata_is_one_line_for_every_command(copy, tmp_path, damage, needle, command):
    damage(copy / "zarr.json")
    extra = [tmp_path / "models", *TRAIN_CONFIG] if command == "train" else []
    result = run_cli(command, copy, *extra)
    if command == "verify":
        assert result.returncode == 1 and "Traceback" not in result.stderr and needle in result.stderr, result.stderr
    else:
        one_line_error(result, needle)


# --------------------------------------------------------------------------- no silent data loss


def test_a_deleted_journal_then_append_loses_nothing(corpus, clean, copy, tmp_path):
    (copy / "build-journal.jsonl").unlink()
    grown = make_corpus(tmp_path / "grown", extra=1)
    report = build(grown, copy)
    assert any("is missing: rebuilt it from the finished cache" in n for n in report.notes), report.notes
    reference = tmp_path / "reference"
    shutil.copytree(clean, reference)
    build(grown, reference)  # the same append with the journal intact
    assert_same(snapshot(copy), snapshot(reference))
    assert len(open_cache(copy)) > len(open_cache(clean))


@pytest.mark.parametrize("damage", ["truncate", "garble_middle", "older_copy"])
def test_a_damaged_journal_of_a_finished_cache_is_repaired_from_its_tables(corpus, clean, copy, damage):
    journal = copy / "build-journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    if damage == "truncate":
        journal.write_bytes(lines[0])
    elif damage == "garble_middle":
        journal.write_bytes(b"".join(lines[:1] + [b'{"not": "an entry"}\n'] + lines[2:]))
    else:
        journal.write_bytes(b"".join(lines[:-1]))  # as an old backup would be
    report = build(corpus, copy)  # nothing new: the finished cache must come out unchanged
    assert report.windows_total == len(open_cache(clean))
    assert_same(snapshot(copy), snapshot(clean))
    assert verify_cache(copy).ok


def _unfinished_append(clean: Path, out: Path, corpus: Path) -> None:
    """A finished cache plus journal lines of an append that never finished."""
    shutil.copytree(clean, out)
    from chirpid_io import audio

    writer = CacheWriter(out, CONFIG, STORAGE)
    from chirpid_io.kernels import mel_spectrogram, to_storage

    for i in range(3):
        cut = audio.windows(audio.load(next(corpus.rglob("*.wav")), SR), CONFIG)
        images = to_storage(mel_spectrogram(cut.samples, CONFIG).numpy(), "uint8")
        writer.add_recording({"path": f"alpha/new{i}.wav", "class_name": "alpha", "status": "ok"}, images,
                             cut.start_seconds, cut.rms)
    writer.close()  # as a killed process would leave it: no finish


def test_a_damaged_line_of_an_unfinished_append_stops_with_its_number(clean, corpus, tmp_path):
    out = tmp_path / "appending"
    _unfinished_append(clean, out, corpus)
    journal = out / "build-journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    n_finished = len(json.loads((clean / "build-journal.jsonl").read_bytes().splitlines()[-1])["recordings"]) and \
        len((clean / "build-journal.jsonl").read_bytes().splitlines())
    assert len(lines) >= n_finished + 2  # at least two lines of the append
    lines[n_finished] = b'{"v": 2, "garbage": true}\n'  # the append's first line: valid JSON, wrong keys
    journal.write_bytes(b"".join(lines))
    with pytest.raises(CacheError, match=rf"line {n_finished + 1} is damaged .*delete line .*--overwrite"):
        build(corpus, out)
    assert len(open_cache(out)) == len(open_cache(clean))  # the finished state is still there, intact


def test_a_wrong_keys_line_of_a_first_build_is_one_line(corpus, tmp_path):
    out = tmp_path / "first"
    killed = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from test_cache import CONFIG, STORAGE
        from chirpid_io.cache.writer import CacheWriter
        w = CacheWriter({str(out)!r}, CONFIG, STORAGE)
        w.store.append("build-journal.jsonl", b'{{"recordings": 1}}\\n')
        w.close()
    """)], env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert killed.wait(timeout=120) == 0
    with pytest.raises(CacheError, match=r"build-journal.jsonl: line 1 is damaged \(journal version None, expected 2\)"):
        build(corpus, out)


def test_an_append_in_progress_leaves_the_finished_state_readable_and_pinned(clean, corpus, tmp_path):
    out = tmp_path / "pinned"
    shutil.copytree(clean, out)
    before = open_cache(out)
    n_old = len(before)
    writer = CacheWriter(out, CONFIG, STORAGE)
    from chirpid_io import audio
    from chirpid_io.kernels import mel_spectrogram, to_storage

    cut = audio.windows(audio.load(next(corpus.rglob("*.wav")), SR), CONFIG)
    images = to_storage(mel_spectrogram(np.concatenate([cut.samples] * 3), CONFIG).numpy(), "uint8")
    writer.add_recording({"path": "alpha/extra.wav", "class_name": "zeta", "status": "ok"}, images,
                         np.arange(len(images), dtype=float), np.ones(len(images)))
    during = open_cache(out)  # a new reader while the append runs: the last finished state
    assert len(during) == n_old and during.class_names == before.class_names
    writer.finish()
    writer.close()
    # the reader opened before sees exactly what it saw, through tables loaded only now
    assert len(before) == n_old and before.windows.num_rows == n_old and before.recordings.num_rows == 8
    assert before.label_sets[0].size == n_old + 1
    np.testing.assert_array_equal(before.read(np.arange(n_old)), open_cache(clean).read(np.arange(n_old)))
    after = open_cache(out)
    assert len(after) == n_old + len(images) and after.class_names[-1] == "zeta"


def test_an_unfinished_first_build_says_whether_one_is_running(corpus, tmp_path):
    out = tmp_path / "running"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from test_cache import CONFIG
        from chirpid_io.cache.writer import CacheWriter
        w = CacheWriter({str(out)!r}, CONFIG)
        print("ready", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(CacheError, match=rf"a build \(pid {holder.pid} on .*\) is writing it now"):
            open_cache(out)
        with pytest.raises(CacheError, match=rf"another build \(pid {holder.pid} on"):
            CacheWriter(out, CONFIG)
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(CacheError, match="no build is running: the last one was interrupted"):
        open_cache(out)


# --------------------------------------------------------------------------- clear states


def test_a_build_that_keeps_no_window_fails_and_says_why(tmp_path):
    clips = tmp_path / "clips"
    for i in range(3):
        write_recording(clips / "alpha" / f"short{i}.wav", 600, 1.0, seed=i)
    result = run_cli("build-cache", clips, tmp_path / "cache", "--no-progress")
    line = one_line_error(result, "all 3 recordings are shorter than one window (5.0 s); add --pad-short")
    assert "skipped:" in result.stdout
    with pytest.raises(CacheError, match="has not finished"):
        open_cache(tmp_path / "cache")
    assert run_cli("build-cache", clips, tmp_path / "padded", "--pad-short", "--no-progress").returncode == 0


def test_another_config_on_an_existing_cache_says_how_to_start_over(corpus, copy):
    result = run_cli("build-cache", corpus, copy, "--window-seconds", "2", "--no-progress")
    one_line_error(result, "window_seconds: 1.0 there, 2.0 asked", "--overwrite", "new folder")


def test_overwrite_keeps_the_old_cache_until_the_new_one_is_complete(corpus, clean, copy, tmp_path):
    old = snapshot(copy)
    script = textwrap.dedent(f"""
        from chirpid_io.cache import build_cache
        from test_cache import CONFIG, STORAGE
        build_cache({str(corpus)!r}, {str(copy)!r}, CONFIG.replace(n_mels=24), storage=STORAGE, workers=0,
                    progress=False, overwrite=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    staging = copy.with_name(".copy.overwrite") / "build-journal.jsonl"
    while proc.poll() is None:
        if staging.exists() and staging.read_bytes().count(b"\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert_same(snapshot(copy), old)  # killed mid-overwrite: the old cache is intact and readable
    report = build_cache(corpus, copy, CONFIG.replace(n_mels=24), storage=STORAGE, workers=0, progress=False,
                         overwrite=True)
    assert open_cache(copy).config.n_mels == 24 and report.windows_total == len(open_cache(copy))
    assert not copy.with_name(".copy.overwrite").exists() and not copy.with_name(".copy.replaced").exists()
    assert verify_cache(copy).ok


def test_overwrite_refuses_a_folder_that_is_not_a_cache(corpus, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(CacheError, match="not a chirpid-io cache; --overwrite replaces only a cache"):
        build(corpus, precious, overwrite=True)
    with pytest.raises(CacheError, match="holds other files and is not a chirpid-io cache"):
        build(corpus, precious)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_auto_backend_is_torch_and_unchecked_gpu_paths_warn():
    import warnings

    from chirpid_io.kernels import resolve_backend

    assert resolve_backend("auto", "cuda") == "torch" and resolve_backend("auto", "cpu") == "torch"
    with pytest.warns(UserWarning, match="dali backend's GPU path has not been checked"):
        assert resolve_backend("dali", "cuda:0") == "dali"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("dali", "cpu") == "dali" and resolve_backend("torch", "cuda") == "torch"


# --------------------------------------------------------------------------- inputs and output


@pytest.mark.parametrize("column, values, kind", [
    ("label", [1.0, float("nan")], "double"),
    ("path", [1, 2], "int64"),
    ("group", [0.5, float("nan")], "double"),
])
def test_parquet_columns_of_the_wrong_type_are_refused(tmp_path, column, values, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"path": ["a.wav", "b.wav"], "label": ["x", "y"], "group": ["g", "h"]}
    columns[column] = values
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    with pytest.raises(ManifestError, match=rf"column '{column}': has type {kind}, it must hold"):
        build_cache(tmp_path / "t.parquet", tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


def test_file_names_with_control_characters_print_escaped(tmp_path):
    folder = tmp_path / "evil"
    write_recording(folder / "alpha" / "good.wav", 600, 3.0, seed=0)
    forged = "evil\nrecordings: 999 added, 0 skipped.wav"
    (folder / "alpha" / forged).write_bytes(b"not audio at all")
    (folder / "alpha" / "\x1b[2Jclear.wav").write_bytes(b"")
    result = run_cli("build-cache", folder, tmp_path / "cache", "--window-seconds", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert not any(line.startswith("recordings: 999") for line in result.stdout.splitlines())
    assert "evil\\nrecordings: 999 added, 0 skipped.wav" in result.stdout
    assert "\x1b" not in result.stdout and "\\x1b[2Jclear.wav" in result.stdout


def test_disk_full_during_a_build_is_one_line_and_resumes(corpus, tmp_path):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs in a private mount namespace")
    command = ["build-cache", corpus, "OUT", "--window-seconds", "1", "--workers", "0", "--no-progress"]
    reference = tmp_path / "reference"
    assert run_cli(*[reference if a == "OUT" else a for a in command]).returncode == 0
    size = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    mount = tmp_path / "small"
    mount.mkdir()
    out = mount / "cache"
    build_line = " ".join(map(str, [sys.executable, "-m", "chirpid_io", *[out if a == "OUT" else a for a in command]]))
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size={max(size // 2, 8192)} tmpfs {mount} || exit 77
        {build_line} > {tmp_path}/first.out 2> {tmp_path}/first.err
        echo $? > {tmp_path}/first.rc
        find {out} -name '*.tmp-*' > {tmp_path}/leftovers
        mount -o remount,size=64m {mount}
        {build_line} > {tmp_path}/second.out 2> {tmp_path}/second.err
        echo $? > {tmp_path}/second.rc
        cp -r {out} {tmp_path}/resumed
    """)
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=600)
    if done.returncode == 77:
        pytest.skip("this machine does not allow a tmpfs mount")
    err = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", err
    assert "Traceback" not in err and "the disk is full; free some space and run the same command again" in err
    assert (tmp_path / "leftovers").read_text() == ""  # no temporary shard left behind
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    resumed, clean = snapshot(tmp_path / "resumed"), snapshot(reference)
    np.testing.assert_array_equal(resumed["specs"], clean["specs"])
    assert resumed["windows"] == clean["windows"] and resumed["stats"]["mean"].tolist() == clean["stats"]["mean"].tolist()
