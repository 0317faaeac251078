"""Interactive HTML reports: one self-contained file (Plotly, plotly.js embedded, works
offline) with learning curves, a run's confusion matrix and per-class scores, a cache's
contents, a tune study and the benchmark report.

    from chirpid_io.report import build_report
    build_report(["models/runs", "my-cache", "search", "bench-report/results.json"], "report.html")

Importing this package is cheap: plotly, torch and optuna load when a report is built.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "build_report": "chirpid_io.report.build",
    "write_run_report": "chirpid_io.report.build",
    "Page": "chirpid_io.report.page",
    "load_runs": "chirpid_io.report.runs",
    "Run": "chirpid_io.report.runs",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
