"""Caches on object storage, against a real S3-protocol server on 127.0.0.1 (moto's server
mode in its own process, with request signing on: ``tests/s3server.py``), started and
stopped by this module.

What is checked: a cache of the bundled recordings built to ``s3://bucket/...`` (through the
API and through the CLI in a subprocess) holds the same bytes as a local build and reads
the same batches, through ``open_cache`` and ``make_loader`` (0 and 1 workers); ``inspect``
and ``verify`` work on the URL; a build SIGKILLed after some journal objects exist resumes
to a clean build; ``verify`` names a damaged and a missing shard object; a second writer is
refused, a stale lock is taken over and a lost lock stops its writer; a reader pinned
before an append keeps reading the old state; wrong credentials, a missing bucket and an
unreachable endpoint are one-line errors that name the URL and the fix.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto")

from chirpid_io.cache import StorageOptions, build_cache, open_cache, verify_cache  # noqa: E402
from chirpid_io.cache.files import ObjectURL, cache_location, open_store  # noqa: E402
from chirpid_io.errors import CacheError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3server import LocalS3  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: many small shards and two windows per chunk: batches touch several shard objects and
#: the journal gets one object per shard
STORAGE = StorageOptions(chunk_windows=2, shard_windows=16)
CLI_FLAGS = ["--sample-rate", "16000", "--window-seconds", "0.5", "--hop-seconds", "0.25", "--n-fft", "512",
             "--win-length", "512", "--hop-length", "128", "--n-mels", "32", "--fmax", "8000",
             "--chunk-windows", "2", "--shard-windows", "16", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def s3():
    with LocalS3() as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        yield server


@pytest.fixture(scope="module")
def local(tmp_path_factory, small_config):
    from chirpid_io.manifest import samples_dir

    out = tmp_path_factory.mktemp("objstore") / "local"
    build_cache(samples_dir(), out, small_config, storage=STORAGE, workers=0, progress=False)
    return out


@pytest.fixture(scope="module")
def remote(s3, small_config):
    from chirpid_io.manifest import samples_dir

    report = build_cache(samples_dir(), "s3://bucket/cache", small_config, storage=STORAGE, workers=0, progress=False)
    assert str(report.path) == "s3://bucket/cache" and report.bytes_on_disk > 0
    return "s3://bucket/cache"


def objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object below ``prefix`` (key relative to it -> content)."""
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix) + 1:]] = body
    return out


