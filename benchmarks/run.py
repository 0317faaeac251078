"""Run the benchmark suites and write the report: old ChirpID path vs chirpid-io.

    python benchmarks/run.py --quick --out bench-report     # a few minutes on 2 cores
    python benchmarks/run.py --out bench-report             # larger inputs, more rounds
    python benchmarks/run.py --report-only bench-report/results.json --out bench-report

Writes ``OUT/results.json`` (pytest-benchmark JSON, plus ``chirpid_*`` keys: skipped and
pending benchmarks, memory probes, run settings), ``OUT/report.md`` (throughput table with
speed-ups from medians measured in the same run, memory table, machine, date) and
``OUT/report.png`` (the same as bar charts, log scale), and prints the Markdown report.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402
import memory  # noqa: E402

# the pairing of old and new rows is shared with `chirpid-io report` (its benchmark section)
from chirpid_io.report.bench import STAGES, throughput_rows  # noqa: E402,F401
from chirpid_io.report.bench import ordered as _ordered  # noqa: E402
PROFILES = {
    # Every benchmark also makes one untimed call first (imports, caches, kernel set-up).
    "quick": {"corpus_minutes": 1.0, "rounds": 3, "warmup": 0, "mel_clips": 64},
    "full": {"corpus_minutes": 10.0, "rounds": 7, "warmup": 1, "mel_clips": 256},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, few rounds")
    parser.add_argument("--out", default="bench-report", help="output folder (default bench-report)")
    parser.add_argument("--report-only", metavar="RESULTS_JSON",
                        help="re-render the report from an existing results.json")
    parser.add_argument("--corpus-minutes", type=float, help="override the profile's corpus size")
    parser.add_argument("--rounds", type=int, help="override the profile's timed rounds")
    parser.add_argument("--warmup", type=int, help="override the profile's untimed warm-up rounds")
    parser.add_argument("--mel-clips", type=int, help="override the profile's clips per round")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--corpus-dir", default=str(corpus.DEFAULT_ROOT))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to select benchmarks")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        return _render(data, out)

    profile = dict(PROFILES["quick" if args.quick else "full"])
    for key in profile:
        if getattr(args, key) is not None:
            profile[key] = getattr(args, key)
    device = _device(args.device)
    started = time.perf_counter()
    results = out / "results.json"
    results.unlink(missing_ok=True)

    corpus.build_corpus(profile["corpus_minutes"], root=Path(args.corpus_dir))  # once, for both
    command = [
        sys.executable, "-m", "pytest", str(HERE), "-q", "-rs", "-p", "no:cacheprovider",
        f"--benchmark-json={results}", "--benchmark-columns=median,rounds",
        "--benchmark-sort=name", "--corpus-minutes", str(profile["corpus_minutes"]),
        "--corpus-dir", args.corpus_dir, "--bench-rounds", str(profile["rounds"]),
        "--bench-warmup", str(profile["warmup"]),
        "--mel-clips", str(profile["mel_clips"]), "--bench-device", device,
    ]
    if args.keyword:
        command += ["-k", args.keyword]
    print("$", " ".join(command), flush=True)
    code = subprocess.run(command, cwd=REPO).returncode
    if not results.is_file():
        print(f"no benchmark results were written (pytest exit code {code})", file=sys.stderr)
        return code or 1
    data = json.loads(results.read_text())

    if not args.no_memory:
        print("memory probes ...", flush=True)
        stages = sorted({b["extra_info"].get("stage") for b in data["benchmarks"]})
        data["chirpid_memory"] = memory.measure_all(
            corpus_minutes=profile["corpus_minutes"], corpus_dir=Path(args.corpus_dir),
            mel_clips=profile["mel_clips"], device=device, stages=stages,
        )
    data["chirpid_run"] = {
        "profile": "quick" if args.quick else "full", **profile, "device": device,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    results.write_text(json.dumps(data, indent=2))
    rendered = _render(data, out)
    return code if code not in (0, 5) else rendered


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- tables


def skipped_rows(data: dict) -> list[dict]:
    """Pending stages (a whole file skipped) and skipped benchmarks, one row per reason."""
    rows, seen = [], set()
    for item in data.get("chirpid_skipped", []):
        nodeid, reason = item["nodeid"], item["reason"]
        file = nodeid.split("::")[0]
        stage = Path(file).stem.removeprefix("test_")
        stage = "mel" if stage == "kernels" else stage
        pending = "::" not in nodeid
        reason = reason.removeprefix("pending: ") if pending else reason
        key = (stage, reason)
        if key not in seen:
            seen.add(key)
            rows.append({"stage": stage, "pending": pending, "reason": reason})
    return rows


def _number(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def markdown(data: dict) -> str:
    run = data.get("chirpid_run", {})
    machine = data.get("machine_info", {}).get("chirpid", {})
    date = run.get("finished") or data.get("datetime", "")
    lines = ["# chirpid-io benchmarks: old ChirpID path vs chirpid-io", ""]
    lines.append(f"Date: {date}  ")
    lines.append(_machine_line(machine) + "  ")
    if run:
        lines.append(
            f"Run: {run.get('profile')} profile, corpus {run.get('corpus_minutes')} min, "
            f"{run.get('rounds')} timed rounds, {run.get('mel_clips')} mel clips per round, "
            f"device {run.get('device')}, wall time {run.get('wall_seconds')} s"
        )
    lines += [
        "",
        "Throughput = items per round / median round time; old and new were measured in the "
        "same run on the same inputs. Compare ratios, not absolute numbers across machines.",
        "",
        "| stage | case | old path | chirpid-io | unit | speed-up |",
        "|---|---|---:|---:|---|---:|",
    ]
    rows = throughput_rows(data)
    skips = skipped_rows(data)
    for stage in _ordered({r["stage"]: None for r in rows + skips}):
        for row in (r for r in rows if r["stage"] == stage):
            old = _number(row["old"]["throughput"]) if row["old"] else "—"
            new = _number(row["new"]["throughput"]) if row["new"] else "—"
            speed = f"{row['speedup']:.2f}x" if row["speedup"] else "—"
            lines.append(f"| {stage} | {row['case']} | {old} | {new} | {row['unit']} | {speed} |")
        for skip in (s for s in skips if s["stage"] == stage):
            state = "pending" if skip["pending"] else "skipped"
            lines.append(f"| {stage} | {state}: {skip['reason']} | — | — | | |")

    # Name what each side ran, where the case column does not already say it.
    described = []
    for row in rows:
        for side, who in (("old", "old path"), ("new", "chirpid-io")):
            entry = row[side]
            if entry and (side == "old" or row["case"] != entry["label"]):
                line = f"- {row['stage']}, {who}: {entry['label']}"
                if line not in described:
                    described.append(line)
    if described:
        lines += ["", "What each side runs:", ""] + described

    mem = memory_rows(data)
    if mem:
        lines += [
            "", "## Peak resident memory (MB)", "",
            "Each side in a fresh process; peak RSS during the work, and in parentheses its "
            "growth over the RSS before the work (imports and inputs). 4x = four times the input.",
            "",
            "| stage | old path 1x | old path 4x | chirpid-io 1x | chirpid-io 4x |",
            "|---|---:|---:|---:|---:|",
        ]
        for stage, cells in mem:
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        described = {(m["stage"], m["side"]): m.get("label") for m in data.get("chirpid_memory", [])}
        lines += [""] + [
            f"- {stage}, {'old path' if side == 'old' else 'chirpid-io'}: {label}"
            for (stage, side), label in described.items() if label
        ]
    return "\n".join(lines) + "\n"


def memory_rows(data: dict) -> list[tuple[str, list[str]]]:
    found: dict[str, dict[tuple[str, int], str]] = {}
    for m in data.get("chirpid_memory", []):
        cell = (f"error: {m['error']}" if "error" in m else
                f"{m['peak_mb']:,.0f} (+{max(m['peak_mb'] - m['baseline_mb'], 0):,.0f})")
        found.setdefault(m["stage"], {})[(m["side"], m["scale"])] = cell
    out = []
    for stage in _ordered(found):
        cells = [found[stage].get((side, scale), "—") for side in ("old", "new") for scale in memory.SCALES]
        out.append((stage, cells))
    return out


def _machine_line(machine: dict) -> str:
    if not machine:
        return "Machine: unknown"
    gpu = machine.get("gpu") or "none"
    dali = machine.get("nvidia-dali-cuda130") or "not installed"
    return (
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('ram_gb')} GB RAM, "
        f"GPU {gpu}; Python {machine.get('python')}, torch {machine.get('torch')}, torchaudio "
        f"{machine.get('torchaudio')}, librosa {machine.get('librosa')}, DALI {dali}, "
        f"chirpid-io {machine.get('chirpid-io')}"
    )


# --------------------------------------------------------------------------- plot


def plot(data: dict, path: Path) -> None:
    # a Figure of its own, not pyplot: no global figure list to leak into, no backend switch
    from matplotlib.figure import Figure

    rows = [r for r in throughput_rows(data) if r["old"] or r["new"]]
    stages = _ordered({r["stage"]: None for r in rows})
    mem = [m for m in data.get("chirpid_memory", []) if "error" not in m]
    panels = len(stages) + (1 if mem else 0)
    if panels == 0:
        return
    heights = [max(1.2, 0.45 * sum(r["stage"] == s for r in rows) + 0.8) for s in stages]
    if mem:
        heights.append(max(1.2, 0.45 * len({(m["stage"], m["scale"]) for m in mem}) + 0.8))
    fig = Figure(figsize=(9, sum(heights) + 0.6))
    axes = fig.subplots(panels, 1, gridspec_kw={"height_ratios": heights}, squeeze=False)
    try:
        for ax, stage in zip(axes[:, 0], stages):
            mine = [r for r in rows if r["stage"] == stage]
            _bars(ax, [r["case"] for r in mine],
                  [r["old"]["throughput"] if r["old"] else math.nan for r in mine],
                  [r["new"]["throughput"] if r["new"] else math.nan for r in mine],
                  f"{stage}: throughput ({mine[0]['unit']}, log scale, higher is better)")
            for i, r in enumerate(mine):
                if r["speedup"]:
                    ax.annotate(f"{r['speedup']:.2f}x", (1.0, i), xycoords=("axes fraction", "data"),
                                xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
        if mem:
            keys = sorted({(m["stage"], m["scale"]) for m in mem}, key=lambda k: (_ordered([k[0]]), k[1]))
            value = {(m["stage"], m["side"], m["scale"]): m["peak_mb"] for m in mem}
            _bars(axes[-1, 0], [f"{s} {x}x" for s, x in keys],
                  [value.get((s, "old", x), math.nan) for s, x in keys],
                  [value.get((s, "new", x), math.nan) for s, x in keys],
                  "peak resident memory (MB, log scale, lower is better)")
        machine = data.get("machine_info", {}).get("chirpid", {})
        fig.suptitle(f"chirpid-io vs old ChirpID path — {machine.get('cpu', '')}, "
                     f"{machine.get('cores', '?')} cores, GPU {machine.get('gpu') or 'none'}", fontsize=10)
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.legend(handles, names, loc="upper right", ncol=2, fontsize=8, frameon=False)
        fig.savefig(path, dpi=110)
    finally:
        fig.clear()  # drop the artists now rather than at the next garbage collection


def _bars(ax, names, old, new, title) -> None:
    import numpy as np

    y = np.arange(len(names))
    values = [v for v in old + new if v == v and v > 0]
    # Bars on a log axis need a common, fixed base, or their lengths mean nothing.
    base = 10 ** math.floor(math.log10(min(values) / 2)) if values else 1.0
    ax.barh(y - 0.2, old, height=0.4, left=0, label="old path", color="#b0b0b0")
    ax.barh(y + 0.2, new, height=0.4, left=0, label="chirpid-io", color="#2b7bba")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    if values:
        ax.set_xlim(base, max(values) * 1.5)
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(axis="x", which="both", alpha=0.3)


def _render(data: dict, out: Path) -> int:
    text = markdown(data)
    (out / "report.md").write_text(text)
    plot(data, out / "report.png")
    print()
    print(text)
    print(f"wrote {out / 'report.md'} and {out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
