"""One self-contained HTML page: sections of Plotly figures, tables and notes, with
plotly.js embedded once so the file opens offline.

Figures travel as JSON in ``<script type="application/json">`` blocks with ``<``, ``>``
and ``&`` escaped, so no string from the data (a class name, a path, a reason) can end a
script or become markup; text in tables and notes is HTML-escaped, and control
characters are shown as escapes (``\\x1b``) instead of being passed through.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

#: Plotly settings for every figure: no logo, no link to Chart Studio (the page is offline)
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "showLink": False}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2733; background: #f6f7f9; }
header { background: #1d3b5a; color: white; padding: 14px 28px; }
header h1 { margin: 0 0 6px 0; font-size: 22px; }
header nav a { color: #cfe3f7; margin-right: 16px; text-decoration: none; font-size: 14px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 24px 40px 24px; }
section { background: white; border-radius: 6px; margin: 18px 0; padding: 6px 20px 16px 20px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h2 { font-size: 19px; border-bottom: 1px solid #e3e6ea; padding-bottom: 6px; }
h3 { font-size: 15px; margin: 18px 0 4px 0; }
p.note { color: #4a5866; font-size: 13px; margin: 4px 0 8px 0; }
div.plot { width: 100%; min-height: 320px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0 12px 0; }
th, td { border-bottom: 1px solid #e3e6ea; padding: 3px 9px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
div.scroll { max-height: 340px; overflow: auto; }
div.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure.window { margin: 0; width: 236px; }
figure.window img { width: 236px; height: auto; image-rendering: pixelated; border: 1px solid #d5dae0; }
figure.window figcaption { font-size: 11px; color: #4a5866; overflow-wrap: anywhere; }
"""

_LOADER = """
(function () {
  for (const el of document.querySelectorAll("div.plot")) {
    try {
      const fig = JSON.parse(document.getElementById(el.id + "-data").textContent);
      Plotly.newPlot(el, fig.data, fig.layout, %s);
    } catch (err) {
      console.error("plot " + el.id + " failed: " + err);
    }
  }
})();
"""


def printable(text) -> str:
    """``text`` as a str with control characters written as escapes."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def esc(text) -> str:
    """Text for HTML: control characters escaped, then ``<>&"'`` as entities."""
    return html.escape(printable(text))


def label(text) -> str:
    """Text for a Plotly label: Plotly reads a few tags (<b>, <a href>) in strings, so a
    name from the data is entity-escaped (Plotly shows entities as the characters)."""
    return html.escape(printable(text), quote=False)


@dataclass
class Section:
    key: str
    heading: str
    blocks: list[str] = field(default_factory=list)
    page: "Page | None" = None

    def figure(self, fig, caption: str | None = None) -> None:
        """A Plotly figure (plotly.graph_objects.Figure or a dict with data and layout)."""
        self.blocks.append(self.page._figure(fig, caption))

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{esc(text)}</p>')

    def heading3(self, text: str) -> None:
        self.blocks.append(f"<h3>{esc(text)}</h3>")

    def table(self, header: list[str], rows: list[list], *, numeric: set[int] | None = None,
              scroll: bool = False) -> None:
        """A table of plain values (escaped). Floats get 4 significant digits."""
        numeric = numeric or set()
        head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                       for i, h in enumerate(header))
        body = []
        for row in rows:
            cells = "".join(f'<td class="num">{esc(_cell(v))}</td>' if i in numeric else f"<td>{esc(_cell(v))}</td>"
                            for i, v in enumerate(row))
            body.append(f"<tr>{cells}</tr>")
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        self.blocks.append(f'<div class="scroll">{table}</div>' if scroll else table)

    def raw(self, markup: str) -> None:
        """Markup built by this package from escaped pieces (the gallery)."""
        self.blocks.append(markup)


class Page:
    """A report page; ``section(...)`` adds a section, ``write(path)`` writes the file."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[Section] = []
        self._plots = 0

    def section(self, key: str, heading: str) -> Section:
        section = Section(key=key, heading=heading, page=self)
        self.sections.append(section)
        return section

    @property
    def plot_count(self) -> int:
        return self._plots

    def _figure(self, fig, caption: str | None) -> str:
        import plotly.io as pio

        self._plots += 1
        plot_id = f"plot-{self._plots}"
        text = pio.to_json(fig, validate=False, pretty=False)
        # JSON inside a script element: keep the data from closing it or opening markup
        text = (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
        note = f'<p class="note">{esc(caption)}</p>' if caption else ""
        return (f'<div class="plot" id="{plot_id}"></div>{note}'
                f'<script type="application/json" id="{plot_id}-data">{text}</script>')

    def render(self) -> str:
        import json

        from plotly.offline import get_plotlyjs

        nav = "".join(f'<a href="#{esc(s.key)}">{esc(s.heading)}</a>' for s in self.sections)
        body = "".join(f'<section id="{esc(s.key)}"><h2>{esc(s.heading)}</h2>{"".join(s.blocks)}</section>'
                       for s in self.sections)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(self.title)}</title><style>{_STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{esc(self.title)}</h1><nav>{nav}</nav></header><main>{body}</main>"
            f"<script>{_LOADER % json.dumps(PLOT_CONFIG)}</script></body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        os.replace(tmp, path)
        return path


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "—"
    return str(value)
