"""chirpid_io.manifest: every input kind to exact recordings, and every refusal."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chirpid_io.errors import ChirpIOError, ManifestError
from chirpid_io.manifest import (
    Manifest,
    Recording,
    discover,
    from_chirpid_csv,
    from_folder,
    from_legacy_csv,
    from_table,
    samples_dir,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def summary(manifest: Manifest) -> list[tuple[str, str, str]]:
    return [(r.relpath, r.label, r.group) for r in manifest.recordings]


# ----------------------------------------------------------------------------- folder


def test_folder_per_class_exact(tmp_path: Path) -> None:
    root = tmp_path / "set"
    touch(root / "owl" / "b.WAV")
    touch(root / "owl" / "night" / "a.ogg")  # found recursively
    touch(root / "duck" / "2.flac")
    touch(root / "duck" / "10.Mp3")
    touch(root / "duck" / "notes.txt")  # not audio
    touch(root / "duck" / ".hidden.wav")  # hidden file
    touch(root / "duck" / "._2.flac")  # macOS resource fork
    touch(root / "duck" / ".cache" / "c.wav")  # inside a hidden folder
    (root / "empty_class").mkdir()
    touch(root / ".git" / "x.wav")  # hidden class folder
    touch(root / "loose.wav")  # no class: ignored
    touch(root / "README.md")

    m = from_folder(root)
    assert m.kind == "folder"
    assert m.root == root.resolve()
    assert m.legacy is None
    assert summary(m) == [
        ("duck/10.Mp3", "duck", "duck/10.Mp3"),
        ("duck/2.flac", "duck", "duck/2.flac"),
        ("owl/b.WAV", "owl", "owl/b.WAV"),
        ("owl/night/a.ogg", "owl", "owl/night/a.ogg"),
    ]
    assert [r.path for r in m.recordings] == [(root / r.relpath).resolve() for r in m.recordings]
    assert all(r.path.is_absolute() for r in m.recordings)
    # The empty class keeps its index: indices do not depend on what was found.
    assert m.class_names == ["duck", "empty_class", "owl"]
    assert [m.label_index(n) for n in m.class_names] == [0, 1, 2]
    assert discover(root).recordings == m.recordings


def test_label_index_unknown_label(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "x.wav")
    with pytest.raises(ManifestError, match="'zzz'"):
        from_folder(tmp_path).label_index("zzz")


def test_non_ascii_names(tmp_path: Path) -> None:
    touch(tmp_path / "folder" / "sabiá" / "canção ü.ogg")
    touch(tmp_path / "folder" / "鳥" / "歌.wav")
    m = from_folder(tmp_path / "folder")
    assert summary(m) == [
        ("sabiá/canção ü.ogg", "sabiá", "sabiá/canção ü.ogg"),
        ("鳥/歌.wav", "鳥", "鳥/歌.wav"),
    ]
    assert all(r.path.is_file() for r in m.recordings)

    table = write_csv(
        tmp_path / "folder" / "list.csv",
        ["path", "label", "group"],
        [["鳥/歌.wav", "鳥", "Zoë"], ["sabiá/canção ü.ogg", "sabiá", "José"]],
    )
    t = from_table(table)
    expected = [("鳥/歌.wav", "鳥", "Zoë"), ("sabiá/canção ü.ogg", "sabiá", "José")]
    assert summary(t) == expected
    assert all(r.path.is_file() for r in t.recordings)


@pytest.mark.parametrize(
    "layout, hint",
    [({}, "no class sub-folders"), ({"a/": None, "b/x.txt": b""}, "hold no audio"),
     ({"loose.wav": b""}, "1 audio file(s) but no class")],
)
def test_empty_folder_refused(tmp_path: Path, layout: dict, hint: str) -> None:
    for name, data in layout.items():
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            touch(tmp_path / name, data)
    with pytest.raises(ManifestError, match="no recordings found") as info:
        from_folder(tmp_path)
    assert hint in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_folder_links_are_followed_wherever_they_point(tmp_path: Path) -> None:
    outside = touch(tmp_path / "shared" / "s.wav")
    touch(tmp_path / "mnt" / "duck" / "d1.wav")
    root = tmp_path / "set"
    touch(root / "owl" / "ok.wav")
    (root / "owl" / "link.wav").symlink_to(outside)  # a file elsewhere (a Kaggle input, a share)
    (root / "duck").symlink_to(tmp_path / "mnt" / "duck")  # a whole class folder
    (root / "owl" / "night").symlink_to(tmp_path / "mnt" / "duck")  # a sub-folder
    (root / "owl" / "loop").symlink_to(root / "owl")  # back to an ancestor: walked once
    (root / "owl" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (root / "owl" / "circle.wav").symlink_to(root / "owl" / "circle.wav")
    m = from_folder(root)
    by_rel = {r.relpath: r for r in m.recordings}
    assert sorted(by_rel) == ["duck/d1.wav", "owl/circle.wav", "owl/gone.wav", "owl/link.wav", "owl/night/d1.wav",
                              "owl/ok.wav"]
    assert by_rel["owl/link.wav"].problem == "" and by_rel["owl/link.wav"].path.read_bytes() == b"x"
    assert "which does not exist" in by_rel["owl/gone.wav"].problem
    assert by_rel["owl/circle.wav"].problem == "is a symbolic link loop"
    # the same file reached twice (class folder and sub-folder links): read once
    assert by_rel["duck/d1.wav"].problem == "" and "same file as duck/d1.wav" in by_rel["owl/night/d1.wav"].problem


def test_folder_duplicate_through_a_link_is_listed_once(tmp_path: Path) -> None:
    real = touch(tmp_path / "owl" / "a.wav")
    (tmp_path / "owl" / "b.wav").symlink_to(real)
    m = from_folder(tmp_path)
    assert [r.problem for r in m.recordings] == ["", "is the same file as owl/a.wav (through a symbolic link); listed once"]


# ----------------------------------------------------------------------------- tables


def test_csv_table_exact(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    touch(audio / "x" / "1.wav")
    touch(audio / "y" / "2.flac")
    table = write_csv(
        tmp_path / "meta" / "list.csv",
        ["label", "path", "group", "extra"],
        [
            ["wren", "y/2.flac", "alice", "e"],
            [" robin ", "x/1.wav", "", "e"],  # empty group: the recording is its own group
            ["wren", str(audio / "x" / "missing.ogg"), "bob", "e"],  # absolute, missing: kept
        ],
    )
    m = from_table(table, audio_root=audio)
    assert m.kind == "table"
    assert m.root == audio.resolve()
    assert summary(m) == [  # table order, not sorted
        ("y/2.flac", "wren", "alice"),
        ("x/1.wav", "robin", "x/1.wav"),
        ("x/missing.ogg", "wren", "bob"),
    ]
    assert [r.path.exists() for r in m.recordings] == [True, True, False]
    assert m.recordings[2].path == (audio / "x" / "missing.ogg").resolve()
    assert m.class_names == ["robin", "wren"]
    assert [m.label_index(r.label) for r in m.recordings] == [1, 0, 1]
    assert discover(table, audio_root=audio).recordings == m.recordings


def test_table_root_defaults_to_its_folder(tmp_path: Path) -> None:
    touch(tmp_path / "a.wav")
    table = write_csv(tmp_path / "t.csv", ["path", "label"], [["a.wav", "k"]])
    m = discover(table)
    assert m.recordings == [Recording((tmp_path / "a.wav").resolve(), "k", "a.wav", "a.wav")]


def test_parquet_table(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    touch(tmp_path / "b" / "r.mp3")
    data = pa.table(
        {
            "path": ["b/r.mp3", "c/ñ.wav"],
            "label": ["zebra_finch", "great_tit"],
            "group": pa.array([7, None], type=pa.int64()),  # numbers become text ids
        }
    )
    pq.write_table(data, tmp_path / "list.parquet")
    m = discover(tmp_path / "list.parquet")
    assert m.kind == "table"
    assert summary(m) == [("b/r.mp3", "zebra_finch", "7"), ("c/ñ.wav", "great_tit", "c/ñ.wav")]
    assert m.class_names == ["great_tit", "zebra_finch"]

    pq.write_table(pa.table({"path": ["x.wav"]}), tmp_path / "bad.parquet")
    with pytest.raises(ManifestError, match=r"bad\.parquet.*'label'"):
        from_table(tmp_path / "bad.parquet")


def test_missing_column_named(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "t.csv", ["path", "group"], [["a.wav", "g"]])
    with pytest.raises(ManifestError) as info:
        from_table(table)
    message = str(info.value)
    assert str(table) in message
    assert "missing column(s) 'label' for" in message and "add or rename" in message


def test_unrecognised_columns_refused(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "t.csv", ["file", "species"], [["a.wav", "g"]])
    with pytest.raises(ManifestError, match="match no known input"):
        discover(table)


def test_empty_cell_row_number(tmp_path: Path) -> None:
    table = write_csv(
        tmp_path / "t.csv", ["path", "label"], [["a.wav", "x"], ["b.wav", "y"], ["c.wav", ""]]
    )
    with pytest.raises(ManifestError, match=r"data row 3 \(line 4\), column 'label'"):
        from_table(table)


@pytest.mark.parametrize("rows", [[], [["", ""]]])
def test_empty_table_refused(tmp_path: Path, rows: list) -> None:
    table = write_csv(tmp_path / "t.csv", ["path", "label"], rows)
    with pytest.raises(ManifestError, match="no rows"):
        from_table(table)


def test_empty_file_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        discover(tmp_path / "t.csv")


def test_duplicate_path_refused(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "x.wav")
    table = write_csv(
        tmp_path / "t.csv",
        ["path", "label"],
        [["a/y.wav", "k"], ["a/x.wav", "k"], ["a/./x.wav", "k"]],
    )
    with pytest.raises(ManifestError, match=r"data row 3 .*already listed in data row 2"):
        from_table(table)


@pytest.mark.parametrize("entry", ["../outside.wav", "a/../../outside.wav", "ABS"])
def test_path_escape_refused(tmp_path: Path, entry: str) -> None:
    root = tmp_path / "root"
    touch(root / "a" / "in.wav")
    outside = touch(tmp_path / "outside.wav")
    entry = str(outside) if entry == "ABS" else entry
    table = write_csv(tmp_path / "t.csv", ["path", "label"], [["a/in.wav", "k"], [entry, "k"]])
    with pytest.raises(ManifestError, match=r"data row 2 .*outside the audio root"):
        from_table(table, audio_root=root)


def test_links_under_the_root_are_followed_and_escapes_need_the_opt_in(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = touch(tmp_path / "secret.wav")
    root.mkdir()
    (root / "link.wav").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    table = write_csv(tmp_path / "t.csv", ["path", "label"], [["link.wav", "k"], ["dirlink/secret.wav", "j"]])
    m = from_table(table, audio_root=root)
    assert [r.problem for r in m.recordings] == ["", "is the same file as link.wav (through a symbolic link); listed once"]
    written_out = write_csv(tmp_path / "out.csv", ["path", "label"], [["../secret.wav", "k"]])
    with pytest.raises(ManifestError, match=r"data row 1 .*outside the audio root .*--allow-outside-root"):
        from_table(written_out, audio_root=root)
    allowed = from_table(written_out, audio_root=root, allow_outside_root=True)
    assert allowed.recordings[0].path == outside and allowed.recordings[0].relpath == str(outside)


def test_symlink_inside_root_allowed(tmp_path: Path) -> None:
    real = touch(tmp_path / "store" / "r.wav")
    (tmp_path / "link.wav").symlink_to(real)
    table = write_csv(tmp_path / "t.csv", ["path", "label"], [["link.wav", "k"]])
    assert from_table(table).recordings[0].path.resolve() == real.resolve()


# ----------------------------------------------------------------------------- ChirpID


def chirpid_set(tmp_path: Path) -> tuple[Path, Path, Path]:
    """BirdCLEF layout: audio_root/primary_label/XC*.ogg, plus one file at the root."""
    audio = tmp_path / "train_short_audio"
    touch(audio / "rufhor2" / "XC1.ogg")
    touch(audio / "blbgra1" / "XC2.ogg")
    touch(audio / "XC3.ogg")
    class_map = write_csv(
        tmp_path / "class_map.csv",
        ["class_id", "scientific_name", "common_name"],
        [[0, "Cyanoloxia brissonii", "Ultramarine Grosbeak"],
         [1, "Furnarius rufus", "Rufous Hornero"],
         [2, "Zonotrichia capensis", "Rufous-collared Sparrow"]],
    )
    table = write_csv(
        tmp_path / "recordings.csv",
        ["primary_label", "scientific_name", "common_name", "filename", "author",
         "usable_segments", "class_id"],
        [["rufhor2", "Furnarius rufus", "Rufous Hornero", "XC1.ogg", "Ann", 3, 1],
         ["blbgra1", "Cyanoloxia brissonii", "Ultramarine Grosbeak", "XC2.ogg", "Bo", 1, 0],
         ["rufhor2", "Furnarius rufus", "Rufous Hornero", "XC3.ogg", "Ann", 2, 1],
         ["rufhor2", "Furnarius rufus", "Rufous Hornero", "XC9.ogg", "", 2, 1]],
    )
    return table, audio, class_map


def test_chirpid_table_with_class_map(tmp_path: Path) -> None:
    table, audio, class_map = chirpid_set(tmp_path)
    m = from_chirpid_csv(table, audio, class_map=class_map)
    assert m.kind == "chirpid"
    assert m.root == audio.resolve()
    assert summary(m) == [  # table order; group = author, else the recording itself
        ("rufhor2/XC1.ogg", "Furnarius rufus", "Ann"),
        ("blbgra1/XC2.ogg", "Cyanoloxia brissonii", "Bo"),
        ("XC3.ogg", "Furnarius rufus", "Ann"),
        ("XC9.ogg", "Furnarius rufus", "XC9.ogg"),  # missing: kept for the builder to skip
    ]
    assert [r.path.exists() for r in m.recordings] == [True, True, True, False]
    # Every class of the map, including one without recordings; indices equal class_id.
    assert m.class_names == ["Cyanoloxia brissonii", "Furnarius rufus", "Zonotrichia capensis"]
    assert [m.label_index(r.label) for r in m.recordings] == [1, 0, 1, 1]
    assert discover(table, audio_root=audio, class_map=class_map).recordings == m.recordings


def test_chirpid_table_without_class_map(tmp_path: Path) -> None:
    table, audio, _ = chirpid_set(tmp_path)
    m = from_chirpid_csv(table, audio)
    assert [r.label for r in m.recordings] == ["Furnarius rufus", "Cyanoloxia brissonii"] + [
        "Furnarius rufus"] * 2
    assert m.class_names == ["Cyanoloxia brissonii", "Furnarius rufus"]


def test_chirpid_unknown_class_id_row_named(tmp_path: Path) -> None:
    table, audio, class_map = chirpid_set(tmp_path)
    bad = write_csv(
        tmp_path / "bad.csv",
        ["filename", "class_id", "author"],
        [["XC3.ogg", 1, "Ann"], ["XC4.ogg", 2, "Bo"], ["XC5.ogg", 7, "Cy"]],
    )
    with pytest.raises(ManifestError) as info:
        from_chirpid_csv(bad, audio, class_map=class_map)
    message = str(info.value)
    assert "data row 3 (line 4)" in message and "'class_id'" in message and "7" in message
    assert str(bad) in message


def test_chirpid_needs_names(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "r.csv", ["filename", "class_id", "author"], [["a.ogg", 0, "A"]])
    with pytest.raises(ManifestError, match="class map"):
        from_chirpid_csv(table, tmp_path)


def test_chirpid_bad_class_id_and_conflicting_names(tmp_path: Path) -> None:
    bad_id = write_csv(tmp_path / "r.csv", ["filename", "class_id", "author", "scientific_name"],
                       [["a.ogg", "1", "A", "X"], ["b.ogg", "one", "A", "X"]])
    with pytest.raises(ManifestError, match=r"data row 2 .*'class_id'.*not an integer"):
        from_chirpid_csv(bad_id, tmp_path)
    clash = write_csv(tmp_path / "r.csv", ["filename", "class_id", "author", "scientific_name"],
                      [["a.ogg", "1", "A", "X"], ["b.ogg", "1", "A", "Y"]])
    with pytest.raises(ManifestError, match=r"data row 2.*'Y'.*'X' in data row 1"):
        from_chirpid_csv(clash, tmp_path)


def test_chirpid_escape_refused(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "r.csv", ["filename", "class_id", "author", "scientific_name"],
                      [["../../etc/passwd", 0, "A", "X"]])
    (tmp_path / "audio").mkdir()
    with pytest.raises(ManifestError, match="outside the audio root"):
        from_chirpid_csv(table, tmp_path / "audio")


def test_class_map_duplicates_refused(tmp_path: Path) -> None:
    table, audio, _ = chirpid_set(tmp_path)
    dup = write_csv(tmp_path / "map.csv", ["class_id", "scientific_name"], [[0, "A"], [0, "B"]])
    with pytest.raises(ManifestError, match=r"map\.csv, data row 2.*appears twice"):
        from_chirpid_csv(table, audio, class_map=dup)


# ----------------------------------------------------------------------------- legacy PNG


def legacy_set(tmp_path: Path) -> tuple[Path, Path]:
    pngs = tmp_path / "spectrograms"
    touch(pngs / "XC592536_17_17.png")
    touch(pngs / "XC592536_18_18.png")
    touch(pngs / "XC000001_0_0.png")
    table = write_csv(
        tmp_path / "windows.csv",
        ["filename", "class_id", "author"],
        [["XC592536_17_17.png", 3, "Ann"], ["XC592536_18_18.png", 3, "Ann"], ["XC000001_0_0.png", 1, "Bo"]],
    )
    return table, pngs


def test_legacy_png_detected(tmp_path: Path) -> None:
    table, pngs = legacy_set(tmp_path)
    m = discover(table)  # the PNG folder is found next to the CSV
    assert m.kind == "legacy_png"
    assert m.legacy.csv_path == table.resolve() and m.legacy.png_dir == pngs.resolve()
    assert m.root == pngs.resolve()
    # no recordings.csv: consecutive windows of one class and author form a recording
    assert [(r.relpath, r.label, r.group) for r in m.recordings] == [("recording-00001", "3", "Ann"),
                                                                     ("recording-00002", "1", "Bo")]
    assert [rec.rows for rec in m.legacy.recordings] == [[0, 1], [2]]
    assert m.class_names == ["1", "3"] and "consecutive windows" in m.notes[0]
    assert from_legacy_csv(table, pngs).legacy.recordings == m.legacy.recordings
    assert discover(table, audio_root=pngs).legacy.png_dir == pngs.resolve()


def test_legacy_png_refusals(tmp_path: Path) -> None:
    table, pngs = legacy_set(tmp_path)
    with pytest.raises(ManifestError, match=r"listed in .* but missing \(3 of 3 PNGs missing\)"):
        from_legacy_csv(table, tmp_path)  # the wrong folder
    mixed = write_csv(tmp_path / "mixed.csv", ["filename", "class_id", "author"],
                      [["XC592536_17_17.png", 3, "Ann"], ["XC1.ogg", 3, "Ann"]])
    with pytest.raises(ManifestError, match=r"data row 2 .*not a \.png"):
        discover(mixed, audio_root=pngs)
    escape = write_csv(tmp_path / "esc.csv", ["filename", "class_id", "author"],
                       [["XC592536_17_17.png", 3, "Ann"], ["../windows.png", 3, "Ann"]])
    with pytest.raises(ManifestError, match=r"data row 2 .*outside"):
        discover(escape, audio_root=pngs)
    doubled = write_csv(tmp_path / "dup.csv", ["filename", "class_id", "author"],
                        [["XC592536_17_17.png", 3, "Ann"], ["./XC592536_17_17.png", 3, "Ann"]])
    with pytest.raises(ManifestError, match=r"data row 2 .*already listed in data row 1"):
        discover(doubled, audio_root=pngs)
    lost = write_csv(tmp_path / "other" / "w.csv", ["filename", "class_id", "author"],
                     [["nowhere.png", 3, "Ann"]])
    with pytest.raises(ManifestError, match="--audio-root"):
        discover(lost)


def test_png_in_recording_table_refused(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "r.csv", ["filename", "class_id", "author", "scientific_name"],
                      [["a.ogg", 0, "A", "X"], ["b.png", 0, "A", "X"]])
    with pytest.raises(ManifestError, match=r"data row 2 .*spectrogram PNG"):
        discover(table)


# ----------------------------------------------------------------------------- misc


def test_discover_refuses_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        discover(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="not a table"):
        discover(touch(tmp_path / "x.wav"))
    with pytest.raises(ManifestError, match="apply to tables"):
        discover(tmp_path, class_map=tmp_path / "map.csv")
    assert issubclass(ManifestError, ChirpIOError) and issubclass(ManifestError, ValueError)


def test_folder_manifest_csv_gives_groups(tmp_path: Path) -> None:
    touch(tmp_path / "owl" / "a.wav")
    touch(tmp_path / "owl" / "b.wav")
    write_csv(tmp_path / "manifest.csv", ["path", "label", "group", "licence"],
              [["owl/b.wav", "owl", "bird7", "CC0"], ["owl/a.wav", "owl", "bird3", "CC0"]])
    m = discover(tmp_path)
    assert m.kind == "table" and m.root == tmp_path.resolve()
    assert summary(m) == [("owl/b.wav", "owl", "bird7"), ("owl/a.wav", "owl", "bird3")]
    # A manifest.csv of another shape does not stop folder-per-class discovery.
    write_csv(tmp_path / "manifest.csv", ["file", "note"], [["owl/a.wav", "x"]])
    assert discover(tmp_path).kind == "folder"


def test_bundled_samples() -> None:
    root = samples_dir()
    listing = root / "manifest.csv"
    if not listing.is_file():
        pytest.skip("bundled samples not present yet")
    with listing.open(newline="", encoding="utf-8") as f:
        expected = [(row["path"], row["label"], row["group"]) for row in csv.DictReader(f)]
    m = discover(root)
    assert m.kind == "table" and m.root == root.resolve()
    assert summary(m) == expected
    assert all(r.path.is_file() for r in m.recordings)
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert m.class_names == class_dirs
    # The same files seen as a plain folder-per-class set.
    folder = from_folder(root)
    assert sorted(r.path for r in folder.recordings) == sorted(r.path for r in m.recordings)
    assert folder.class_names == class_dirs


def test_import_is_light() -> None:
    code = "import sys, chirpid_io.manifest; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "False"
