"""Real data as users bring it (issue 11): BirdCLEF tables, column mapping, folders of links,
recipes from the command line, and an old PNG set migrated with every label.

The audio is the bundled recordings, laid out the way the field's data sets are.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chirpid_io.cache import build_cache, open_cache
from chirpid_io.config import SpectrogramConfig, preset
from chirpid_io.errors import ConfigError, ManifestError
from chirpid_io.inputs import ColumnMap, discover, samples_dir

REPO = Path(__file__).resolve().parents[1]
SAMPLES = samples_dir()
#: short windows so the clips give several each, and every window kept
RECIPE = SpectrogramConfig(sample_rate=16_000, window_seconds=1.0, hop_seconds=1.0, n_fft=512, win_length=512,
                           hop_length=128, n_mels=32, fmax=8_000.0, pad_short=True, energy_threshold=None)
BIRDCLEF_COLUMNS = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
                    "latitude", "longitude", "scientific_name", "common_name", "author", "license"]


def sample_rows(*labels: str) -> list[dict]:
    with open(SAMPLES / "manifest.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["label"] in labels]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "chirpid_io", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def birdclef(tmp_path_factory):
    """A BirdCLEF-2021-style set: train_audio/<label>/<file> (links to the samples), and a
    train_metadata.csv naming files without their folder, as 2021 did."""
    root = tmp_path_factory.mktemp("birdclef")
    audio = root / "train_audio"
    rows = []
    for i, r in enumerate(sample_rows("great_tit", "zebra_finch", "owl")):
        name = Path(r["path"]).name
        (audio / r["label"]).mkdir(parents=True, exist_ok=True)
        (audio / r["label"] / name).symlink_to(SAMPLES / r["path"])
        secondary = "['zebra_finch', 'houspa']" if r["label"] == "great_tit" else "[]"
        rows.append([r["label"], secondary, "['song']", name if i % 2 else f"{r['label']}/{name}", "XC",
                     2.5 + (i % 5) / 2, f"https://example.org/{i}", 51.75 + i / 100, -1.25, r["label"].title(),
                     r["label"].replace("_", " "), r["group"], "CC-BY 4.0"])
    with open(root / "train_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BIRDCLEF_COLUMNS)
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def birdclef_cache(birdclef, tmp_path_factory):
    out = tmp_path_factory.mktemp("birdclef-cache") / "cache"
    report = build_cache(birdclef / "train_metadata.csv", out, RECIPE, audio_root=birdclef / "train_audio",
                         workers=0, progress=False)
    return out, report


def test_a_birdclef_table_is_recognised_with_every_column_kept(birdclef_cache):
    out, report = birdclef_cache
    cache = open_cache(out)
    assert cache.class_names == ["great_tit", "owl", "zebra_finch"]
    assert len(report.skipped) == 0 and report.recordings_added == len(sample_rows("great_tit", "zebra_finch", "owl"))
    windows = cache.windows
    for column, kind in (("rating", "double"), ("latitude", "double"), ("type", "string"), ("url", "string"),
                         ("license", "string"), ("secondary_labels", "string")):
        assert str(windows.schema.field(column).type) == kind, column
    recordings = cache.recordings.to_pylist()
    by_path = {r["path"]: r for r in recordings}
    rows = windows.to_pylist()
    for row in rows:  # each window carries its recording's columns
        assert row["rating"] == by_path[row["path"]]["rating"] and row["group"] == by_path[row["path"]]["group"]
    # the secondary label that is a class joins the label set; the unknown one is counted, not lost
    tits = [r for r in rows if r["class_name"] == "great_tit"]
    assert tits and all(r["labels"] == ["great_tit", "zebra_finch"] for r in tits)
    assert all(r["labels"] == [r["class_name"]] for r in rows if r["class_name"] != "great_tit")
    n_tit_recordings = len({r["path"] for r in tits})
    assert any(f"{n_tit_recordings} secondary label(s) name no class of this input (houspa x{n_tit_recordings})" in n
               for n in report.notes), report.notes
    assert all(r["secondary_labels"] == "['zebra_finch', 'houspa']" for r in recordings if r["class_name"] == "great_tit")
    counts = cache.attrs["counts"]
    assert counts["per_class_any"]["zebra_finch"] == counts["per_class"]["zebra_finch"] + len(tits)
    targets = cache.multi_hot([r["window_id"] for r in tits[:3]], secondary_weight=0.5)
    np.testing.assert_array_equal(targets, [[1.0, 0.0, 0.5]] * 3)


def test_the_same_table_in_parquet_with_a_list_column_gives_the_same_cache(birdclef, birdclef_cache, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(birdclef / "train_metadata.csv")
    lists = [[s.strip(" '") for s in v.strip("[]").split(",") if s.strip(" '")]
             for v in table.column("secondary_labels").to_pylist()]
    table = table.set_column(table.column_names.index("secondary_labels"), "secondary_labels",
                             pa.array(lists, pa.list_(pa.string())))
    pq.write_table(table, tmp_path / "train.parquet")
    out = tmp_path / "cache"
    build_cache(tmp_path / "train.parquet", out, RECIPE, audio_root=birdclef / "train_audio", workers=0,
                progress=False)
    mine, theirs = open_cache(out), open_cache(birdclef_cache[0])
    assert mine.windows.column("labels").to_pylist() == theirs.windows.column("labels").to_pylist()
    np.testing.assert_array_equal(mine.read(np.arange(len(mine))), theirs.read(np.arange(len(theirs))))


def test_any_table_through_an_explicit_column_mapping(birdclef, birdclef_cache, tmp_path):
    with open(birdclef / "train_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "mine.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "species", "recordist", "also_heard", "quality"])
        for r in rows:
            entry = r["filename"] if "/" in r["filename"] else f"{r['primary_label']}/{r['filename']}"
            writer.writerow([entry, r["primary_label"], r["author"], r["secondary_labels"], r["rating"]])
    args = ["build-cache", tmp_path / "mine.csv", tmp_path / "cache", "--audio-root", birdclef / "train_audio",
            "--path-column", "file", "--label-column", "species", "--group-column", "recordist",
            "--labels-column", "also_heard", "--recipe", tmp_path / "recipe.toml", "--workers", "0", "--no-progress"]
    from chirpid_io.cache.format import StorageOptions
    from chirpid_io.recipes import recipe_text

    (tmp_path / "recipe.toml").write_text(recipe_text(RECIPE, StorageOptions()))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "secondary label(s) name no class" in result.stdout
    mine, theirs = open_cache(tmp_path / "cache"), open_cache(birdclef_cache[0])
    assert mine.fingerprint == theirs.fingerprint
    for column in ("labels", "group", "class_name"):
        assert mine.windows.column(column).to_pylist() == theirs.windows.column(column).to_pylist(), column
    assert mine.windows.column("quality").to_pylist() == theirs.windows.column("rating").to_pylist()
    with pytest.raises(ManifestError, match="no column 'nope' for --group-column"):
        discover(tmp_path / "mine.csv", audio_root=birdclef / "train_audio",
                 columns=ColumnMap(path="file", label="species", group="nope"))


def test_a_taxonomy_class_map_keeps_secondary_species_without_recordings(birdclef, tmp_path):
    taxonomy = tmp_path / "taxonomy.csv"
    taxonomy.write_text("primary_label,common_name\ngreat_tit,x\nhouspa,House Sparrow\nowl,x\nzebra_finch,x\n")
    m = discover(birdclef / "train_metadata.csv", audio_root=birdclef / "train_audio", class_map=taxonomy)
    assert m.kind == "birdclef" and m.class_names == ["great_tit", "houspa", "owl", "zebra_finch"]
    tit = next(r for r in m.recordings if r.label == "great_tit")
    assert tit.secondary == ("zebra_finch", "houspa") and not m.notes


def test_a_folder_of_links_is_read_and_a_dangling_link_skipped(tmp_path):
    real = tmp_path / "real"
    for r in sample_rows("duck", "owl"):
        (real / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / r["path"], real / r["path"])
    linked = tmp_path / "kaggle_input"
    linked.mkdir()
    (linked / "duck").symlink_to(real / "duck")  # a class folder that is a link
    (linked / "owl").mkdir()
    for path in (real / "owl").iterdir():  # files that are links
        (linked / "owl" / path.name).symlink_to(path)
    (linked / "owl" / "lost.wav").symlink_to(tmp_path / "nowhere.wav")
    reference = build_cache(real, tmp_path / "ref", RECIPE, workers=0, progress=False)
    report = build_cache(linked, tmp_path / "cache", RECIPE, workers=0, progress=False)
    assert [p for p, _ in report.skipped] == ["owl/lost.wav"]
    assert "is a symbolic link to" in report.skipped[0][1] and "which does not exist" in report.skipped[0][1]
    mine, theirs = open_cache(tmp_path / "cache"), open_cache(tmp_path / "ref")
    assert reference.windows_total == len(mine)
    np.testing.assert_array_equal(mine.read(np.arange(len(mine))), theirs.read(np.arange(len(theirs))))


def test_paths_a_table_writes_outside_the_root_need_the_opt_in(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(SAMPLES / "owl" / sorted(os.listdir(SAMPLES / "owl"))[0], elsewhere / "o.wav")
    (tmp_path / "root").mkdir()
    table = tmp_path / "root" / "t.csv"
    table.write_text("path,label\n../elsewhere/o.wav,owl\n")
    result = run_cli("build-cache", table, tmp_path / "cache", "--pad-short", "--no-progress")
    assert result.returncode == 1 and "outside the audio root" in result.stderr and "--allow-outside-root" in result.stderr
    result = run_cli("build-cache", table, tmp_path / "cache", "--pad-short", "--no-progress", "--allow-outside-root")
    assert result.returncode == 0, result.stderr
    assert open_cache(tmp_path / "cache").recordings.column("path").to_pylist() == [str(elsewhere / "o.wav")]


# --------------------------------------------------------------------------- recipes


def test_inspect_recipe_rebuilds_the_same_fingerprint(birdclef_cache, birdclef, tmp_path):
    printed = run_cli("inspect", birdclef_cache[0], "--recipe")
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "recipe.toml").write_text(printed.stdout)
    result = run_cli("build-cache", birdclef / "train_metadata.csv", tmp_path / "again", "--audio-root",
                     birdclef / "train_audio", "--recipe", tmp_path / "recipe.toml", "--workers", "0", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert open_cache(tmp_path / "again").fingerprint == open_cache(birdclef_cache[0]).fingerprint


def test_every_recipe_field_from_flags_presets_and_files(tmp_path):
    from argparse import Namespace

    from chirpid_io.cli import build_parser, recipe_from_args

    parser = build_parser()
    args = parser.parse_args(["build-cache", "in", "out", "--n-mels", "128", "--n-fft", "1024", "--win-length", "1024",
                              "--hop-length", "320", "--fmin", "50", "--fmax", "14000", "--top-db", "none",
                              "--no-center", "--level", "5"])
    config, storage = recipe_from_args(args)
    assert config == SpectrogramConfig(n_mels=128, n_fft=1024, win_length=1024, hop_length=320, fmin=50.0,
                                       fmax=14_000.0, top_db=None, center=False)
    assert storage.level == 5
    config, storage = recipe_from_args(parser.parse_args(["build-cache", "in", "out", "--preset", "birdclef"]))
    assert config == preset("birdclef") and storage is None and config.shape == (128, 501)
    config, _ = recipe_from_args(parser.parse_args(["build-cache", "in", "out", "--window-seconds", "3"]))
    assert config.hop_seconds == 3.0  # a window length alone: no gaps, no overlap
    (tmp_path / "r.json").write_text(json.dumps({"preset": "birdclef", "spectrogram": {"n_mels": 64}}))
    config, _ = recipe_from_args(parser.parse_args(["build-cache", "in", "out", "--recipe", str(tmp_path / "r.json"),
                                                    "--fmax", "12000"]))
    assert config == preset("birdclef").replace(n_mels=64, fmax=12_000.0)
    (tmp_path / "bad.toml").write_text("[spectrogram]\nn_mel = 64\n")
    with pytest.raises(ConfigError, match=r"unknown \[spectrogram\] field\(s\) n_mel; known: sample_rate"):
        recipe_from_args(parser.parse_args(["build-cache", "in", "out", "--recipe", str(tmp_path / "bad.toml")]))
    (tmp_path / "typed.toml").write_text("[spectrogram]\nn_mels = 'many'\n")
    with pytest.raises(ConfigError, match=r"n_mels = 'many': must be int"):
        recipe_from_args(parser.parse_args(["build-cache", "in", "out", "--recipe", str(tmp_path / "typed.toml")]))
    assert Namespace  # the Namespace import documents what recipe_from_args reads


# --------------------------------------------------------------------------- old PNG sets


@pytest.fixture(scope="module")
def old_set(tmp_path_factory):
    """An old PNG set whose recordings share a stem across classes (alpha/rec1.wav and
    beta/rec1.wav), 11 s each (two 5 s windows), made by the old code."""
    pytest.importorskip("librosa")
    import soundfile as sf

    from chirpid_io.legacy import legacy_preprocess

    root = tmp_path_factory.mktemp("old")
    rng = np.random.default_rng(0)
    t = np.arange(11 * 32_000) / 32_000
    for label, freq in (("alpha", 700.0), ("beta", 3_000.0)):
        for name in ("rec1.wav", "rec2.wav"):
            wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
            (root / "audio" / label).mkdir(parents=True, exist_ok=True)
            sf.write(root / "audio" / label / name, wave.astype(np.float32), 32_000)
    summary = legacy_preprocess(root / "audio", root / "old", cap_per_class=None)
    assert summary.written == 8
    return root / "old"


def test_an_old_png_set_is_imported_with_every_label_and_per_recording_starts(old_set, tmp_path):
    from chirpid_io.legacy import read_legacy_dataset

    out = tmp_path / "cache"
    report = build_cache(old_set / "spectrograms.csv", out, progress=False)
    cache = open_cache(out)
    rows = cache.windows.to_pylist()
    assert report.windows_added == len(rows) == 8
    assert [(r["path"], r["class_name"], r["start_seconds"]) for r in rows] == [
        ("alpha/rec1.wav", "alpha", 0.0), ("alpha/rec1.wav", "alpha", 5.0),
        ("alpha/rec2.wav", "alpha", 0.0), ("alpha/rec2.wav", "alpha", 5.0),
        ("beta/rec1.wav", "beta", 0.0), ("beta/rec1.wav", "beta", 5.0),
        ("beta/rec2.wav", "beta", 0.0), ("beta/rec2.wav", "beta", 5.0)]
    old = read_legacy_dataset(old_set / "spectrograms.csv")
    np.testing.assert_array_equal(cache.read(np.arange(8)), old.images)  # the PNG pixels, untouched
    assert build_cache(old_set / "spectrograms.csv", out, progress=False).windows_added == 0


def test_a_recordings_csv_of_another_kind_beside_an_old_set_is_not_taken_for_the_old_one(old_set, tmp_path):
    """A path,label,group table that happens to be called recordings.csv (as the benchmark
    writes one) is not the old recordings table: the set imports by consecutive rows, and
    says so."""
    copied = tmp_path / "copied"
    shutil.copytree(old_set, copied)
    (copied / "recordings.csv").write_text("path,label,group\nrec1.wav,alpha,a\n")
    result = run_cli("build-cache", copied / "spectrograms.csv", tmp_path / "cache", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "recordings.csv beside it is not an old recordings table" in result.stdout + result.stderr
    cache = open_cache(tmp_path / "cache")
    assert cache.windows.column("class_name").to_pylist() == ["alpha"] * 4 + ["beta"] * 4
    (copied / "recordings.csv").write_text("filename,class_id\nrec1.wav,0\n")  # an old one, damaged: refused
    result = run_cli("build-cache", copied / "spectrograms.csv", tmp_path / "cache2", "--no-progress")
    assert result.returncode != 0 and "usable_segments" in result.stderr


def test_an_old_sets_class_map_kept_elsewhere_is_honoured(old_set, tmp_path):
    names = tmp_path / "elsewhere" / "species.csv"
    names.parent.mkdir()
    names.write_text("class_id,scientific_name,common_name\n0,Aa alpha,A\n1,Bb beta,B\n")
    copied = tmp_path / "copied"
    shutil.copytree(old_set, copied)
    (copied / "classes.csv").unlink()
    result = run_cli("build-cache", copied / "spectrograms.csv", tmp_path / "cache", "--class-map", names,
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    cache = open_cache(tmp_path / "cache")
    assert cache.class_names == ["Aa alpha", "Bb beta"]
    assert cache.windows.column("class_name").to_pylist() == ["Aa alpha"] * 4 + ["Bb beta"] * 4


def test_storage_options_on_extend_are_refused_and_tables_that_disagree_named(old_set, tmp_path):
    from chirpid_io.cache import StorageOptions

    out = tmp_path / "cache"
    build_cache(old_set / "spectrograms.csv", out, progress=False)
    with pytest.raises(ConfigError, match=r"other StorageOptions \(level: 3 there, 9 asked\)"):
        build_cache(old_set / "spectrograms.csv", out, storage=StorageOptions(level=9), progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(old_set, broken)
    text = (broken / "recordings.csv").read_text().splitlines()
    text[1] = text[1].replace(",2,", ",3,")  # the first recording claims a third window
    (broken / "recordings.csv").write_text("\n".join(text) + "\n")
    # its first recording now takes a beta window too: the next one is named, with the fix
    with pytest.raises(ManifestError, match=r"recordings.csv, data row 2 .*should be rows 4-5 .*data row 5 is of "
                                            r"class_id 1, not 0\. Fix: .*remove recordings.csv"):
        discover(broken / "spectrograms.csv")


# --------------------------------------------------------------------------- the command line is the API


def test_train_and_build_defaults_are_the_apis():
    from chirpid_io.cache.format import StorageOptions
    from chirpid_io.cli import build_parser, recipe_from_args
    from chirpid_io.loaders import Augment
    from chirpid_io.options import given
    from chirpid_io.trainers import TrainConfig
    from chirpid_io.trainers.run import RunSpec

    args = build_parser().parse_args(["train", "cache", "models"])
    assert TrainConfig(**given(args, TrainConfig)) == TrainConfig()
    assert RunSpec(**given(args, RunSpec)) == RunSpec() and Augment(**given(args, Augment)) == Augment()
    config, storage = recipe_from_args(build_parser().parse_args(["build-cache", "in", "out"]))
    assert config == SpectrogramConfig() and storage is None and StorageOptions() == StorageOptions()
    assert TrainConfig().early_stopping == ("val_loss", "val_macro_f1") and TrainConfig().patience == 10


@pytest.mark.parametrize("command", ["build-cache", "inspect", "verify", "train", "predict"])
def test_every_subcommand_explains_itself_and_states_its_defaults(command):
    import argparse

    from chirpid_io.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    assert sub.description and len(sub.description) > 60
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), (command, action.option_strings)