def assert_same_cache(s3, prefix: str, local: Path) -> None:
    """The objects below ``prefix`` hold exactly the local cache's files: shards, arrays
    and tables byte for byte; the attributes equal but for the id and the finish time."""
    stored = objects(s3, prefix)
    files = {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    data = lambda keys: sorted(k for k in keys if k.startswith(("specs/c/", "labels/", "label_")) or k.endswith(".parquet"))  # noqa: E731
    assert data(stored) == data(files) and len(data(files)) > 10
    for key in data(files):
        assert stored[key] == files[key], key
    attrs = [json.loads(d["zarr.json"])["attributes"] for d in (stored, files)]
    for a in attrs:
        a.pop("cache_id"), a["provenance"].pop("finished")
    assert attrs[0] == attrs[1]
    assert "build.lock" not in stored  # released at the end
    assert not any(k.startswith("build-journal.jsonl") for k in stored)  # the journal is objects, below:
    assert any(k.startswith("build-journal/") for k in stored)


# -- where a cache is ---------------------------------------------------------------------


def test_urls_stay_urls_and_bad_ones_are_refused():
    assert cache_location("s3://bucket/a/cache/") == "s3://bucket/a/cache"
    assert isinstance(cache_location("gs://b/c"), ObjectURL) and cache_location("az://c/p") / "zarr.json" == "az://c/p/zarr.json"
    assert cache_location("cache") == Path("cache")
    with pytest.raises(CacheError, match=r"one slash; write s3://bucket/cache \(and pass URLs as strings"):
        cache_location(Path("s3://bucket/cache"))  # what Path() makes of a URL
    for bad in ("s3:///cache", "s3://bucket/a/../b", "s3://bucket//cache"):
        with pytest.raises(CacheError, match="not a usable cache URL"):
            open_store(bad)
    with pytest.raises(CacheError) as caught:  # refused by obstore before any request
        open_store("s3://bucket/evil\x1b[2J\nname/c").exists("zarr.json")
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    assert str(caught.value).startswith("s3://bucket/evil\\x1b[2J\\nname/c: cannot configure the object store")


def test_importing_chirpid_io_and_its_cache_does_not_import_obstore():
    probe = subprocess.run([sys.executable, "-c", "import sys, chirpid_io, chirpid_io.cache, chirpid_io.cache.objects; "
                            "print([m for m in ('obstore', 'boto3', 'moto') if m in sys.modules])"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert probe.stdout.strip() == "[]", probe.stderr


# -- the same cache, in a bucket ----------------------------------------------------------


def test_a_cache_built_to_s3_equals_a_local_build(s3, remote, local):
    assert_same_cache(s3, "cache", local)
    cache, reference = open_cache(remote), open_cache(local)
    assert cache.path == "s3://bucket/cache" and len(cache) == len(reference) > 200
    assert repr(cache).startswith("Cache('s3://bucket/cache'")
    rng = np.random.default_rng(7)
    for indices in (rng.choice(len(cache), 42, replace=False), rng.choice(len(cache), 42), np.arange(len(cache))[::-1],
                    np.arange(30, 70), np.array([5])):
        np.testing.assert_array_equal(cache.read(indices), reference.read(indices))
        np.testing.assert_array_equal(cache.read(indices, residuals=True), reference.read(indices, residuals=True))
    assert cache.windows.equals(reference.windows) and cache.recordings.equals(reference.recordings)
    np.testing.assert_array_equal(cache.labels, reference.labels)
    for a, b in zip(cache.label_sets, reference.label_sets):
        np.testing.assert_array_equal(a, b)
    assert cache.specs.shape == (len(cache), *cache.config.shape)  # zarr-python reads it through the URL too
    np.testing.assert_array_equal(cache.specs[10:20], reference.read(np.arange(10, 20)))
    report = verify_cache(remote)
    assert report.ok and report.path == "s3://bucket/cache" and report.chunks_checked == -(-len(cache) // 2)


def test_a_cache_pickles_without_its_connection_and_reopens_it(remote):
    cache = open_cache(remote)
    expected = cache.read(np.arange(40))
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.store._client is None  # nothing of the connection (nor credentials) travelled
    np.testing.assert_array_equal(copy.read(np.arange(40)), expected)
    assert b"AWS" not in pickle.dumps(cache) and os.environ["AWS_SECRET_ACCESS_KEY"].encode() not in pickle.dumps(cache)


@pytest.mark.parametrize("workers", [0, 1])
def test_make_loader_gives_the_same_batches(remote, local, workers):
    from chirpid_io.loaders import make_loader

    def batches(where):
        loader = make_loader(where, 42, num_workers=workers, seed=3, device="cpu")
        return [(x.numpy(), y.numpy()) for x, y in loader]

    ours, theirs = batches(remote), batches(local)
    assert len(ours) == len(theirs) >= 6
    for (x, y), (x2, y2) in zip(ours, theirs):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_a_forked_process_is_told_to_spawn_instead_of_hanging(remote):
    cache = open_cache(remote)
    cache.read(np.arange(3))  # obstore's runtime runs in this process now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a DataLoader worker started with fork would be here
        try:
            cache.read(np.arange(3))
            message = b"read"
        except CacheError as exc:
            message = str(exc).encode()
        os.write(write, message[:1000])
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    message = os.read(read, 1000).decode()
    os.close(read)
    assert "does not survive fork()" in message and "'spawn'" in message and "s3://bucket/cache" in message


# -- the CLI, a killed build, inspect and verify -----------------------------------------------


def cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "chirpid_io", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_cli_build_killed_midway_resumes_to_a_clean_build_then_inspect_and_verify(s3, local):
    url = "s3://bucket/cli-cache"
    # killed from inside right after its third journal object (three shards committed): exact on any machine
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "killpoint.py"), "3", "build-cache", "--samples", url,
                             *CLI_FLAGS], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    left = objects(s3, "cli-cache")
    assert "build.lock" in left  # a killed build cannot release its lock
    assert json.loads(left["zarr.json"])["attributes"]["state"] == "building"
    with pytest.raises(CacheError, match="has not finished: no build is running: the last one was interrupted"):
        open_cache(url)  # the lock names a process of this machine that is gone
    resumed = cli("build-cache", "--samples", url, *CLI_FLAGS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"cache: {url}" in resumed.stdout and "already cached" in resumed.stdout
    added = int(resumed.stdout.split("recordings: ")[1].split(" added")[0])
    assert 0 < added < 30  # it resumed: the recordings of the committed shards were not built again
    assert_same_cache(s3, "cli-cache", local)

    shown = cli("inspect", url)
    assert shown.returncode == 0, shown.stderr
    assert f"cache {url} (format 2" in shown.stdout and "size in the store:" in shown.stdout
    checked = cli("verify", url, "--no-progress")
    assert checked.returncode == 0 and checked.stdout.strip() == f"{url}: ok ({-(-len(open_cache(local)) // 2)} chunks checked)"


# -- damage --------------------------------------------------------------------------------


def copy_prefix(s3, source: str, target: str) -> None:
    client = s3.client()
    for key in objects(s3, source):
        client.copy_object(Bucket=s3.bucket, Key=f"{target}/{key}", CopySource={"Bucket": s3.bucket, "Key": f"{source}/{key}"})


def test_verify_names_a_damaged_and_a_missing_shard_object(s3, remote):
    copy_prefix(s3, "cache", "damaged")
    client = s3.client()
    shard = client.get_object(Bucket=s3.bucket, Key="damaged/specs/c/1/0/0")["Body"].read()
    flipped = bytearray(shard)
    flipped[100] ^= 0x40  # inside the first chunk
    client.put_object(Bucket=s3.bucket, Key="damaged/specs/c/1/0/0", Body=bytes(flipped))
    client.delete_object(Bucket=s3.bucket, Key="damaged/specs/c/3/0/0")
    report = verify_cache("s3://bucket/damaged")
    assert not report.ok
    text = "\n".join(report.problems)
    assert "specs/c/3/0/0 is missing" in text
    assert "windows 16-17 could not be read: chunk 0 of shard file specs/c/1/0/0 is damaged (CRC32C mismatch)" in text
    with pytest.raises(CacheError, match=r"s3://bucket/damaged: 1 of the \d+ shard files .* missing .*specs/c/3/0/0 is missing"):
        open_cache("s3://bucket/damaged")
    checked = cli("verify", "s3://bucket/damaged", "--no-progress")
    assert checked.returncode == 1 and "s3://bucket/damaged: specs: 1 of the" in checked.stderr
    assert "chunk 0 of shard file specs/c/1/0/0 is damaged" in checked.stderr


def test_a_lost_journal_is_rebuilt_and_a_damaged_one_is_named(s3, remote, small_config):
    from chirpid_io.manifest import samples_dir

    copy_prefix(s3, "cache", "nojournal")
    client = s3.client()
    parts = sorted(k for k in objects(s3, "nojournal") if k.startswith("build-journal/"))
    assert parts[0] == "build-journal/00000001.jsonl" and len(parts) == 18  # one per shard written
    for key in parts:
        client.delete_object(Bucket=s3.bucket, Key=f"nojournal/{key}")
    report = build_cache(samples_dir(), "s3://bucket/nojournal", small_config, storage=STORAGE, progress=False)
    assert report.recordings_already_cached == 30 and report.windows_added == 0
    assert any(n.startswith("s3://bucket/nojournal/build-journal/ (the journal: its line N is the object N.jsonl, N in "
                            "8 digits) is missing: rebuilt it from the finished cache") for n in report.notes), report.notes
    assert sorted(k for k in objects(s3, "nojournal") if k.startswith("build-journal/")) == ["build-journal/00000001.jsonl"]
    assert verify_cache("s3://bucket/nojournal").ok
    # an unfinished first build whose third line is damaged: named, with what to delete
    copy_prefix(s3, "cache", "badline")
    group = json.loads(client.get_object(Bucket=s3.bucket, Key="badline/zarr.json")["Body"].read())
    for key in ("counts", "stats", "band_sums", "provenance"):
        del group["attributes"][key]
    group["attributes"]["state"] = "building"
    client.put_object(Bucket=s3.bucket, Key="badline/zarr.json", Body=json.dumps(group).encode())
    client.put_object(Bucket=s3.bucket, Key="badline/build-journal/00000003.jsonl", Body=b'{"v": 2}\n')
    with pytest.raises(CacheError, match=r"s3://bucket/badline/build-journal/ \(the journal: .*\): line 3 is damaged "
                                         r"\(missing key\(s\) first_window.*Fix: delete line 3 and every later line"):
        build_cache(samples_dir(), "s3://bucket/badline", small_config, storage=STORAGE, progress=False)


def test_a_truncated_shard_object_is_damage_not_a_crash(s3, remote):
    copy_prefix(s3, "cache", "truncated")
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="truncated/specs/c/2/0/0", Body=b"")
    client.put_object(Bucket=s3.bucket, Key="truncated/specs/c/4/0/0", Body=b"\0" * 7)
    cache = open_cache("s3://bucket/truncated")
    with pytest.raises(CacheError, match="windows 32-47 could not be read: shard file specs/c/2/0/0 has a damaged index"):
        cache.read(np.arange(30, 40))
    text = "\n".join(verify_cache("s3://bucket/truncated").problems)
    assert "specs/c/2/0/0 has a damaged index or is truncated" in text and "specs/c/4/0/0 has a damaged index" in text


# -- one writer at a time ------------------------------------------------------------------


def test_a_second_writer_is_refused_and_readers_are_told_a_build_runs(s3, small_config):
    from chirpid_io.cache.writer import CacheWriter

    url = "s3://bucket/locked"
    with CacheWriter(url, small_config, STORAGE):
        with pytest.raises(CacheError, match=rf"s3://bucket/locked: another build \(pid {os.getpid()} on .*\) is writing"):
            CacheWriter(url, small_config, STORAGE)
        with pytest.raises(CacheError, match=rf"has not finished: a build \(pid {os.getpid()} .*\) is writing it now"):
            open_cache(url)
    assert "build.lock" not in objects(s3, "locked")
    with CacheWriter(url, small_config, STORAGE):  # released: the next writer gets it
        pass


def put_lock(s3, prefix: str, **record) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/build.lock", Body=json.dumps(record).encode())


def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(s3, small_config, monkeypatch):
    from chirpid_io.cache import objects as objects_module
    from chirpid_io.cache.writer import CacheWriter

    url = "s3://bucket/stale"
    put_lock(s3, "stale", pid=4242, host="elsewhere", since="2026-01-01 00:00:00")  # another machine, fresh
    with pytest.raises(CacheError, match=r"another build \(pid 4242 on elsewhere since 2026-01-01 00:00:00, last heartbeat "
                                         r"\d+ s ago\) is writing .* once its heartbeat is 300 s old; remove "
                                         r"s3://bucket/stale/build.lock by hand only if you know that build is dead"):
        CacheWriter(url, small_config, STORAGE)
    monkeypatch.setattr(objects_module, "LOCK_STALE_SECONDS", 1.0)
    time.sleep(2.2)  # the server's clock stamps objects to the second
    with CacheWriter(url, small_config, STORAGE) as writer:  # its heartbeat is older than the limit: taken over
        assert json.loads(objects(s3, "stale")["build.lock"])["pid"] == os.getpid()
        assert writer.store.exists("zarr.json")
    monkeypatch.setattr(objects_module, "LOCK_STALE_SECONDS", 300.0)
    # a lock of this machine whose process is gone is taken over at once
    gone = subprocess.Popen(["true"])
    gone.wait()
    here = json.loads(objects_module._lock_body())
    put_lock(s3, "stale", **{**here, "pid": gone.pid})
    with CacheWriter(url, small_config, STORAGE):
        pass
    assert "build.lock" not in objects(s3, "stale")


def test_a_writer_whose_lock_was_taken_stops_before_its_next_write(s3, small_config, monkeypatch):
    from chirpid_io.cache import objects as objects_module
    from chirpid_io.cache.writer import CacheWriter

    monkeypatch.setattr(objects_module, "LOCK_HEARTBEAT_SECONDS", 0.05)
    writer = CacheWriter("s3://bucket/taken", small_config, STORAGE)
    put_lock(s3, "taken", pid=1, host="elsewhere", since="now")  # another build took it over
    deadline = time.monotonic() + 10
    while writer._lock.lost is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(CacheError, match="s3://bucket/taken: this build lost its lock .* it stops"):
        writer.store.write("labels/zarr.json", b"{}")
    writer.close()
    assert json.loads(objects(s3, "taken")["build.lock"])["host"] == "elsewhere"  # the new holder's lock stays


# -- readers during an append ----------------------------------------------------------------


def test_a_reader_keeps_the_last_finished_state_while_an_append_rewrites_its_last_shard(s3, small_config):
    from chirpid_io.cache.writer import CacheWriter

    url = "s3://bucket/append"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, *small_config.shape), dtype=np.uint8)  # 2 KB each, incompressible

    def add(writer, i, first, count):
        writer.add_recording({"path": f"a/{i}.wav", "class_name": "a", "status": "ok"}, images[first:first + count],
                             np.arange(count, dtype=float), np.ones(count))

    with CacheWriter(url, small_config, STORAGE) as writer:
        add(writer, 0, 0, 28)  # one full shard and 12 windows (24 KB) in the second
        writer.finish()
    pinned = open_cache(url)
    np.testing.assert_array_equal(pinned.read(np.arange(28)), images[:28])
    kept = pinned.store._tails["specs/c/1/0/0"]  # that shard's tail, kept for the next batch
    with CacheWriter(url, small_config, STORAGE) as writer:
        add(writer, 1, 28, 12)  # rewrites shard 1 whole and writes shard 2; not finished yet
        writer._flush(writer._buffer_start + 16)
        assert len(open_cache(url)) == 28  # a new reader sees the last finished state
        # the pinned reader's kept tail is of the old version: its ranges are refused
        # (If-Match), the shard is opened afresh, and the windows it pinned are unchanged
        np.testing.assert_array_equal(pinned.read(np.arange(10, 28)), images[10:28])
        assert pinned.store._tails.get("specs/c/1/0/0", (0, None))[1] != kept[1]  # dropped, read afresh
        writer.finish()
    np.testing.assert_array_equal(pinned.read(np.arange(28)[::-1]), images[:28][::-1])
    assert len(pinned) == 28
    grown = open_cache(url)
    assert len(grown) == 40
    np.testing.assert_array_equal(grown.read(np.arange(40)), images)
    assert verify_cache(url).ok


