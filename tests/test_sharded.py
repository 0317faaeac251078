"""Sharded builds with an exact merge (issue 13, item 2): parts built side by side, merged
into what one build of the same input makes, crash-safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from chirpid_io.cache import build_cache, open_cache, verify_cache
from chirpid_io.cache.build import part_of
from chirpid_io.cache.merge import merge_cache
from chirpid_io.errors import CacheError, ConfigError

from test_cache import CONFIG, STORAGE, build, make_corpus

REPO = Path(__file__).resolve().parents[1]


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1", **extra}


def contents(path: Path) -> dict:
    cache = open_cache(path)
    return {"specs": cache.read(np.arange(len(cache))), "labels": cache.labels, "label_sets": cache.label_sets,
            "windows": cache.windows.to_pylist(), "recordings": cache.recordings.to_pylist(),
            "class_names": cache.class_names, "stats": cache.attrs["stats"], "band_sums": cache.attrs["band_sums"],
            "counts": cache.attrs["counts"],
            "shards": {p.relative_to(path): p.read_bytes() for p in sorted((path / "specs" / "c").rglob("0"))
                       if p.is_file()}}


def assert_equal(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["specs"], b["specs"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    for x, y in zip(a["label_sets"], b["label_sets"]):
        np.testing.assert_array_equal(x, y)
    for key in ("windows", "recordings", "class_names", "stats", "band_sums", "counts", "shards"):
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("sharded-corpus"), extra=2)


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "cache"
    build(corpus, out)
    return out


PART_SCRIPT = """
import sys
from chirpid_io.cache import build_cache
from test_cache import CONFIG, STORAGE
build_cache(sys.argv[1], sys.argv[2], CONFIG, storage=STORAGE, workers=1, progress=False,
            part=(int(sys.argv[3]), int(sys.argv[4])))
"""


def test_parts_built_side_by_side_merge_into_the_single_build(corpus, single, tmp_path):
    parts = tmp_path / "parts"
    jobs = [subprocess.Popen([sys.executable, "-c", PART_SCRIPT, str(corpus), str(parts), str(i), "3"], env=env())
            for i in range(3)]  # one process per part, at the same time
    assert [job.wait(timeout=300) for job in jobs] == [0, 0, 0]
    names = sorted(p.name for p in parts.iterdir())
    assert names == ["part-000-of-003", "part-001-of-003", "part-002-of-003"]
    in_parts = [set(open_cache(parts / n).recordings.column("path").to_pylist()) for n in names]
    assert sum(map(len, in_parts)) == len(set().union(*in_parts)) == open_cache(single).recordings.num_rows
    for i, paths in enumerate(in_parts):
        assert all(part_of(p, 3) == i for p in paths)
    merged = tmp_path / "merged"
    report = merge_cache(merged, [parts / n for n in names[::-1]], progress=False)  # any order of the parts
    assert report.windows_total == len(open_cache(single))
    assert_equal(contents(merged), contents(single))
    assert verify_cache(merged).ok


def test_the_split_is_stable_and_defaults_from_torchrun_and_slurm(corpus, tmp_path):
    for variables, expected in (({"RANK": "1", "WORLD_SIZE": "2"}, "part-001-of-002"),
                                ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4",
                                  "SLURM_ARRAY_TASK_COUNT": "2"}, "part-001-of-002")):
        out = tmp_path / f"env-{len(variables)}"
        result = subprocess.run([sys.executable, "-m", "chirpid_io", "build-cache", corpus, out, "--window-seconds",
                                 "1", "--workers", "0", "--no-progress"], env=env(**variables), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert [p.name for p in out.iterdir()] == [expected]
    assert part_of("alpha/alpha_0.wav", 7) == part_of("alpha/alpha_0.wav", 7)  # a hash, not the order of listing
    with pytest.raises(ConfigError, match="--max-per-class needs every recording of a class in one process"):
        build_cache(corpus, tmp_path / "capped", CONFIG, part=(0, 2), max_per_class=3, progress=False)


MERGE_SCRIPT = """
import sys
from chirpid_io.cache.merge import merge_cache
merge_cache(sys.argv[1], sys.argv[2:], progress=False)
"""


def test_a_killed_merge_resumes_to_the_same_cache(corpus, single, tmp_path):
    parts = [tmp_path / "parts" / f"part-{i:03d}-of-002" for i in range(2)]
    for i in range(2):
        build_cache(corpus, tmp_path / "parts", CONFIG, storage=STORAGE, workers=0, progress=False, part=(i, 2))
    out = tmp_path / "merged"
    proc = subprocess.Popen([sys.executable, "-c", MERGE_SCRIPT, str(out), *map(str, parts)], env=env())
    journal = out / "build-journal.jsonl"
    while proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    merge_cache(out, parts, progress=False)
    assert_equal(contents(out), contents(single))


def test_parts_that_do_not_belong_together_are_refused(corpus, single, tmp_path):
    for i in range(2):
        build_cache(corpus, tmp_path / "parts", CONFIG, storage=STORAGE, workers=0, progress=False, part=(i, 2))
    first = tmp_path / "parts" / "part-000-of-002"
    with pytest.raises(CacheError, match="not every part of one sharded build"):
        merge_cache(tmp_path / "m1", [first], progress=False)
    with pytest.raises(CacheError, match="is in both"):
        merge_cache(tmp_path / "m2", [single, first], progress=False)
    build_cache(corpus, tmp_path / "other", CONFIG.replace(n_mels=24), storage=STORAGE, workers=0, progress=False,
                part=(1, 2))
    with pytest.raises(CacheError, match="another recipe"):
        merge_cache(tmp_path / "m3", [first, tmp_path / "other" / "part-001-of-002"], progress=False)


def test_the_documented_way_two_background_processes_then_merge(tmp_path):
    """README's commands, as written there: two parts side by side on one machine."""
    script = textwrap.dedent(f"""
        set -e
        cd {tmp_path}
        for i in 0 1; do
          {sys.executable} -m chirpid_io build-cache --samples parts --part $i/2 --workers 1 --no-progress > part-$i.log &
        done
        wait
        {sys.executable} -m chirpid_io merge-cache sample-cache parts/part-* --no-progress
        {sys.executable} -m chirpid_io build-cache --samples single --no-progress
    """)
    result = subprocess.run(["bash", "-c", script], env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert_equal(contents(tmp_path / "sample-cache"), contents(tmp_path / "single"))
    assert json.loads((tmp_path / "sample-cache" / "zarr.json").read_text())["attributes"]["provenance"]["source"] == \
        "merge-cache"
