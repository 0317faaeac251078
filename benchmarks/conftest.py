"""Shared options and fixtures of the benchmark suites (pytest-benchmark).

One file per stage (``test_<stage>.py``); each measures the old path and chirpid-io on
the same inputs in the same run. A benchmark is one call of the ``measure`` fixture::

    def test_decode_new(measure, corpus_paths):
        measure(lambda: [load(p, 32000) for p in corpus_paths],
                stage="decode", side="new", items=seconds, unit="audio s/s",
                label="chirpid_io.audio.load")

which runs the function ``--bench-rounds`` times (after ``--bench-warmup`` untimed rounds), groups the
result under its stage and stores stage, side ("old" | "new"), unit, items per round,
label and case in ``extra_info``, from which ``run.py`` computes throughput = items /
median seconds and the speed-up of each "new" row over the "old" row of the same stage
(and the same ``case``, when the stage has several old rows).

These suites are collected only when pytest is pointed at ``benchmarks/`` (the project's
``testpaths`` is ``tests``). Run them through ``python benchmarks/run.py``.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # corpus.py, also under importlib mode

import corpus  # noqa: E402

SIDES = ("old", "new")


def pytest_addoption(parser):
    group = parser.getgroup("chirpid-io benchmarks")
    group.addoption("--corpus-minutes", type=float, default=2.0,
                    help="minutes of audio in the generated corpus (default 2)")
    group.addoption("--corpus-dir", default=str(corpus.DEFAULT_ROOT),
                    help="where generated corpora are cached (default .benchmarks/corpus)")
    group.addoption("--bench-rounds", type=int, default=5,
                    help="timed rounds per benchmark, after one warm-up round (default 5)")
    group.addoption("--bench-warmup", type=int, default=1,
                    help="untimed warm-up rounds before the timed ones (default 1)")
    group.addoption("--mel-clips", type=int, default=64,
                    help="5 s clips per round in the mel stage (default 64)")
    group.addoption("--bench-device", default="auto",
                    help="device of chirpid-io's kernels: auto (cuda when available), cpu, cuda")


@dataclass(frozen=True)
class Settings:
    corpus_minutes: float
    corpus_dir: Path
    rounds: int
    warmup: int
    mel_clips: int
    device: str


@pytest.fixture(scope="session")
def settings(pytestconfig) -> Settings:
    device = pytestconfig.getoption("--bench-device")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Settings(
        corpus_minutes=pytestconfig.getoption("--corpus-minutes"),
        corpus_dir=Path(pytestconfig.getoption("--corpus-dir")),
        rounds=max(1, pytestconfig.getoption("--bench-rounds")),
        warmup=max(0, pytestconfig.getoption("--bench-warmup")),
        mel_clips=max(1, pytestconfig.getoption("--mel-clips")),
        device=device,
    )


@pytest.fixture(scope="session")
def sample_paths(tmp_path_factory) -> list[Path]:
    """The bundled real recordings, or seeded synthetic ones when none are bundled."""
    return corpus.sample_files() or corpus.synthetic_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def corpus_paths(settings) -> list[Path]:
    """The generated corpus of ``--corpus-minutes`` of 44.1 kHz WAV recordings."""
    return corpus.build_corpus(settings.corpus_minutes, root=settings.corpus_dir)


@pytest.fixture(scope="session")
def mel_windows(settings, corpus_paths):
    """(``--mel-clips``, 160000) float32 real 5 s windows at 32 kHz from the corpus."""
    return corpus.corpus_windows(corpus_paths, settings.mel_clips)


@pytest.fixture
def measure(benchmark, settings):
    """Time ``fn`` and label the result; see the module docstring. Returns fn's result."""

    def run(fn, *, stage: str, side: str, items: float, unit: str, label: str, case: str = ""):
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        benchmark.group = stage
        benchmark.extra_info.update(
            stage=stage, side=side, items=float(items), unit=unit, label=label, case=case,
        )
        return benchmark.pedantic(fn, rounds=settings.rounds, iterations=1, warmup_rounds=settings.warmup)

    return run


@pytest.fixture(scope="session")
def synchronize(settings):
    """A function that waits for queued work on ``--bench-device``, so a round includes it."""
    if not settings.device.startswith("cuda"):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(settings.device)


# --------------------------------------------------------------------------- JSON extras

_SKIPPED: list[dict] = []


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        _SKIPPED.append({"nodeid": report.nodeid, "reason": _reason(report)})


def pytest_collectreport(report):
    # a stage file that skips at module level (pending stages) is reported here
    if report.skipped:
        _SKIPPED.append({"nodeid": report.nodeid, "reason": _reason(report)})


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["chirpid"] = machine_summary()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["chirpid_skipped"] = list(_SKIPPED)


def machine_summary() -> dict:
    """CPU model, cores, RAM, library versions and GPU, for the report's header."""
    from importlib import metadata

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    for package in ("torch", "torchaudio", "librosa", "nvidia-dali-cuda130", "chirpid-io"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
