"""The cache section: class balance, recording durations, skipped recordings and their
reasons, per-band statistics, and a gallery of spectrogram windows per class."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .page import Section, esc, label

#: windows per class in the gallery, and the most skipped recordings listed
GALLERY_PER_CLASS = 4
SKIPPED_ROWS = 200


def add_cache_section(section: Section, cache, *, gallery: int = GALLERY_PER_CLASS) -> None:
    recordings = cache.recordings.to_pylist()
    ok = [r for r in recordings if r.get("status") == "ok"]
    skipped = [r for r in recordings if r.get("status") != "ok"]
    config = cache.config
    section.note(f"{cache.path}: {len(cache)} windows of {config.window_seconds:g} s from {len(ok)} recordings "
                 f"({len(skipped)} skipped), {len(cache.class_names)} classes; {config.n_mels} mel bands "
                 f"{config.fmin:g}-{config.fmax:g} Hz at {config.sample_rate} Hz; fingerprint {cache.fingerprint}")
    section.heading3("Class balance")
    section.figure(_balance(cache, ok))
    section.heading3("Recording durations")
    if ok:
        section.figure(_durations(cache, ok))
    else:
        section.note("no recording was cached")
    section.heading3("Skipped recordings")
    if skipped:
        section.figure(_reasons(skipped))
        rows = [[r.get("path"), r.get("class_name"), r.get("reason") or r.get("status")] for r in skipped[:SKIPPED_ROWS]]
        section.table(["recording", "class", "reason"], rows, scroll=True)
        if len(skipped) > SKIPPED_ROWS:
            section.note(f"... and {len(skipped) - SKIPPED_ROWS} more (recordings.parquet lists them all)")
    else:
        section.note("no recording was skipped")
    section.heading3("Per-band statistics")
    section.note("mean and standard deviation of each mel band over the whole cache: what the loader "
                 "normalises with")
    section.figure(_bands(cache))
    section.heading3("Spectrogram windows per class")
    section.note(f"up to {gallery} windows per class, the loudest (highest RMS) from different recordings first; "
                 "low frequencies at the bottom, colours from the stored 8-bit values")
    section.raw(_gallery(cache, gallery))


def _balance(cache, ok: list[dict]):
    import plotly.graph_objects as go

    names = [label(n) for n in cache.class_names]
    windows = np.bincount(np.asarray(cache.labels, dtype=np.int64), minlength=len(names))
    per_class = Counter(r.get("class_name") for r in ok)
    recs = [per_class.get(n, 0) for n in cache.class_names]
    fig = go.Figure([
        go.Bar(x=names, y=windows.tolist(), name="windows", hovertemplate="%{x}: %{y} windows<extra></extra>"),
        go.Bar(x=names, y=recs, name="recordings", hovertemplate="%{x}: %{y} recordings<extra></extra>"),
    ])
    fig.update_layout(barmode="group", template="plotly_white", height=380, xaxis={"type": "category", "tickangle": -45},
                      yaxis={"title": {"text": "count"}}, margin={"t": 30})
    return fig


def _durations(cache, ok: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in cache.class_names:
        rows = [r for r in ok if r.get("class_name") == name]
        if not rows:
            continue
        fig.add_trace(go.Box(
            y=[r.get("duration_seconds") for r in rows], name=label(name), boxpoints="all", jitter=0.4,
            pointpos=0, text=[label(Path(str(r.get("path"))).name) for r in rows],
            hovertemplate="%{text}<br>%{y:.2f} s<extra></extra>"))
    fig.update_layout(template="plotly_white", height=380, showlegend=False, margin={"t": 30},
                      yaxis={"title": {"text": "duration (s, log)"}, "type": "log"},
                      xaxis={"type": "category", "tickangle": -45})
    return fig


def _reasons(skipped: list[dict]):
    import plotly.graph_objects as go

    reasons = Counter(_reason_kind(r.get("reason") or r.get("status") or "unknown") for r in skipped)
    kinds = sorted(reasons, key=lambda k: -reasons[k])
    fig = go.Figure(go.Bar(x=[reasons[k] for k in kinds], y=[label(k) for k in kinds], orientation="h",
                           hovertemplate="%{y}: %{x} recordings<extra></extra>"))
    fig.update_layout(template="plotly_white", height=max(200, 40 * len(kinds) + 100), margin={"t": 30},
                      xaxis={"title": {"text": "recordings"}}, yaxis={"autorange": "reversed", "type": "category"})
    return fig


def _reason_kind(reason: str) -> str:
    """A reason without its file-specific details (the text before the first colon, or
    the first 60 characters), so the chart groups like with like."""
    head = str(reason).split(":", 1)[0].strip()
    return head[:60] or "unknown"


def _bands(cache):
    import plotly.graph_objects as go

    from ..kernels.filters import hz_to_mel, mel_to_hz

    config = cache.config
    mean, std = np.asarray(cache.stats["mean"]), np.asarray(cache.stats["std"])
    edges = np.linspace(hz_to_mel(config.fmin, config.mel_scale), hz_to_mel(config.fmax, config.mel_scale),
                        config.n_mels + 2)
    centres = mel_to_hz(edges, config.mel_scale)[1:-1]
    band = np.arange(len(mean))
    hover = "band %{x} (%{customdata:.0f} Hz)<br>%{y:.4f}<extra></extra>"
    fig = go.Figure([
        go.Scatter(x=band, y=mean + std, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"),
        go.Scatter(x=band, y=mean - std, mode="lines", line={"width": 0}, fill="tonexty",
                   fillcolor="rgba(31,119,180,0.2)", name="mean ± std", hoverinfo="skip"),
        go.Scatter(x=band, y=mean, mode="lines", name="mean", customdata=centres, hovertemplate=hover,
                   line={"color": "#1f77b4"}),
        go.Scatter(x=band, y=std, mode="lines", name="std", customdata=centres, hovertemplate=hover,
                   line={"color": "#d62728", "dash": "dot"}),
    ])
    fig.update_layout(template="plotly_white", height=360, margin={"t": 30},
                      xaxis={"title": {"text": f"mel band (low to high; {config.fmin:g}-{config.fmax:g} Hz)"}},
                      yaxis={"title": {"text": "stored value in [0, 1]"}})
    return fig


def gallery_indices(cache, per_class: int) -> dict[int, list[int]]:
    """Per class, up to ``per_class`` window indices: loudest first, one per recording
    before a second from any recording."""
    labels = np.asarray(cache.labels, dtype=np.int64)
    table = cache.windows
    rms = np.asarray(table.column("rms").to_numpy(zero_copy_only=False), dtype=np.float64)
    recording = np.asarray(table.column("recording_id").to_numpy(), dtype=np.int64)
    chosen: dict[int, list[int]] = {}
    for cls in range(len(cache.class_names)):
        members = np.flatnonzero(labels == cls)
        members = members[np.argsort(-rms[members], kind="stable")]
        first, rest, seen = [], [], set()
        for i in members:
            (rest if recording[i] in seen else first).append(int(i))
            seen.add(recording[i])
        chosen[cls] = (first + rest)[:per_class]
    return chosen


def _gallery(cache, per_class: int) -> str:
    import plotly.colors

    from .png import data_uri, indexed_png, palette_from_scale

    palette = palette_from_scale(plotly.colors.sequential.Viridis)
    chosen = gallery_indices(cache, per_class)
    everything = sorted(i for ids in chosen.values() for i in ids)
    images = dict(zip(everything, cache.read(everything))) if everything else {}
    table = cache.windows
    paths = table.column("path").to_pylist()
    starts = table.column("start_seconds").to_pylist()
    blocks = []
    for cls, ids in chosen.items():
        figures = []
        for i in ids:
            image = images[i]
            if image.dtype != np.uint8:  # float16 storage holds the recipe's [0, 1] values
                image = np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255)
            png = indexed_png(np.asarray(image, dtype=np.uint8)[::-1], palette)
            caption = f"{Path(str(paths[i])).name} at {starts[i]:.1f} s (window {i})"
            figures.append(f'<figure class="window"><img alt="{esc(caption)}" src="{data_uri(png)}" '
                           f'width="{image.shape[1]}" height="{image.shape[0]}"><figcaption>{esc(caption)}'
                           "</figcaption></figure>")
        body = "".join(figures) or '<p class="note">no windows</p>'
        blocks.append(f"<h3>{esc(cache.class_names[cls])}</h3><div class=\"gallery\">{body}</div>")
    return "".join(blocks)
