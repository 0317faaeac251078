"""Peak resident memory of the old path and of chirpid-io doing the same work.

Each probe runs in a fresh Python process (``python benchmarks/memory.py --probe
STAGE:SIDE ...``), so one side's imports and caches never count against the other. The
probe's setup (imports, input preparation, one warm-up) runs first; then the process's
peak-RSS mark is reset (Linux ``/proc/self/clear_refs``), the work runs, and the probe
reports the peak resident memory during the work and the resident memory before it.
``run.py`` runs every probe at 1x and 4x input size.

A stage adds its memory probe in its own file (``test_<stage>.py``), one decorated
function per side; the function does the setup and returns the work as a callable::

    from memory import Inputs, probe

    @probe("loader", "old", "LegacyPNGDataset + legacy_loader, one epoch")
    def loader_old(inputs: Inputs):
        loader = ...                       # setup, not measured
        return lambda: sum(len(y) for _, y in loader)

Keep the setup's imports inside the function: the stage file is imported by every probe
process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

SCALES = (1, 4)


@dataclass
class Inputs:
    """What a probe may use. ``scale`` multiplies the work (1 or 4)."""

    corpus: list[Path]  #: the generated corpus (1x)
    scale: int
    mel_clips: int  #: clips at 1x in the mel stage
    device: str

    @property
    def files(self) -> list[Path]:
        """The corpus repeated ``scale`` times."""
        return list(self.corpus) * self.scale


@dataclass(frozen=True)
class Probe:
    stage: str
    side: str
    label: str
    setup: Callable[[Inputs], Callable[[], object]]


PROBES: dict[tuple[str, str], Probe] = {}


def probe(stage: str, side: str, label: str):
    """Register ``setup(inputs) -> work`` as the memory probe of (stage, side)."""

    def register(setup):
        PROBES[(stage, side)] = Probe(stage, side, label, setup)
        return setup

    return register


def load_stage_probes() -> dict[tuple[str, str], Probe]:
    """Import every stage file (``test_*.py`` here) so that its ``@probe`` functions register.

    A pending stage file skips at import (``pytest.skip(allow_module_level=True)``) and
    registers nothing.
    """
    import importlib

    import pytest

    for path in sorted(HERE.glob("test_*.py")):
        try:
            importlib.import_module(path.stem)
        except pytest.skip.Exception:
            pass
    return PROBES


# --------------------------------------------------------------------------- measuring


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def run_probe(stage: str, side: str, inputs: Inputs) -> dict:
    """Run one probe in this process; returns its measurements in MB."""
    found = PROBES[(stage, side)]
    work = found.setup(inputs)
    baseline = _status_kb("VmRSS") or _peak_kb()
    reset = _reset_peak()
    started = time.perf_counter()
    items = work()
    seconds = time.perf_counter() - started
    return {
        "stage": stage, "side": side, "label": found.label, "scale": inputs.scale,
        "items": items, "seconds": round(seconds, 3),
        "peak_mb": round(_peak_kb() / 1024, 1), "baseline_mb": round(baseline / 1024, 1),
        "peak_reset": reset,
    }


def measure_in_child(stage: str, side: str, scale: int, *, corpus_minutes: float,
                     corpus_dir: Path, mel_clips: int, device: str, timeout: float = 600) -> dict:
    """Run one probe in a fresh interpreter and return its result (or an error entry)."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--probe", f"{stage}:{side}",
        "--scale", str(scale), "--corpus-minutes", str(corpus_minutes),
        "--corpus-dir", str(corpus_dir), "--mel-clips", str(mel_clips), "--device", device,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"stage": stage, "side": side, "scale": scale, "error": error[:300]}
    return json.loads(lines[-1])


def measure_all(*, corpus_minutes: float, corpus_dir: Path, mel_clips: int, device: str,
                stages: list[str] | None = None, scales=SCALES, parallel: int = 2) -> list[dict]:
    """Every registered probe (of ``stages``, default all) at every scale, one process each.

    Peak RSS is per process, so ``parallel`` probes may run at once without changing the
    numbers (only their durations, which are not reported as results).
    """
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(stage, side, scale) for stage, side in load_stage_probes()
            if stages is None or stage in stages for scale in scales]
    settings = dict(corpus_minutes=corpus_minutes, corpus_dir=corpus_dir, mel_clips=mel_clips,
                    device=device)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda job: measure_in_child(*job, **settings), jobs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", required=True, help="STAGE:SIDE, e.g. decode:old")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--corpus-minutes", type=float, default=2.0)
    parser.add_argument("--corpus-dir", default=str(corpus.DEFAULT_ROOT))
    parser.add_argument("--mel-clips", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    load_stage_probes()
    stage, _, side = args.probe.partition(":")
    if (stage, side) not in PROBES:
        parser.error(f"unknown probe {args.probe!r}; known: {', '.join(':'.join(k) for k in PROBES)}")
    files = corpus.build_corpus(args.corpus_minutes, root=Path(args.corpus_dir))
    inputs = Inputs(files, args.scale, args.mel_clips, args.device)
    print(json.dumps(run_probe(stage, side, inputs)))


if __name__ == "__main__":
    import memory  # the importable module: its registry is the one the stage files fill

    memory.main()
