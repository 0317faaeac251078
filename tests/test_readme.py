"""The README tells the truth: every Python block runs as written, in a folder holding what
its names refer to (my-cache, my-waves, models/, birds.onnx... made by the README's own
commands); every ``chirpid-io`` command in its shell blocks is accepted by the real parser
(options, choices, argument counts; the sharded-build block is run as written by
test_sharded.py, and the rest would train or build for minutes); every test it cites as
proof exists."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chirpid_io.cli import build_parser
from chirpid_io.inputs import samples_dir

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", TEXT, flags=re.S)
SHELL_STOPS = {"|", ">", ">>", "&", "&&", ";", "2>&1"}


def commands() -> list[list[str]]:
    """Every ``chirpid-io ...`` invocation in the shell blocks, as argv (``$i`` -> 0)."""
    found = []
    for kind, body in BLOCKS:
        if kind not in ("bash", "sh", ""):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].replace("$i", "0").replace('"', " ")
            words = shlex.split(line, comments=True) if "chirpid-io" in line else []
            while "chirpid-io" in words:
                words = words[words.index("chirpid-io") + 1:]
                argv = []
                for w in words:
                    if w in SHELL_STOPS or w.startswith(">"):
                        break
                    argv.append(w)
                if argv and not argv[0].startswith("$"):  # not a printed prompt's output
                    found.append(argv)
    return found


COMMANDS = commands()


def test_the_readme_shows_commands_of_every_kind():
    used = {argv[0] for argv in COMMANDS}
    assert {"build-cache", "merge-cache", "inspect", "verify", "train", "predict", "tune", "report",
            "export"} <= used, used


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_command_is_accepted_by_the_parser(argv, capsys):
    try:
        build_parser().parse_args(argv)
    except SystemExit as stop:
        if stop.code != 0:  # --help and --version exit 0
            pytest.fail(f"README command refused: chirpid-io {' '.join(argv)}\n{capsys.readouterr().err}")


PYTHON = [body for kind, body in BLOCKS if kind == "python"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """What the README's Python blocks name, made with the README's commands (1 s windows,
    so that the bundled clips give more windows than a batch)."""
    root = tmp_path_factory.mktemp("readme")

    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "chirpid_io", *args], cwd=root,
                                capture_output=True, text=True, timeout=600, env=_env())
        assert result.returncode == 0, (args, result.stderr[-2000:])

    short = ["--window-seconds", "1", "--hop-seconds", "0.5"]
    cli("build-cache", "--samples", "my-cache", *short, "--no-progress")
    cli("build-cache", "--samples", "my-waves", "--store", "waveform", *short, "--no-progress")
    cli("train", "my-cache", "models/", "--epochs", "1", "--model-arg", "width=4", "--device", "cpu", "--no-report",
        "--no-progress")
    cli("export", "models/", "birds.onnx")
    shutil.copytree(samples_dir(), root / "soundscapes")
    shutil.copy(samples_dir() / "owl" / "owl.mp3", root / "XC592536.mp3")
    import soundfile as sf

    wave, rate = sf.read(samples_dir() / "mixed_birds" / "birds_10s.wav", dtype="float32")
    sf.write(root / "soundscape.ogg", wave, rate, format="OGG", subtype="VORBIS")
    return root


def _env() -> dict:
    repo = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("source", PYTHON, ids=[f"python-block-{i}" for i in range(len(PYTHON))])
def test_every_python_block_runs_as_written(source, folder):
    result = subprocess.run([sys.executable, "-c", source], cwd=folder, capture_output=True, text=True, timeout=600,
                            env=_env())
    assert result.returncode == 0, f"README block failed:\n{source}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("source", PYTHON, ids=[f"python-block-{i}" for i in range(len(PYTHON))])
def test_every_python_block_imports_what_exists(source):
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chirpid_io"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"README imports {alias.name} from {node.module}: it is not there"


def test_every_cited_test_exists():
    tests = Path(__file__).resolve().parent
    names = {m for f in tests.glob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), flags=re.M)}
    cited = set(re.findall(r"`(?:test_\w+\.py::)?(test_\w+)`", TEXT))
    cited |= set(re.findall(r"::(test_\w+)", TEXT))
    assert cited, "the guarantees section cites no test"
    assert not cited - names, f"README cites tests that do not exist: {sorted(cited - names)}"
