"""Beyond one machine (issue 13, item 1): DDP training under torchrun, gloo on the CPU,
two processes started by the tests themselves."""

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

from chirpid_io.cache import build_cache, open_cache
from chirpid_io.config import SpectrogramConfig
from chirpid_io.inputs import samples_dir
from chirpid_io.loaders import group_split
from chirpid_io.loaders.samplers import ChunkShuffleSampler
from chirpid_io.trainers import ModelRegistry
from chirpid_io.trainers.explog import read_log

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
RECIPE = SpectrogramConfig(sample_rate=16_000, window_seconds=0.5, hop_seconds=0.25, n_fft=512, win_length=512,
                           hop_length=128, n_mels=32, fmax=8_000.0, pad_short=True, energy_threshold=None)
#: what both the single-process and the two-process runs train with: no augmentation (its
#: draws are per rank), no early stop, no report
TRAIN = ["--epochs", "3", "--model-arg", "width=4", "--device", "cpu", "--amp", "off", "--batch-size", "8",
         "--group", "recording_id", "--no-augment", "--patience", "none", "--no-report", "--no-progress"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "cache"
    build_cache(samples_dir(), out, RECIPE, workers=0, progress=False)
    return open_cache(out)


def test_the_ranks_together_read_exactly_the_single_process_epoch(cache, tmp_path):
    out = tmp_path / "seen.json"
    subprocess.run([*TORCHRUN, str(REPO / "tests" / "ddp_probe.py"), str(cache.path), str(out), "3"], env=env(),
                   check=True, timeout=300, capture_output=True)
    ranks = sorted(json.loads(out.read_text()), key=lambda r: r["rank"])
    assert [r["batch"] for r in ranks] == [4, 4] and ranks[0]["batches"] == ranks[1]["batches"]
    train_idx, val_idx = group_split(cache, 0.2, group="recording_id", seed=0)
    single = ChunkShuffleSampler(len(train_idx), 1, seed=0)
    for epoch in ("1", "2", "3"):
        order = train_idx[single.order(int(epoch))]
        parts = [np.asarray(r["seen"][epoch]).reshape(-1, 4) for r in ranks]
        together = np.stack(parts, axis=1).reshape(-1)  # global batch k = rank 0's k-th batch + rank 1's
        n_batches = -(-len(order) // 8)
        np.testing.assert_array_equal(together, np.resize(order, n_batches * 8))  # the last batch padded
        assert set(together) == set(order)
    scored = sorted(ranks[0]["val"] + ranks[1]["val"])
    assert scored == sorted(val_idx.tolist())  # validation: every window once, none twice


def test_two_processes_train_to_the_single_process_metrics(cache, tmp_path):
    single = subprocess.run([sys.executable, "-m", "chirpid_io", "train", str(cache.path), str(tmp_path / "one"),
                             *TRAIN, "--experiment-log", str(tmp_path / "one.jsonl")], env=env(), capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([*TORCHRUN, "-m", "chirpid_io", "train", str(cache.path), str(tmp_path / "two"), *TRAIN,
                             "--experiment-log", str(tmp_path / "two.jsonl")], env=env(), capture_output=True, text=True,
                            timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("registered") == 1  # rank 0 alone prints, logs and registers
    one, two = (ModelRegistry(tmp_path / d).load("cache") for d in ("one", "two"))
    assert two.meta["run"]["n_train"] == one.meta["run"]["n_train"]
    epochs_one = [r for r in read_log(tmp_path / "one.jsonl") if r["event"] == "epoch"]
    epochs_two = [r for r in read_log(tmp_path / "two.jsonl") if r["event"] == "epoch"]
    assert len(epochs_two) == len(epochs_one) == 3
    # the same steps on the same global batches; on CPU batch norm sees each rank's half of
    # a batch (SyncBatchNorm is GPU-only), which is all that differs: within 5% of the loss
    for a, b in zip(epochs_one, epochs_two):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.05)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)
        assert b["lr"] == a["lr"]


def test_a_killed_job_resumes_on_every_rank(cache, tmp_path):
    checkpoints = tmp_path / "ckpt"
    args = [*TORCHRUN, "-m", "chirpid_io", "train", str(cache.path), str(tmp_path / "models"),
            *[a if a != "3" else "6" for a in TRAIN], "--checkpoint-dir", str(checkpoints)]
    job = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        if (checkpoints / "last.pt").exists():
            os.killpg(job.pid, signal.SIGKILL)  # the whole job: the agent and both ranks
            break
        time.sleep(0.05)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    resumed = subprocess.run([*args, "--resume"], env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    entry = ModelRegistry(tmp_path / "models").load("cache")
    assert entry.meta["resumed_at_epoch"] >= 1 and entry.meta["epochs_run"] == 6


def test_a_rank_that_dies_ends_the_job(cache, tmp_path):
    args = [*TORCHRUN, "-m", "chirpid_io", "train", str(cache.path), str(tmp_path / "models"),
            *[a if a != "3" else "50" for a in TRAIN], "--checkpoint-dir", str(tmp_path / "ckpt")]
    job = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "ckpt" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        children = _descendants(job.pid)
        workers = [p for p in children if "chirpid_io" in _cmdline(p) and p != job.pid]
        assert workers, "no worker processes found"
        os.kill(workers[-1], signal.SIGKILL)  # one rank dies; the other must not hang
        job.wait(timeout=180)
        assert job.returncode != 0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            out += map(int, children)
            todo += map(int, children)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