def test_an_object_replaced_between_two_reads_is_noticed(s3):
    from chirpid_io.cache.files import ObjectChanged

    store = open_store("s3://bucket/raw")
    first = np.random.default_rng(1).bytes(300_000)
    store.write("blob", first)
    handle = store.open("blob")
    assert handle.pread(299_990, 10) == first[-10:]  # from the tail fetched on opening
    store.write("blob", first[::-1])
    with pytest.raises(ObjectChanged, match="changed while it was being read"):
        handle.pread(0, 100)
    assert store.read("blob") == first[::-1]


# -- one-line errors -------------------------------------------------------------------------


def one_line(message: str) -> str:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    return message


def test_wrong_credentials_name_the_url_and_the_variables(remote, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(CacheError) as caught:
        open_cache(remote)
    message = one_line(str(caught.value))
    # the first request is a HEAD, whose answer has no body to name S3's error code
    assert message.startswith("s3://bucket/cache: access denied (403 Forbidden); set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY"), message
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    shown = cli("inspect", remote)
    assert shown.returncode == 1 and one_line(shown.stderr).startswith(
        "chirpid-io inspect: error: s3://bucket/cache: access denied (403 Forbidden); set AWS_ACCESS_KEY_ID")


def test_a_missing_bucket_and_an_unreachable_endpoint_are_one_line_errors(s3, small_config, monkeypatch):
    with pytest.raises(CacheError) as caught:
        open_cache("s3://no-such-bucket/cache")
    assert one_line(str(caught.value)) == ("s3://no-such-bucket/cache: the bucket 'no-such-bucket' does not exist at "
                                           "this endpoint; create it, or fix the URL or AWS_ENDPOINT_URL")
    built = cli("build-cache", "--samples", "s3://no-such-bucket/cache", *CLI_FLAGS)
    assert built.returncode == 1 and "s3://no-such-bucket/cache: the bucket 'no-such-bucket' does not exist" in built.stderr
    assert one_line(built.stderr)
    checked = cli("verify", "s3://no-such-bucket/cache")
    assert checked.returncode == 1 and "does not exist at this endpoint" in one_line(checked.stderr)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(CacheError) as caught:
        open_cache("s3://bucket/cache")
    assert one_line(str(caught.value)).startswith("s3://bucket/cache: cannot reach the object store at "
                                                  "http://127.0.0.1:9 (")
    assert str(caught.value).endswith("check AWS_ENDPOINT_URL and the network")


def test_overwrite_is_refused_with_the_fix_and_foreign_prefixes_are_left_alone(s3, remote, small_config):
    from chirpid_io.manifest import samples_dir

    with pytest.raises(CacheError, match="s3://bucket/cache: --overwrite is for caches in folders.*Fix: build into a new prefix"):
        build_cache(samples_dir(), remote, small_config, storage=STORAGE, overwrite=True, progress=False)
    s3.client().put_object(Bucket=s3.bucket, Key="photos/cat.jpg", Body=b"not a cache")
    with pytest.raises(CacheError, match="s3://bucket/photos: holds other objects and is not a chirpid-io cache"):
        build_cache(samples_dir(), "s3://bucket/photos", small_config, progress=False)
    assert list(objects(s3, "photos")) == ["cat.jpg"]
    with pytest.raises(CacheError, match="s3://bucket/photos: not a chirpid-io cache \\(no zarr.json\\)"):
        open_cache("s3://bucket/photos")
