"""predict: per-window probabilities for archives of recordings, resumable.

Stages: decoding threads (one recording each, several at once) cut every recording into
windows (``predict.windows``) and hand them over in chunks through a bounded queue; the
main thread fills model batches with windows of several recordings at once, scores them
(``predict.scoring``: the training path), and gathers each recording's windows back; a
finished recording is written, in input order, into the current part.

Crash safety, like the build's: a part is a Parquet file of whole recordings (and their
embeddings), written under a temporary name and renamed, then one line naming its
recordings is appended, fsync'd, to ``predict-journal.jsonl``. A run killed at any moment
and started again with the same command skips every recording a journal line names and
redoes the rest: nothing is duplicated or lost. The journal's first line records the
model and the settings; another model or other settings on the same folder are refused.
The combined outputs (``predictions.parquet`` and the formats asked for) are rebuilt from
the parts at the end of every run.

A recording that cannot be read goes to ``errors.csv`` with its reason and does not stop
the run; :attr:`PredictReport.failed` lists them (``chirpid-io predict`` exits 2 then).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AudioDecodeError, ConfigError
from ..text import shown
from . import formats as fmt
from .sources import Source
from .windows import Chunk, Ending, kept, recording_windows

JOURNAL = "predict-journal.jsonl"
PARTS = "parts"
VERSION = 1


@dataclass(frozen=True)
class PredictOptions:
    """How recordings are windowed, scored and written."""

    window_seconds: float | None = field(default=None, metadata={"help": "window length (s; none: the model's "
                                                                         "recipe)"})
    hop_seconds: float | None = field(default=None, metadata={"help": "seconds between window starts (none: the "
                                                                      "model's recipe, or the window length with "
                                                                      "--window-seconds)"})
    energy_filter: bool = field(default=False, metadata={"help": "drop windows below the recipe's energy threshold, "
                                                                 "as training did (off: every window is scored)"})
    threshold: float = field(default=0.5, metadata={"help": "probability from which a species is a detection "
                                                            "(Raven tables, the summary's detections)"})
    embeddings: bool = field(default=False, metadata={"help": "also store each window's penultimate features "
                                                              "(float16) in embeddings.zarr"})
    batch_size: int = field(default=64, metadata={"help": "windows per model call (windows of several files mix)"})
    workers: int | None = field(default=None, metadata={"help": "decoding threads (none: the CPU count)"})
    part_recordings: int = field(default=256, metadata={"help": "recordings per part file (the unit of a resume)"})


@dataclass
class PredictReport:
    """What a run did: counts, the recordings that failed (with reasons), outputs."""

    out: Path
    recordings: int = 0
    windows: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    already_done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.audio_seconds / self.seconds if self.seconds else 0.0
        out = [f"predictions: {shown(self.out)}",
               f"recordings: {self.recordings} scored, {len(self.failed)} failed, {self.already_done} done before",
               f"windows: {self.windows} ({self.audio_seconds / 3600:.2f} h of audio in {self.seconds:.1f} s, "
               f"{rate:.0f} audio-s/s)",
               "wrote: " + ", ".join(shown(p.name) for p in self.outputs)]
        if self.failed:
            out.append("failed (see errors.csv):")
            out += [f"  {shown(name)}: {shown(reason)}" for name, reason in self.failed]
        return out


def predict(scorer, sources: list[Source], out, options: PredictOptions | None = None, *,
            formats=("parquet",), overwrite: bool = False, progress: bool | None = None) -> PredictReport:
    """Score every window of ``sources`` with ``scorer`` into the folder ``out``."""
    started = time.perf_counter()
    options = options or PredictOptions()
    config = _window_config(scorer.config, options)
    formats = fmt.check_formats(formats, config)
    out = Path(out)
    header = {"v": VERSION, "kind": "header", "model": _model_id(scorer), "class_names": scorer.class_names,
              "task": scorer.task, "config": config.to_dict(),
              "options": {k: v for k, v in asdict(options).items() if k not in ("batch_size", "workers")}}
    journal = _Journal(out, header, overwrite)
    report = PredictReport(out, already_done=len(journal.done))
    todo = [s for s in sources if s.name not in journal.done]
    _Run(scorer, config, options, journal, report).run(todo, progress)
    report.outputs = _combine(out, journal, scorer, config, options, formats)
    report.failed = [(n, r) for n, r in journal.errors if n in {s.name for s in sources}]
    report.summaries = [s for s in journal.summaries if s["recording"] in {src.name for src in sources}]
    report.seconds = time.perf_counter() - started
    return report


def _window_config(config, options: PredictOptions):
    changes = {}
    if options.window_seconds is not None:
        changes["window_seconds"] = options.window_seconds
        changes["hop_seconds"] = options.hop_seconds if options.hop_seconds is not None else options.window_seconds
    elif options.hop_seconds is not None:
        changes["hop_seconds"] = options.hop_seconds
    if changes.get("window_seconds", config.window_seconds) != config.window_seconds:
        raise ConfigError(f"the model was trained on {config.window_seconds} s windows; scoring {changes['window_seconds']} "
                          "s windows would give it images of another width. Fix: change only --hop-seconds")
    return config.replace(**changes) if changes else config


def _model_id(scorer) -> dict:
    entry = getattr(scorer, "entry", None)
    if entry is not None:
        return {"name": entry.name, "version": entry.version, "fingerprint": entry.fingerprint,
                "path": str(entry.path)}
    model = {"name": getattr(scorer, "name", None) or "model", "fingerprint": scorer.config.fingerprint()}
    for key in ("version", "path", "sha256"):  # an exported file (export.OnnxModel) names itself
        if getattr(scorer, key, None) is not None:
            model[key] = str(getattr(scorer, key))
    return model


class _Journal:
    """The run's journal: what is done, across restarts."""

    def __init__(self, out: Path, header: dict, overwrite: bool):
        self.path = out / JOURNAL
        self.out = out
        if overwrite and out.exists():
            _remove_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / PARTS).mkdir(exist_ok=True)
        self.parts: list[dict] = []
        self.done: set[str] = set()
        self.errors: list[tuple[str, str]] = []
        self.summaries: list[dict] = []
        if self.path.exists():
            self._load(header)
        else:
            self._append(header)
        for stale in (out / PARTS).glob(".*.tmp-*"):  # a part being written when a run was killed
            stale.unlink()

    def _load(self, header: dict) -> None:
        raw = self.path.read_bytes()
        lines = raw.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            lines = lines[:-1]  # torn by a crash: it committed nothing
            with open(self.path, "r+b") as f:
                f.truncate(sum(map(len, lines)))
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"{shown(self.path)}: line {number} is damaged. Fix: delete that line and every "
                                  "later one (their recordings are predicted again), or use --overwrite") from None
        if not records or records[0].get("kind") != "header":
            raise ConfigError(f"{shown(self.path)}: not a chirpid-io predict journal. Fix: use another --out")
        mine = {k: v for k, v in records[0].items() if k != "time"}
        if mine != {k: v for k, v in header.items() if k != "time"}:
            differ = [k for k in header if records[0].get(k) != header[k]]
            raise ConfigError(f"{shown(self.out)}: holds predictions of another model or with other settings "
                              f"({', '.join(differ)} differ). Fix: use another --out, or --overwrite to start over")
        for record in records[1:]:
            self._take(record)

    def _take(self, record: dict) -> None:
        self.parts.append(record)
        self.done.update(record["recordings"])
        self.errors += [tuple(e) for e in record["errors"]]
        self.summaries += record["summaries"]

    def _append(self, record: dict) -> None:
        with open(self.path, "ab") as f:
            f.write(json.dumps({**record, "time": time.time()}, allow_nan=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def commit(self, part: int, recordings: list[str], rows: int, errors, summaries, embeddings: bool) -> None:
        record = {"kind": "part", "part": part, "recordings": recordings, "rows": rows, "errors": errors,
                  "summaries": summaries, "embeddings": embeddings}
        self._append(record)
        self._take(record)

    @property
    def next_part(self) -> int:
        return max((p["part"] for p in self.parts), default=-1) + 1


class _Run:
    """One pass over the recordings still to do."""

    def __init__(self, scorer, config, options: PredictOptions, journal: _Journal, report: PredictReport):
        self.scorer, self.config, self.options, self.journal, self.report = scorer, config, options, journal, report
        self.names = fmt.class_columns(scorer.class_names)

    def run(self, todo: list[Source], progress) -> None:
        from tqdm import tqdm

        if not todo:
            return
        workers = self.options.workers or os.cpu_count() or 1
        items: queue.Queue = queue.Queue(maxsize=4 * workers)
        stop = threading.Event()
        bar = tqdm(total=None, unit="h", desc="predict", disable=None if progress is None else not progress,
                   dynamic_ncols=True, bar_format="{desc}: {n:.2f}/{total_fmt} h of audio [{elapsed}, {rate_fmt}]")
        state = {i: {"chunks": [], "probs": [], "emb": [], "unscored": 0, "end": None, "failed": None}
                 for i in range(len(todo))}
        batch: list[tuple[int, Chunk]] = []
        batched = 0
        next_out, part = 0, _Part(self.journal.next_part)
        known_hours, known_count = 0.0, 0

        def produce(index: int, source: Source) -> None:
            try:
                for item in recording_windows(source.path, self.config, energy_filter=self.options.energy_filter):
                    while not stop.is_set():
                        try:
                            items.put((index, item), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except AudioDecodeError as exc:
                items.put((index, exc.reason))
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the run
                items.put((index, f"unexpected decoder failure ({type(exc).__name__}: {exc})"[:300]))

        def score() -> None:
            nonlocal batch, batched
            if not batch:
                return
            waves = np.concatenate([c.samples for _, c in batch])
            probabilities, features = self.scorer(waves, embed=self.options.embeddings)
            offset = 0
            for index, chunk in batch:
                k = len(chunk.samples)
                st = state[index]
                st["probs"].append(probabilities[offset : offset + k])
                if features is not None:
                    st["emb"].append(features[offset : offset + k].astype(np.float16))  # as stored
                st["unscored"] -= k
                chunk.samples = None  # scored: only its results are kept
                offset += k
            self.report.windows += len(waves)
            batch, batched = [], 0

        def finished(index: int) -> bool:
            st = state[index]
            return st["failed"] is not None or (st["end"] is not None and st["unscored"] == 0)

        pool = ThreadPoolExecutor(workers, thread_name_prefix="chirpid-predict")
        submitted = 0
        try:
            while submitted < min(len(todo), 2 * workers):
                pool.submit(produce, submitted, todo[submitted])
                submitted += 1
            while next_out < len(todo):
                if finished(next_out):
                    st = state.pop(next_out)
                    part.add(self._rows(todo[next_out], st))
                    if st["end"] is not None and st["failed"] is None:
                        self.report.recordings += 1
                        self.report.audio_seconds += st["end"].duration_seconds
                    next_out += 1
                    if submitted < len(todo):
                        pool.submit(produce, submitted, todo[submitted])
                        submitted += 1
                    if len(part.recordings) >= self.options.part_recordings:
                        part = self._flush(part)
                    continue
                head = state[next_out]
                if head["end"] is not None and head["unscored"]:  # the next output waits on the batch
                    score()
                    continue
                index, item = items.get()
                st = state[index]
                if isinstance(item, str):
                    st["failed"] = item
                    batch = [(i, c) for i, c in batch if i != index]
                    batched = sum(len(c.samples) for _, c in batch)
                elif isinstance(item, Ending):
                    st["end"] = item
                    known_hours += item.duration_seconds / 3600
                    known_count += 1
                    bar.total = round(known_hours / known_count * len(todo), 2)
                else:
                    st["chunks"].append(item)
                    st["unscored"] += len(item.samples)
                    batch.append((index, item))
                    batched += len(item.samples)
                    bar.update(len(item.samples) * self.config.hop_seconds / 3600)
                    if batched >= self.options.batch_size:
                        score()
            self._flush(part)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def _rows(self, source: Source, st: dict) -> dict:
        """A finished recording: its window rows, embeddings, summary, or its error."""
        if st["failed"] is not None:
            return {"name": source.name, "error": st["failed"]}
        chunks = st["chunks"]
        starts = np.concatenate([c.start_seconds for c in chunks])
        padded = np.concatenate([c.padded for c in chunks])
        probabilities = np.concatenate(st["probs"])
        features = np.concatenate(st["emb"]) if st["emb"] else None
        if self.options.energy_filter:
            keep = kept(np.concatenate([c.rms for c in chunks]), np.concatenate([c.audible for c in chunks]),
                        st["end"].threshold, padded, self.config.pad_short)
            starts, padded, probabilities = starts[keep], padded[keep], probabilities[keep]
            features = None if features is None else features[keep]
        return {"name": source.name, "starts": starts, "padded": padded, "probs": probabilities, "emb": features,
                "summary": self._summary(source.name, probabilities, st["end"].duration_seconds)}

    def _summary(self, name: str, probabilities: np.ndarray, duration: float) -> dict:
        """The recording-level result: single-label, the mean softmax over its windows;
        multi-label, each species' highest window probability (present anywhere)."""
        out = {"recording": name, "duration_seconds": duration, "windows": int(len(probabilities))}
        if not len(probabilities):
            return {**out, "label": None, "confidence": None, "top": [], "detections": [],
                    "reason": "no window passed the energy filter"}
        overall = probabilities.max(axis=0) if self.scorer.task == "multilabel" else probabilities.mean(axis=0)
        order = np.argsort(-overall)
        names = self.scorer.class_names
        return {**out, "label": names[order[0]], "confidence": float(overall[order[0]]),
                "top": [{"label": names[i], "probability": float(overall[i])} for i in order[:3]],
                "detections": [names[i] for i in order if overall[i] >= self.options.threshold]}

    def _flush(self, part: "_Part") -> "_Part":
        if part.recordings:
            rows, embedded = part.write(self.journal.out / PARTS, self.config, self.names)
            self.journal.commit(part.number, part.recordings, rows, part.errors, part.summaries, embedded)
        return _Part(part.number + 1)


class _Part:
    """Finished recordings waiting to be written together."""

    def __init__(self, number: int):
        self.number = number
        self.recordings: list[str] = []
        self.errors: list[list[str]] = []
        self.summaries: list[dict] = []
        self.done: list[dict] = []

    def add(self, rows: dict) -> None:
        self.recordings.append(rows["name"])
        if "error" in rows:
            self.errors.append([rows["name"], rows["error"]])
        else:
            self.done.append(rows)
            self.summaries.append(rows["summary"])

    def write(self, folder: Path, config, names: list[str]) -> tuple[int, bool]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = sum(len(d["starts"]) for d in self.done)
        starts = np.concatenate([d["starts"] for d in self.done]) if self.done else np.zeros(0)
        probabilities = (np.concatenate([d["probs"] for d in self.done]) if self.done
                         else np.zeros((0, len(names)), np.float32))
        columns = {
            "recording": pa.array([d["name"] for d in self.done for _ in range(len(d["starts"]))], pa.string()),
            "start_seconds": pa.array(starts.astype(np.float64)),
            "end_seconds": pa.array(starts.astype(np.float64) + config.window_seconds),
            "padded": pa.array(np.concatenate([d["padded"] for d in self.done]) if self.done else np.zeros(0, bool)),
        }
        for c, name in enumerate(names):
            columns[name] = pa.array(probabilities[:, c].astype(np.float32))
        path = folder / f"part-{self.number:06d}.parquet"
        _atomic(path, lambda tmp: pq.write_table(pa.table(columns), tmp))
        embedded = bool(self.done) and all(d["emb"] is not None for d in self.done)
        if embedded:
            features = np.concatenate([d["emb"] for d in self.done])
            def save(tmp):  # through a handle: np.save would add ".npy" to the temporary name
                with open(tmp, "wb") as f:
                    np.save(f, features)

            _atomic(folder / f"part-{self.number:06d}.embeddings.npy", save)
        return n, embedded


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _combine(out: Path, journal: _Journal, scorer, config, options: PredictOptions, formats) -> list[Path]:
    """The outputs, rebuilt from the parts in journal order (one part in memory at a time)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parts = [p for p in journal.parts if p["rows"] or p["recordings"]]
    written: list[Path] = []
    names = fmt.class_columns(scorer.class_names)
    tables = (pq.read_table(out / PARTS / f"part-{p['part']:06d}.parquet") for p in parts)
    target = out / "predictions.parquet"
    writer = pq.ParquetWriter(_tmp(target), _schema(names))  # always: the table the other formats come from
    csv_out = open(_tmp(out / "predictions.csv"), "wb") if "csv" in formats else None
    submission = open(_tmp(out / "submission.csv"), "w", newline="") if "birdclef" in formats else None
    raven_dir = out / "raven"
    if "raven" in formats:
        raven_dir.mkdir(exist_ok=True)
    try:
        if submission is not None:
            submission.write(",".join(["row_id", *scorer.class_names]) + "\n")
        first_csv = True
        stems = Counter(Path(r).stem for p in parts for r in p["recordings"])
        for table in tables:
            writer.write_table(table)
            if csv_out is not None:
                pacsv.write_csv(table, csv_out, pacsv.WriteOptions(include_header=first_csv))
                first_csv = False
            if submission is not None or "raven" in formats:
                _per_recording_formats(table, names, scorer, config, options, submission,
                                       raven_dir if "raven" in formats else None, stems)
    finally:
        writer.close()
        for handle in (csv_out, submission):
            if handle is not None:
                handle.close()
    for path in (target, out / "predictions.csv", out / "submission.csv"):
        if _tmp(path).exists():
            os.replace(_tmp(path), path)
            written.append(path)
    if "raven" in formats:
        written.append(raven_dir)
    if options.embeddings:
        written.append(_embeddings(out, parts))
    recordings = pa.Table.from_pylist([{**s, "top": json.dumps(s["top"]), "detections": ";".join(s["detections"])}
                                       for s in journal.summaries]) if journal.summaries else None
    if recordings is not None:
        pq.write_table(recordings, _tmp(out / "recordings.parquet"))
        os.replace(_tmp(out / "recordings.parquet"), out / "recordings.parquet")
        written.append(out / "recordings.parquet")
    with open(_tmp(out / "errors.csv"), "w", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["recording", "reason"])
        w.writerows(journal.errors)
    os.replace(_tmp(out / "errors.csv"), out / "errors.csv")
    written.append(out / "errors.csv")
    return written


def _per_recording_formats(table, names, scorer, config, options, submission, raven_dir, stems) -> None:
    recordings = table.column("recording").to_numpy(zero_copy_only=False)
    starts = table.column("start_seconds").to_numpy()
    ends = table.column("end_seconds").to_numpy()
    probabilities = np.stack([table.column(n).to_numpy() for n in names], axis=1) if names else np.zeros((len(starts), 0))
    bounds = np.flatnonzero(recordings[1:] != recordings[:-1]) + 1 if len(recordings) else np.zeros(0, int)
    for rows in np.split(np.arange(len(recordings)), bounds):
        if not rows.size:
            continue
        name = str(recordings[rows[0]])
        if submission is not None:
            for row_id, p in zip(fmt.birdclef_rows(name, starts[rows], config.window_seconds), probabilities[rows]):
                submission.write(row_id + "," + ",".join(f"{v:.6g}" for v in p) + "\n")
        if raven_dir is not None:
            text = fmt.raven_text(starts[rows], ends[rows], probabilities[rows], scorer.class_names,
                                  options.threshold, config.fmin, config.fmax)
            target = raven_dir / fmt.raven_name(name, stems[Path(name).stem] == 1)
            _atomic(target, lambda tmp, text=text: Path(tmp).write_text(text))


def _embeddings(out: Path, parts: list[dict]) -> Path:
    """embeddings.zarr: (windows, features) float16, rows as in predictions.parquet."""
    import shutil

    import zarr

    target, tmp = out / "embeddings.zarr", out / ".embeddings.zarr.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    arrays = [np.load(out / PARTS / f"part-{p['part']:06d}.embeddings.npy", allow_pickle=False)
              for p in parts if p.get("embeddings")]
    width = arrays[0].shape[1] if arrays else 0
    total = sum(len(a) for a in arrays)
    array = zarr.create_array(tmp, shape=(total, width), dtype="float16", chunks=(min(max(total, 1), 4096), max(width, 1)),
                              dimension_names=("window", "feature"))
    offset = 0
    for a in arrays:
        array[offset : offset + len(a)] = a
        offset += len(a)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _schema(names):
    import pyarrow as pa

    return pa.schema([("recording", pa.string()), ("start_seconds", pa.float64()), ("end_seconds", pa.float64()),
                      ("padded", pa.bool_())] + [(n, pa.float32()) for n in names])


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _remove_outputs(out: Path) -> None:
    """``--overwrite``: remove this run's own files only, never anything else there."""
    import shutil

    for name in (JOURNAL, "predictions.parquet", "predictions.csv", "submission.csv", "recordings.parquet",
                 "errors.csv"):
        (out / name).unlink(missing_ok=True)
    for name in (PARTS, "raven", "embeddings.zarr"):
        shutil.rmtree(out / name, ignore_errors=True)
