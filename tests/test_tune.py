"""tune: search spaces, a small study on CPU, pruning, a SIGKILLed study resumed, two
processes on one study, the best model back from the registry, TensorBoard event files.

Real parts only: the bundled recordings' cache, SQLite studies, ``python -m chirpid_io
tune`` subprocesses killed with SIGKILL, TensorBoard's own event reader. Every study is
tiny (BirdCNN width 4, 2 epochs, 0.5 s windows) so a trial takes about a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from chirpid_io.errors import ChirpIOError, ConfigError
from chirpid_io.trainers.explog import read_log
from chirpid_io.trainers.space import DEFAULT_SPACE_TOML, SearchSpace
from chirpid_io.trainers.tune import TuneConfig, tune

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]
GROUP = "recording_id"  # the samples' source groups leave almost nothing to validate on
TINY = """
[train]
epochs = 2
amp = "off"
lr = {low = 1e-3, high = 1e-2, log = true}
[model]
name = "birdcnn"
width = 4
[augment]
p = {low = 0.0, high = 1.0}
[loader]
batch_size = 32
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _load(out: Path, name: str = "chirpid-io"):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}", skip_table_creation=True)
    return optuna.load_study(study_name=name, storage=storage)


def _peek(db: Path) -> list[tuple[int, str, int]]:
    """(number, state, reported epochs) of each trial, through a read-only SQLite
    connection: polling must not race the tune process creating the schema."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(
                "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) FROM trials t ORDER BY t.number").fetchall()
    except sqlite3.Error:  # not created yet, or busy
        return []


def _states(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _tune_command(cache, out, space, *extra) -> list[str]:
    return [sys.executable, "-m", "chirpid_io", "tune", str(cache.path), str(out), "--space", str(space),
            "--device", "cpu", "--group", GROUP, "--no-report", "--no-progress", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


# -- the search space -------------------------------------------------------------------------
def test_default_space_names_real_fields_and_samples_valid_settings():
    space = SearchSpace.default()
    keys = [p.key for p in space.params]
    assert {"train.lr", "train.weight_decay", "model.width", "augment.freq_mask", "augment.mixup_alpha",
            "loader.batch_size"} <= set(keys)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        setup = space.sample(study.ask(), base={"device": "cpu"})
        assert 1e-4 <= setup.train.lr <= 1e-2 and setup.train.epochs == 20
        assert setup.model == "birdcnn" and setup.model_kwargs["width"] in (8, 16, 24, 32)
        assert 0 <= setup.augment.freq_mask <= 28 and setup.batch_size in (32, 64)
        assert setup.train.class_weights in ("balanced", None)  # "none" in TOML is None
    # the TOML the CLI prints is the default space itself
    assert SearchSpace.from_dict(__import__("tomllib").loads(DEFAULT_SPACE_TOML)).to_dict() == space.to_dict()


def test_space_file_round_trip_toml_and_json(tmp_path, tiny):
    toml_space = SearchSpace.load(tiny)
    (tmp_path / "tiny.json").write_text(json.dumps(toml_space.to_dict()))
    assert SearchSpace.load(tmp_path / "tiny.json").to_dict() == toml_space.to_dict()
    # a model argument applies only to the models that take it
    both = SearchSpace.from_dict({"model": {"name": {"choices": ["birdcnn", "birdcnn_v5c"]},
                                            "width": {"low": 4, "high": 8}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(12):
        setup = both.sample(study.ask(), base={"device": "cpu"})
        seen[setup.model] = setup.model_kwargs
    assert "width" in seen["birdcnn"] and seen["birdcnn_v5c"] == {}


@pytest.mark.parametrize("data, message", [
    ({"train": {"lrr": 1e-3}}, "train.lrr: unknown field; [train] knows amp, channels_last"),
    ({"train": {"lr": {"low": 1e-2, "high": 1e-3}}}, "low (0.01) must be below high (0.001)"),
    ({"train": {"lr": {"low": 0.0, "high": 1e-3, "log": True}}}, "a log range needs low > 0"),
    ({"train": {"epochs": {"low": 1.5, "high": 4}}}, "an integer field needs integer"),
    ({"train": {"optimizer": {"choices": ["adam", "rmsprop"]}}}, "TrainConfig.optimizer must be one of"),
    ({"train": {"device": "cpu"}}, "set by tune itself"),
    ({"augment": {"p": {"low": 0.0, "high": 1.5}}}, "augment.p: Augment.p must lie in [0, 1]"),
    ({"augment": {"freq_mask": {"low": -2, "high": 4}}}, "Augment mask widths must be >= 0"),
    ({"model": {"name": "resnet"}}, "'resnet' is not a known model; choose from birdcnn, birdcnn_v5c"),
    ({"model": {"depth": 3}}, "model.depth: unknown field; [model] knows dropout, width"),
    ({"model": {"dropout": {"low": 0.0, "high": 1.0}}}, "dropout must lie in [0, 1)"),
    ({"loader": {"batch_size": {"choices": [32, 0]}}}, "batch_size must be a positive integer"),
    ({"loader": {"batch_size": {"choices": [32, 32]}}}, "choices repeat a value"),
    ({"train": {"lr": {"low": 1e-4, "high": 1e-2, "step": 1e-3, "log": True}}}, "cannot be combined with log"),
    ({"train": {"lr": {"low": 1e-4, "hihg": 1e-2}}}, "unknown key(s) hihg"),
    ({"training": {"lr": 1e-3}}, "unknown section(s) 'training'"),
    ({"train": {"lr": {"low": float("nan"), "high": 1.0}}}, "low must be a finite number"),
])
def test_space_mistakes_are_refused_with_the_field_and_the_fix(data, message):
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(data, source="space.toml")
    assert str(err.value).startswith("space.toml: ") and message in str(err.value)


def test_space_files_that_are_not_spaces(tmp_path):
    for name, content in (("s.toml", "[train\nlr = 1"), ("s.json", "{not json"), ("s.yaml", "a: 1"),
                          ("s.toml", b"\xff\xfe\x00binary")):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ConfigError, match=str(path)):
            SearchSpace.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        SearchSpace.load(tmp_path / "missing.toml")


def test_tune_config_refuses_a_metric_fit_does_not_report():
    with pytest.raises(ConfigError, match="unknown metric 'val_acc'"):
        TuneConfig(metric="val_acc")
    with pytest.raises(ConfigError, match="pruner"):
        TuneConfig(pruner="asha")
    with pytest.raises(ConfigError, match="TrainConfig.amp must be one of"):
        TuneConfig(amp="fp32")  # refused before a study exists, not once per trial
    assert TuneConfig(metric="val_loss").maximize is False and TuneConfig().maximize is True


# -- a small study ------------------------------------------------------------------------------
def test_small_study_logs_every_trial_and_registers_the_best(small_cache, tmp_path, tiny):
    from chirpid_io.loaders import group_split, make_loader, window_groups
    from chirpid_io.trainers import ModelRegistry

    out = tmp_path / "search"
    result = tune(small_cache, out, tiny, trials=3, group=GROUP, device="cpu", report=False, progress=False)
    study = _load(out)
    assert _states(study) == {"COMPLETE": 3} and result.finished == 3
    assert [t.number for t in study.trials] == [0, 1, 2]

    train_idx, val_idx = group_split(small_cache, 0.2, group=GROUP, seed=0)
    groups = window_groups(small_cache, GROUP)
    assert not set(groups[train_idx]) & set(groups[val_idx])  # no recording on both sides
    for trial in study.trials:
        records = read_log(out / "runs" / f"trial-{trial.number:04d}.jsonl")
        assert [r["event"] for r in records] == ["start", "epoch", "epoch", "end"]
        start, epochs, end = records[0], records[1:3], records[3]
        assert start["config"]["params"] == trial.params and start["config"]["trial"] == trial.number
        assert start["config"]["lr"] == trial.params["train.lr"] and start["config"]["amp"] == "off"  # the space's
        assert start["config"]["augment"]["p"] == trial.params["augment.p"]
        assert (start["config"]["n_train"], start["config"]["n_val"]) == (len(train_idx), len(val_idx))
        # the value is the best epoch's metric, under the name train prints
        assert trial.value == max(r["val_macro_f1"] for r in epochs) == end["result"]["value"]
        assert trial.intermediate_values == {r["epoch"]: r["val_macro_f1"] for r in epochs}
        assert end["result"]["state"] == "complete"

    registry = ModelRegistry(out / "registry")
    entry = registry.load(result.name)  # latest version = the best trial (the first of equal ones)
    best = study.trials[entry.meta["tune"]["trial"]]
    assert best.value == study.best_value and result.best_trial == best.number
    assert entry.meta["train_config"]["lr"] == best.params["train.lr"]
    assert entry.meta["augment"]["p"] == best.params["augment.p"] and entry.meta["model_kwargs"]["width"] == 4
    # the registered weights score what the trial reported on the validation windows
    val = make_loader(small_cache, 64, indices=val_idx, shuffle=False, device="cpu")
    correct = total = 0
    with torch.no_grad():
        for x, y in val:
            correct += int((entry.model(x).argmax(1) == y).sum())
            total += len(y)
    best_epoch = entry.metrics["best_epoch"]
    record = read_log(out / "runs" / f"trial-{best.number:04d}.jsonl")[best_epoch]
    assert correct / total == pytest.approx(record["val_accuracy"], abs=1e-9)

    # the same call again: the study already holds 3 finished trials, nothing runs
    again = tune(small_cache, out, tiny, trials=3, group=GROUP, device="cpu", report=False, progress=False)
    assert again.finished == 3 and len(_load(out).trials) == 3 and again.version == result.version


@pytest.mark.filterwarnings("ignore:Fixed parameter")  # lr 3.0 lies outside the space on purpose
def test_pruning_stops_a_trial_that_trails_the_median(small_cache, tmp_path, tiny):
    out = tmp_path / "pruned"
    # enqueued trials run first: a sane learning rate, then one that blows the loss up
    tune(small_cache, out, tiny, trials=2, metric="val_loss", group=GROUP, device="cpu", pruner="median",
         prune_startup_trials=1, prune_warmup_epochs=0, report=False, progress=False,
         enqueue=[{"train.lr": 3e-3, "augment.p": 0.0}, {"train.lr": 3.0, "augment.p": 0.0}])
    first, second = _load(out).trials
    assert first.state.name == "COMPLETE" and second.state.name == "PRUNED"
    assert list(second.intermediate_values) == [1]  # stopped after its first epoch
    assert second.intermediate_values[1] > 10 * first.intermediate_values[1]
    records = read_log(out / "runs" / "trial-0001.jsonl")
    assert [r["event"] for r in records] == ["start", "epoch", "end"]
    assert records[-1]["result"]["state"] == "pruned"


def test_a_study_refuses_to_continue_as_another_search(small_cache, tmp_path, tiny):
    out = tmp_path / "search"
    tune(small_cache, out, tiny, trials=1, group=GROUP, device="cpu", report=False, progress=False)
    with pytest.raises(ConfigError, match="is another search .*metric: 'val_macro_f1' in the study, 'val_loss' now"):
        tune(small_cache, out, tiny, trials=2, metric="val_loss", group=GROUP, device="cpu", report=False,
             progress=False)
    changed = SearchSpace.load(tiny).with_fixed("train", "epochs", 3)
    with pytest.raises(ConfigError, match="space:"):
        tune(small_cache, out, changed, trials=2, group=GROUP, device="cpu", report=False, progress=False)


def test_failing_trials_stop_the_process_with_the_error(small_cache, tmp_path):
    # onecycle needs a loader length, which chirpid_io loaders have; a batch size larger
    # than the training windows with drop_last is not possible here, so use a schedule
    # error the loop raises for real: class_weights with the wrong number of classes
    space = {"train": {"epochs": 1, "amp": "off", "class_weights": [1.0, 2.0]}, "model": {"width": 4}}
    with pytest.raises(ChirpIOError, match="2 trials in a row failed.*class_weights has 2 values"):
        tune(small_cache, tmp_path / "failing", space, trials=3, max_failures=2, group=GROUP, device="cpu",
             report=False, progress=False)
    study = _load(tmp_path / "failing")
    assert _states(study) == {"FAIL": 2}
    assert "ConfigError" in study.trials[0].user_attrs["error"]


# -- crash, resume, parallel ------------------------------------------------------------------
def test_sigkilled_study_resumes_with_the_same_command(small_cache, tmp_path, tiny):
    out = tmp_path / "killed"
    command = _tune_command(small_cache, out, tiny, "--trials", "4", "--heartbeat", "1", "--grace", "2")
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = False
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            rows = _peek(out / "study.db")
            running = [n for n, state, epochs in rows if state == "RUNNING" and epochs >= 1]
            if running and any(state == "COMPLETE" for _, state, _ in rows):
                os.kill(proc.pid, signal.SIGKILL)  # mid-epoch: its first epoch is reported, the second runs
                killed = True
                break
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        output = proc.communicate()[0].decode(errors="replace")
    assert killed, f"no trial was caught running; output:\n{output}"
    assert proc.returncode == -signal.SIGKILL
    before = _load(out).get_trials()
    victim = next(t for t in before if t.state.name == "RUNNING")

    # nothing lost: the database opens, the finished trials and the killed one are there
    study = _load(out)
    after = {t.number: t for t in study.get_trials()}
    for t in before:
        if t.state.name == "COMPLETE":
            assert after[t.number].state.name == "COMPLETE" and after[t.number].value == t.value
            assert after[t.number].params == t.params
    assert after[victim.number].state.name == "RUNNING"  # until a process sees its heartbeat stopped

    time.sleep(2.5)  # past the grace period
    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = _load(out)
    trials = study.get_trials()
    states = _states(study)
    assert states["COMPLETE"] + states.get("PRUNED", 0) == 4 and states["FAIL"] == 1 and "RUNNING" not in states
    assert [t.number for t in trials] == list(range(len(trials)))  # numbering continued, no gaps
    assert trials[victim.number].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number
               or t.user_attrs.get("retry_of") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params and retried[0].state.name == "COMPLETE"
    assert retried[0].number > victim.number
    start = read_log(out / "runs" / f"trial-{retried[0].number:04d}.jsonl")[0]
    assert start["config"]["retry_of"] == victim.number
    # the killed trial's log is readable up to its last epoch, and has no end record
    killed_log = read_log(out / "runs" / f"trial-{victim.number:04d}.jsonl")
    assert killed_log[0]["event"] == "start" and "end" not in [r["event"] for r in killed_log]


def test_two_processes_finish_the_requested_trials_between_them(small_cache, tmp_path, tiny):
    out = tmp_path / "shared"
    command = _tune_command(small_cache, out, tiny, "--trials", "5")
    procs = [subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    study = _load(out)
    assert _states(study).get("COMPLETE", 0) + _states(study).get("PRUNED", 0) == 5
    assert len(study.trials) == 5  # neither process started a trial beyond the count
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert pids <= {p.pid for p in procs} and len(pids) == 2, outputs
    # every trial was logged once, and the latest registered version is the best trial
    assert sorted(p.name for p in (out / "runs").glob("*.jsonl")) == [f"trial-{n:04d}.jsonl" for n in range(5)]
    from chirpid_io.trainers import ModelRegistry

    registry = ModelRegistry(out / "registry")
    latest = registry.meta(small_cache.path.name, registry.versions(small_cache.path.name)[-1])["tune"]
    assert study.trials[latest["trial"]].value == latest["value"] == study.best_value


def test_jobs_run_worker_processes_on_one_study(small_cache, tmp_path, tiny):
    out = tmp_path / "jobs"
    result = tune(small_cache, out, tiny, trials=3, jobs=2, group=GROUP, device="cpu", report=False,
                  progress=False, pruner="hyperband")
    study = _load(out)
    assert result.finished == 3 and len(study.trials) == 3 and _states(study).get("FAIL", 0) == 0
    assert len({t.user_attrs["pid"] for t in study.trials}) >= 1
    assert all(t.user_attrs["pid"] != os.getpid() for t in study.trials)  # trials ran in the workers


# -- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_event_files_hold_the_logged_scalars(small_cache, tmp_path, tiny):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

    out = tmp_path / "tb-study"
    tune(small_cache, out, tiny, trials=1, group=GROUP, device="cpu", report=False, progress=False,
         tensorboard=str(tmp_path / "tb"))
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "trial-0000"))
    events.Reload()
    epochs = [r for r in read_log(out / "runs" / "trial-0000.jsonl") if r["event"] == "epoch"]
    scalars = events.Tags()["scalars"]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"):
        assert key in scalars
        got = events.Scalars(key)
        assert [e.step for e in got] == [r["epoch"] for r in epochs]
        np.testing.assert_allclose([e.value for e in got], [r[key] for r in epochs], rtol=1e-6)
    assert "config" in " ".join(events.Tags()["tensors"])  # the run's settings as text


def test_the_package_imports_and_logs_without_tensorboard(tmp_path):
    # a real interpreter in which tensorboard cannot be imported
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'tensorboard' or name.startswith('tensorboard.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from chirpid_io.trainers.explog import ExperimentLog\n"
        "from chirpid_io.errors import ConfigError\n"
        f"ExperimentLog({str(tmp_path / 'a.jsonl')!r}).close()\n"
        "try:\n"
        f"    ExperimentLog({str(tmp_path / 'b.jsonl')!r}, tensorboard={str(tmp_path / 'tb')!r})\n"
        "except ConfigError as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: TensorBoard logging to" in done.stdout and "pip install tensorboard" in done.stdout


def test_train_command_writes_tensorboard_and_its_report(small_cache, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from chirpid_io.cli import main

    log = tmp_path / "run.jsonl"
    assert main(["train", str(small_cache.path), str(tmp_path / "models"), "--epochs", "2", "--model-arg", "width=4",
                 "--device", "cpu", "--amp", "off", "--group", GROUP, "--experiment-log", str(log),
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = [r["val_loss"] for r in read_log(log) if r["event"] == "epoch"]
    np.testing.assert_allclose([e.value for e in events.Scalars("val_loss")], losses, rtol=1e-6)
    for path in (log.with_suffix(".html"), tmp_path / "run-history.png", tmp_path / "run-confusion.png"):
        assert path.is_file() and path.stat().st_size > 1000


def test_the_best_of_a_study_is_promoted_over_a_later_version_of_it(small_cache, tmp_path):
    from chirpid_io.trainers import BirdCNN, ModelRegistry
    from chirpid_io.trainers.tune import _promote

    registry = ModelRegistry(tmp_path / "registry")
    for trial, value in ((3, 0.9), (5, 0.7)):  # trial 5 registered, then died before it was told
        registry.save(BirdCNN(7, width=4), "birds", cache=small_cache,
                      extra={"tune": {"study": "db#s", "trial": trial, "value": value}})
    registry.save(BirdCNN(7, width=4), "birds", cache=small_cache, extra={"tune": {"study": "other#s", "trial": 9}})
    assert _promote(registry.root, "birds", "db#s", [3]) == (4, 3)
    assert registry.meta("birds", 4)["tune"] == {"study": "db#s", "trial": 3, "value": 0.9}
    assert _promote(registry.root, "birds", "db#s", [3]) == (4, 3)  # already the study's latest: kept
    assert _promote(registry.root, "birds", "db#s", [7]) == (None, None)
