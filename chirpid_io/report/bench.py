"""The benchmark report (``benchmarks/run.py``'s results.json, pytest-benchmark JSON with
``chirpid_*`` keys) as rows that pair each chirpid-io benchmark with its stage's old-path
benchmark, and as interactive charts. ``benchmarks/run.py`` uses the same pairing for its
Markdown table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError
from .page import Section, label

#: Report order; stages not listed follow in the order they appear.
STAGES = ("decode", "mel", "build", "storage", "loader", "train")


def load_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read benchmark results ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ConfigError(f"{path}: not pytest-benchmark JSON (no 'benchmarks' list); "
                          "benchmarks/run.py writes OUT/results.json")
    return data


def ordered(stages) -> list[str]:
    known = [s for s in STAGES if s in stages]
    return known + [s for s in stages if s not in STAGES]


def throughput_rows(data: dict) -> list[dict]:
    """One row per chirpid-io benchmark, paired with its stage's old-path benchmark."""
    by_stage: dict[str, dict[str, list[dict]]] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "stage" not in info or not info.get("items"):
            continue
        entry = {
            "stage": info["stage"], "side": info["side"], "case": info.get("case", ""),
            "label": info.get("label", bench["name"]), "unit": info.get("unit", "items/s"),
            "median_s": bench["stats"]["median"], "rounds": bench["stats"]["rounds"],
            "throughput": info["items"] / bench["stats"]["median"],
        }
        by_stage.setdefault(entry["stage"], {"old": [], "new": []})[entry["side"]].append(entry)

    rows = []
    for stage in ordered(by_stage):
        olds, news = by_stage[stage]["old"], by_stage[stage]["new"]
        if not news:  # the new side failed: show the old side's rows alone
            rows += [{"stage": stage, "case": o["case"] or o["label"], "old": o, "new": None,
                      "speedup": None, "unit": o["unit"]} for o in olds]
        for new in news:
            case = new["case"]
            old = next((o for o in olds if o["case"] == case), None)
            if old is None and len(olds) == 1:
                old = olds[0]
            rows.append({
                "stage": stage, "case": case or new["label"], "old": old, "new": new,
                "speedup": new["throughput"] / old["throughput"] if old else None,
                "unit": new["unit"],
            })
    return rows


def add_bench_section(section: Section, data: dict, source: str) -> None:
    rows = throughput_rows(data)
    run = data.get("chirpid_run", {})
    machine = data.get("machine_info", {}).get("chirpid", {})
    section.note(f"{source}: {run.get('profile', '?')} profile, device {run.get('device', '?')}, finished "
                 f"{run.get('finished') or data.get('datetime', '?')}; {machine.get('cpu', 'unknown CPU')}, "
                 f"{machine.get('cores', '?')} cores, GPU {machine.get('gpu') or 'none'}. Throughput = items per "
                 "round / median round time; old and new were measured in the same run.")
    if not rows:
        section.note("no paired benchmarks in this file")
        return
    section.heading3("Throughput: old ChirpID path vs chirpid-io")
    section.figure(throughput_figure(rows))
    section.table(["stage", "case", "old path", "chirpid-io", "unit", "speed-up"],
                  [[r["stage"], r["case"], r["old"]["throughput"] if r["old"] else None,
                    r["new"]["throughput"] if r["new"] else None, r["unit"],
                    f"{r['speedup']:.2f}x" if r["speedup"] else None] for r in rows], numeric={2, 3, 5})
    memory = [m for m in data.get("chirpid_memory", []) if "error" not in m]
    if memory:
        section.heading3("Peak resident memory")
        section.figure(memory_figure(memory))


def throughput_figure(rows: list[dict]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    stages = ordered({r["stage"]: None for r in rows})
    heights = [max(1, sum(r["stage"] == s for r in rows)) for s in stages]
    fig = make_subplots(rows=len(stages), cols=1, row_heights=heights, vertical_spacing=0.35 / len(stages),
                        subplot_titles=[f"{s} ({next(r['unit'] for r in rows if r['stage'] == s)}, log scale)"
                                        for s in stages])
    for row, stage in enumerate(stages, start=1):
        mine = [r for r in rows if r["stage"] == stage]
        cases = [label(r["case"]) for r in mine]
        for side, name, color in (("old", "old path", "#a0a0a0"), ("new", "chirpid-io", "#2b7bba")):
            fig.add_trace(go.Bar(
                y=cases, x=[r[side]["throughput"] if r[side] else None for r in mine], orientation="h", name=name,
                marker={"color": color}, legendgroup=side, showlegend=row == 1,
                customdata=[[label(r[side]["label"]) if r[side] else "", r[side]["median_s"] if r[side] else math.nan,
                             r[side]["rounds"] if r[side] else 0, f"{r['speedup']:.2f}x" if r["speedup"] else "—"]
                            for r in mine],
                hovertemplate="%{customdata[0]}<br>%{x:,.4g} " + label(mine[0]["unit"]) +
                              "<br>median %{customdata[1]:.4g} s over %{customdata[2]} rounds"
                              "<br>speed-up %{customdata[3]}<extra>" + name + "</extra>"), row=row, col=1)
        values = [r[side]["throughput"] for r in mine for side in ("old", "new") if r[side]]
        # bars on a log axis need a fixed base below the data, or their lengths mean nothing
        low = math.floor(math.log10(min(values) / 2)) if values else 0
        high = math.log10(max(values) * 1.5) if values else 1
        fig.update_xaxes(type="log", range=[low, high], row=row, col=1)
        fig.update_yaxes(autorange="reversed", type="category", row=row, col=1)
        for r, case in zip(mine, cases):
            if r["speedup"]:
                fig.add_annotation(x=1.0, xref="x domain" if row == 1 else f"x{row} domain", y=case,
                                   yref="y" if row == 1 else f"y{row}", text=f"{r['speedup']:.2f}x",
                                   showarrow=False, xanchor="left", xshift=4, font={"size": 11})
    fig.update_layout(barmode="group", template="plotly_white", height=110 * sum(heights) + 80 * len(stages) + 60,
                      margin={"r": 60, "t": 40}, legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    return fig


def memory_figure(memory: list[dict]):
    import plotly.graph_objects as go

    keys = sorted({(m["stage"], m["scale"]) for m in memory}, key=lambda k: (ordered([k[0]]), k[1]))
    value = {(m["stage"], m["side"], m["scale"]): m for m in memory}
    names = [f"{s} {x}x" for s, x in keys]
    fig = go.Figure()
    for side, name, color in (("old", "old path", "#a0a0a0"), ("new", "chirpid-io", "#2b7bba")):
        entries = [value.get((s, side, x)) for s, x in keys]
        fig.add_trace(go.Bar(
            y=names, x=[e["peak_mb"] if e else None for e in entries], orientation="h", name=name,
            marker={"color": color},
            customdata=[[e["peak_mb"] - e["baseline_mb"] if e else math.nan] for e in entries],
            hovertemplate="%{y}: peak %{x:,.0f} MB (+%{customdata[0]:,.0f} over the start)<extra>" + name + "</extra>"))
    fig.update_layout(barmode="group", template="plotly_white", height=60 * len(names) + 120,
                      xaxis={"title": {"text": "peak resident memory (MB)"}}, yaxis={"autorange": "reversed"},
                      margin={"t": 30})
    return fig
