"""The ``report`` subcommand of ``chirpid-io`` (wired in ``chirpid_io.cli``)."""

from __future__ import annotations

import argparse


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    from .cache_view import GALLERY_PER_CLASS

    p = subparsers.add_parser(
        "report", help="write one interactive, self-contained HTML report (runs, cache, tune study, benchmarks)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write one HTML file (Plotly, with plotly.js embedded: it opens offline) showing whatever INPUT "
            "paths are given, recognised by what they are:\n"
            "  *.jsonl               experiment logs (train's, tune's trials): learning curves of every run\n"
            "                        (loss, each metric, learning rate; best epoch and early stop marked),\n"
            "                        and one run's confusion matrix and per-class precision/recall/F1\n"
            "  CACHE folder          class balance, recording durations, skipped recordings with reasons,\n"
            "                        per-band statistics, a gallery of spectrogram windows per class\n"
            "  tune OUT or study.db  optimisation history, per-epoch values, parameter importances,\n"
            "                        parallel coordinates, timeline, the trials and their logs\n"
            "  results.json          the benchmark report (benchmarks/run.py): each stage, old path vs\n"
            "                        chirpid-io\n"
            "  a folder of logs      every *.jsonl in it (e.g. REGISTRY/runs)"),
        epilog="example:\n  chirpid-io report models/runs my-cache search bench-report/results.json -o report.html",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="logs, caches, tune folders, results.json")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--run", dest="run_name", help="run whose confusion matrix and per-class scores are shown (its name or log "
                                 "file; default: a study's best trial, else the last run that has a matrix)")
    p.add_argument("--study-name", help="study to show when a study.db holds several (default: its only one)")
    p.add_argument("--title", help="page title (default 'chirpid-io report')")
    p.add_argument("--gallery", type=int, default=GALLERY_PER_CLASS,
                   help=f"spectrogram windows per class in a cache's gallery (default {GALLERY_PER_CLASS})")
    p.set_defaults(run=report_command)
    return p


def report_command(args) -> int:
    from .build import build_report

    path = build_report(args.inputs, args.output, run=args.run_name, study_name=args.study_name,
                        title=args.title, gallery=args.gallery)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 2**20:.1f} MiB)")
    return 0
