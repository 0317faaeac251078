"""Export for CPU-only deployment: a registered model and its mel front end as one ONNX file.

``export_onnx(entry, "model.onnx")`` writes :class:`~chirpid_io.serve_graph.ServeGraph`
(waveform windows at the recipe's rate -> probabilities, and optionally embeddings) with
a dynamic batch axis, and stores in the file's ``metadata_props`` everything serving needs:
the recipe (``SpectrogramConfig``) and its fingerprint, the class names, the task, the
normalisation, the architecture, the model's name and version and the chirpid-io version.
:class:`OnnxModel` runs such a file with onnxruntime on the CPU and refuses any file that
does not carry that metadata, or whose metadata contradicts itself or the graph.

Importing this module imports neither torch nor onnx nor onnxruntime: ``OnnxModel``
needs only onnxruntime and numpy (``pip install 'chirpid-io[onnx]'``), so a CPU-only
serving process (a BirdCLEF notebook, say) starts without loading torch. Exporting
needs torch, ``onnx`` and ``onnxscript`` (the torch.export-based exporter).

The ONNX file is data: it is parsed by onnxruntime, with only its standard operators
(no custom-operator library is ever registered) and from bytes, so an external-data
reference in a foreign file cannot make it read other files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .config import SpectrogramConfig
from .errors import ChirpIOError, ConfigError
from .text import shown

#: The layout of the metadata; bumped when a key changes meaning.
FORMAT_VERSION = 1
#: Every metadata key starts with this.
PREFIX = "chirpid_io."
INPUT = "waves"
PROBABILITIES = "probabilities"
EMBEDDINGS = "embeddings"
#: The ONNX opset written by default (the torch 2.14 exporter's own default; onnxruntime
#: has run it since 1.17).
DEFAULT_OPSET = 20
#: The largest |difference| between onnxruntime's and torch's outputs of the same graph
#: that an export check accepts (probabilities; embeddings relative to their peak).
TOLERANCE = 1e-4
#: Windows per onnxruntime call in ``OnnxModel.predict`` (bounds the working memory: the
#: DFT's intermediates are about 5 MB per 5 s window of the chirpid recipe).
BATCH_SIZE = 16
TASKS = ("single", "multilabel")
INSTALL = "pip install 'chirpid-io[onnx]'"


class OnnxModelError(ChirpIOError, ValueError):
    """An ONNX file that is not a usable chirpid-io export (missing, damaged, foreign, edited)."""


def _need(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs the {module} package, which is not installed. Fix: {INSTALL} "
                          "(onnx, onnxruntime and onnxscript)") from None


# -- export ----------------------------------------------------------------------------
def metadata(entry, *, embeddings: bool) -> dict[str, str]:
    """The ``metadata_props`` of an export of ``entry``: each value is JSON text."""
    from . import __version__

    config = entry.config
    if config.fingerprint() != entry.fingerprint:
        raise ConfigError(f"model {entry.name!r} v{entry.version} ({shown(entry.path)}): its recorded fingerprint "
                          f"{entry.fingerprint} is not its recipe's ({config.fingerprint()}); the model folder was "
                          "edited. Fix: register the model again")
    stats = None if entry.stats is None else {k: np.asarray(v, dtype=np.float64).tolist()
                                              for k, v in entry.stats.items() if k in ("mean", "std")}
    values = {
        "format": FORMAT_VERSION,
        "version": __version__,
        "recipe": config.to_dict(),
        "fingerprint": config.fingerprint(),
        "class_names": list(entry.class_names),
        "task": entry.task,
        "stats": stats,
        "architecture": entry.meta.get("architecture"),
        "model_kwargs": entry.meta.get("model_kwargs", {}),
        "model": {"name": entry.name, "version": entry.version},
        "outputs": [PROBABILITIES, EMBEDDINGS] if embeddings else [PROBABILITIES],
        "input": {"name": INPUT, "shape": ["batch", config.n_samples], "dtype": "float32",
                  "sample_rate": config.sample_rate},
    }
    return {PREFIX + key: json.dumps(value, sort_keys=True) for key, value in values.items()}


def probe_waves(config: SpectrogramConfig, count: int = 4, seed: int = 0) -> np.ndarray:
    """(count, n_samples) float32 test windows: white noise, a rising chirp, a tone in
    noise, silence with one click, then more noise (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(config.n_samples) / config.sample_rate
    top = config.fmax * 0.9
    shapes = [
        0.1 * rng.standard_normal(config.n_samples),
        0.5 * np.sin(2 * np.pi * (config.fmin + 200 + (top - config.fmin) * t / (2 * t[-1])) * t),
        0.3 * np.sin(2 * np.pi * 0.25 * top * t) + 0.01 * rng.standard_normal(config.n_samples),
        np.where(np.arange(config.n_samples) == config.n_samples // 2, 0.9, 0.0),
    ]
    while len(shapes) < count:
        shapes.append(rng.uniform(0.01, 0.5) * rng.standard_normal(config.n_samples))
    return np.stack(shapes[:count]).astype(np.float32)


def export_onnx(entry, path: str | os.PathLike, *, embeddings: bool = True, opset: int = DEFAULT_OPSET,
                check: bool = True) -> Path:
    """Write ``entry`` (a registry ``ModelEntry``) with its front end as one ONNX file.

    Input ``waves`` (batch, n_samples) float32 at ``entry.config.sample_rate`` Hz; outputs
    ``probabilities`` (batch, n_classes) and, with ``embeddings``, ``embeddings``
    (batch, D). The file is written under a temporary name and renamed into place, so
    ``path`` is never half written. ``check``: before the rename, run the file with
    onnxruntime on ``probe_waves`` and refuse it (OnnxModelError) unless its outputs are
    within ``TOLERANCE`` of the same graph's in torch (probabilities absolutely,
    embeddings relative to their peak). Returns ``path``.
    """
    return _export(entry, path, embeddings=embeddings, opset=opset, check=check)[0]


def _export(entry, path, *, embeddings: bool, opset: int, check: bool) -> tuple[Path, float | None]:
    """``export_onnx``, also returning the check's largest probability difference."""
    import torch

    _need("onnx", "exporting to ONNX")
    _need("onnxscript", "exporting to ONNX")
    if check:
        _need("onnxruntime", "checking an ONNX export")
    from .serve_graph import ServeGraph

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{shown(path)} is a folder; give the .onnx file to write")
    props = metadata(entry, embeddings=embeddings)
    graph = ServeGraph(entry, embeddings=embeddings)
    example = torch.from_numpy(probe_waves(entry.config, 2))
    names = [PROBABILITIES, EMBEDDINGS] if embeddings else [PROBABILITIES]
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                graph, (example,), dynamo=True, input_names=[INPUT], output_names=names, opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False, optimize=True,
                verbose=False)
    except Exception as exc:  # noqa: BLE001 - whatever the exporter raises, one line for the user
        line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise OnnxModelError(f"model {entry.name!r} v{entry.version} ({entry.meta.get('architecture')}): the ONNX "
                             f"exporter failed ({type(exc).__name__}: {line})") from None
    proto = program.model_proto
    del proto.metadata_props[:]
    for key, value in props.items():
        item = proto.metadata_props.add()
        item.key, item.value = key, value
    proto.doc_string = (f"chirpid-io export of {entry.name} v{entry.version}: waveform windows -> "
                        + " and ".join(names) + "; see the chirpid_io.* metadata")
    data = proto.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    worst = None
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check:
            worst = compare(graph, OnnxModel(tmp), probe_waves(entry.config))
            if worst > TOLERANCE:
                raise OnnxModelError(f"{shown(path)}: not written: onnxruntime's outputs differ from torch's (the same "
                                     f"graph) by {worst:.2e} on the probe windows (allowed {TOLERANCE:.0e})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, worst


def compare(graph, onnx_model: "OnnxModel", waves: np.ndarray) -> float:
    """The largest |onnxruntime - torch| over the outputs of ``graph`` (a ServeGraph) for
    ``waves`` (B, n_samples): the same graph, run by both; probabilities absolutely,
    embeddings relative to their largest magnitude."""
    import torch

    with torch.inference_mode():
        want = graph(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)))
    want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
    got = onnx_model.run(waves)
    worst = float(np.abs(got[0] - want[0]).max(initial=0.0))
    if len(want) > 1 and got[1] is not None:
        peak = max(float(np.abs(want[1]).max(initial=0.0)), 1e-12)
        worst = max(worst, float(np.abs(got[1] - want[1]).max(initial=0.0)) / peak)
    return worst


class _quiet_exporter:
    """Keep the exporter's progress lines and warnings (about torchvision's operators, for
    one) off the user's terminal; its errors still raise."""

    def __enter__(self):
        import contextlib
        import io
        import logging
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        self._loggers = [(logging.getLogger(n), logging.getLogger(n).level) for n in ("torch.onnx", "torch.export",
                                                                                     "onnxscript")]
        for logger, _ in self._loggers:
            logger.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for logger, level in self._loggers:
            logger.setLevel(level)
        self._stack.close()
        return False


# -- serving ---------------------------------------------------------------------------
class OnnxModel:
    """A chirpid-io ONNX export, run by onnxruntime on the CPU.

    ``threads``: onnxruntime's intra-op threads (default: onnxruntime's choice, one per
    physical core). Attributes: ``config`` (the recipe: cut windows with
    ``chirpid_io.audio.windows(wave, model.config)``), ``class_names``, ``task``,
    ``stats``, ``architecture``, ``name``, ``version``, ``fingerprint``, ``meta`` (every
    metadata value, parsed), ``has_embeddings``.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        ort = _need("onnxruntime", "running an ONNX export")
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
            #: identifies this very file (a resumed ``predict`` refuses another one)
            self.sha256 = hashlib.sha256(data).hexdigest()
        except IsADirectoryError:
            raise OnnxModelError(f"{shown(self.path)} is a folder, not an ONNX file") from None
        except OSError as exc:
            raise OnnxModelError(f"{shown(self.path)}: cannot read ({exc.strerror or exc}). Fix: give the file "
                                 "that `chirpid-io export` wrote") from None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for damaged files
            line = (str(exc).strip().splitlines() or [""])[0][:200]
            raise OnnxModelError(f"{shown(self.path)}: not a loadable ONNX model ({type(exc).__name__}: {shown(line)})"
                                 ". Fix: export it again with `chirpid-io export`") from None
        self.meta = self._read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self._check_graph()

    def _refuse(self, why: str) -> OnnxModelError:
        return OnnxModelError(f"{shown(self.path)}: {why}. Fix: export the model again with `chirpid-io export "
                              "REGISTRY OUT.onnx`")

    def _read_metadata(self, props: dict) -> dict:
        if PREFIX + "format" not in props:
            raise self._refuse("not a chirpid-io export (its metadata holds no chirpid_io.* keys, so its recipe, "
                               "classes and normalisation are unknown)")
        meta = {}
        for key, value in props.items():
            if key.startswith(PREFIX):
                try:
                    meta[key[len(PREFIX):]] = json.loads(value)
                except ValueError:
                    raise self._refuse(f"metadata {key} is not valid JSON") from None
        if meta["format"] != FORMAT_VERSION:
            raise self._refuse(f"metadata format {shown(meta['format'])}, this chirpid-io reads {FORMAT_VERSION}")
        missing = sorted({"recipe", "fingerprint", "class_names", "task", "stats", "outputs", "model"} - set(meta))
        if missing:
            raise self._refuse("metadata lacks " + ", ".join(PREFIX + m for m in missing))
        try:
            self.config = SpectrogramConfig.from_dict(meta["recipe"])
        except (ConfigError, TypeError) as exc:
            raise self._refuse(f"metadata recipe is not a valid SpectrogramConfig ({shown(exc)})") from None
        if self.config.fingerprint() != meta["fingerprint"]:
            raise self._refuse(f"metadata recipe does not match its fingerprint {shown(meta['fingerprint'])} (it "
                               "was edited)")
        names = meta["class_names"]
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise self._refuse("metadata class_names is not a list of class names")
        if len(set(names)) != len(names):
            raise self._refuse("metadata class_names holds duplicates")
        if meta["task"] not in TASKS:
            raise self._refuse(f"metadata task {shown(meta['task'])} is not one of {', '.join(TASKS)}")
        if meta["outputs"] not in ([PROBABILITIES], [PROBABILITIES, EMBEDDINGS]):
            raise self._refuse(f"metadata outputs {shown(meta['outputs'])} are not {PROBABILITIES}[, {EMBEDDINGS}]")
        stats = meta["stats"]
        if stats is not None:
            from .loaders.transform import band_stats

            try:
                mean, std = band_stats(stats, self.config.n_mels)
            except ConfigError as exc:
                raise self._refuse(f"metadata stats: {exc}") from None
            stats = {"mean": mean, "std": std}
        model = meta["model"] if isinstance(meta["model"], dict) else {}
        self.class_names, self.task, self.stats = list(names), meta["task"], stats
        self.fingerprint = meta["fingerprint"]
        self.architecture = meta.get("architecture")
        self.name, self.version = model.get("name"), model.get("version")
        self.has_embeddings = EMBEDDINGS in meta["outputs"]
        return meta

    def _check_graph(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT]:
            raise self._refuse(f"the graph's inputs are {[i.name for i in inputs]}, not [{INPUT!r}]")
        shape, kind = inputs[0].shape, inputs[0].type
        if kind != "tensor(float)" or len(shape) != 2 or shape[1] != self.config.n_samples or isinstance(shape[0], int):
            raise self._refuse(f"the graph's input is {kind} {shape}, not float (batch, {self.config.n_samples}) as "
                               "its recipe says")
        if [o.name for o in outputs] != self.meta["outputs"]:
            raise self._refuse(f"the graph's outputs are {[o.name for o in outputs]}, its metadata says "
                               f"{self.meta['outputs']}")
        width = outputs[0].shape[-1] if outputs[0].shape else None
        if width != len(self.class_names):
            raise self._refuse(f"the graph gives {width} probabilities per window but the metadata names "
                               f"{len(self.class_names)} classes")

    @property
    def n_samples(self) -> int:
        """Samples per window (``config.n_samples``) at ``config.sample_rate`` Hz."""
        return self.config.n_samples

    def _batches(self, waves) -> np.ndarray:
        waves = np.asarray(waves)
        if waves.ndim == 1:
            waves = waves[None]
        if waves.ndim != 2 or waves.shape[1] != self.n_samples:
            c = self.config
            raise ConfigError(f"{shown(self.path)} takes windows of {self.n_samples} samples ({c.window_seconds} s at "
                              f"{c.sample_rate} Hz), shaped (batch, {self.n_samples}); got shape "
                              f"{waves.shape}. Cut them with chirpid_io.audio.windows(wave, model.config)")
        if not np.issubdtype(waves.dtype, np.floating):
            raise ConfigError(f"windows must be float samples in [-1, 1], got dtype {waves.dtype}")
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if not np.isfinite(waves).all():
            raise ConfigError("windows hold NaN or infinite samples")
        return waves

    def run(self, waves, *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (B, n_classes), embeddings (B, D) or None) for (B, n_samples)
        float windows at ``config.sample_rate`` Hz, ``batch_size`` windows per call."""
        waves = self._batches(waves)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        names = self.meta["outputs"]
        probs, feats = [], []
        for start in range(0, len(waves), batch_size):
            out = self.session.run(names, {INPUT: waves[start : start + batch_size]})
            probs.append(out[0])
            if self.has_embeddings:
                feats.append(out[1])
        if not probs:
            width = self.session.get_outputs()[-1].shape[-1] if self.has_embeddings else 0
            return (np.empty((0, len(self.class_names)), np.float32),
                    np.empty((0, width if isinstance(width, int) else 0), np.float32) if self.has_embeddings else None)
        return np.concatenate(probs), np.concatenate(feats) if self.has_embeddings else None

    def __call__(self, waves, embed: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The scorer protocol of ``chirpid_io.predict``: (probabilities, embeddings or
        None) of (B, n_samples) windows, so ``predict`` serves an exported file as it
        serves a registered model."""
        probs, features = self.run(waves)
        return probs, features if embed else None

    def predict(self, waves, *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Probabilities (B, n_classes) float32 of (B, n_samples) windows (softmax for task
        "single", a sigmoid per class for "multilabel")."""
        return self.run(waves, batch_size=batch_size)[0]

    def embed(self, waves, *, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """The model's penultimate features (B, D) float32 of (B, n_samples) windows."""
        if not self.has_embeddings:
            raise ConfigError(f"{shown(self.path)} was exported without embeddings; export it again without "
                              "--no-embeddings")
        return self.run(waves, batch_size=batch_size)[1]

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}: {self.name} v{self.version}, {self.architecture}, "
                f"{len(self.class_names)} classes, {self.task})")


# -- the command -------------------------------------------------------------------------
def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """The ``export`` subcommand of ``chirpid-io``."""
    from .trainers.loop import METRIC_NAMES

    p = subparsers.add_parser(
        "export", help="write a registered model with its mel front end as one ONNX file, for CPU-only serving",
        description=(
            "Write the model NAME (version --version) of REGISTRY, together with its mel front end, quantisation "
            "and normalisation, as one ONNX graph: input 'waves' (batch, samples of one window) float32 at the "
            "recipe's sample rate, outputs 'probabilities' (softmax, or a sigmoid per class for multilabel models) "
            "and 'embeddings' (the penultimate features). The recipe, class names, normalisation, architecture and "
            "versions are stored in the file's metadata, so chirpid_io.export.OnnxModel (onnxruntime, no torch) "
            "serves it alone. The file is checked against torch on probe windows before it is renamed into place. "
            f"Needs: {INSTALL}."),
    )
    p.add_argument("registry", help="model registry folder (from train or tune)")
    p.add_argument("out", metavar="OUT.onnx", help="file to write (replaced if it exists; folders are created)")
    p.add_argument("--name", help="model name (default: the only one in the registry)")
    p.add_argument("--version", default="latest", help="latest, best, or a number (default: latest)")
    p.add_argument("--metric", default="val_macro_f1", choices=METRIC_NAMES,
                   help="metric that --version best ranks by (default: val_macro_f1)")
    p.add_argument("--no-embeddings", action="store_true",
                   help="leave out the embeddings output (default: included)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--no-check", action="store_true",
                   help=f"skip running the file against torch on probe windows (default: checked, within "
                        f"{TOLERANCE:.0e})")
    p.set_defaults(run=export_command)
    return p


def parse_version(text: str) -> str | int:
    """"latest", "best", or a version number ("3" or "v3")."""
    if text in ("latest", "best"):
        return text
    digits = text[1:] if text.startswith("v") else text
    if not digits.isdigit() or not digits.isascii():
        raise ConfigError(f"--version {shown(text)}: give latest, best or a version number")
    return int(digits)


def export_command(args) -> int:
    from .trainers.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    name = args.name
    if name is None:
        names = registry.names()
        if len(names) != 1:
            raise ConfigError(f"{shown(args.registry)}: holds {len(names)} models ({', '.join(names) or 'none'}); "
                              "choose one with --name")
        name = names[0]
    version = parse_version(args.version)
    for module in ("onnx", "onnxscript", "onnxruntime"):
        _need(module, "chirpid-io export")
    entry = registry.load(name, version, metric=args.metric, device="cpu")
    path, worst = _export(entry, args.out, embeddings=not args.no_embeddings, opset=args.opset,
                          check=not args.no_check)
    served = OnnxModel(path)
    line = (f"exported {name} v{entry.version} ({entry.meta.get('architecture')}, {len(entry.class_names)} classes, "
            f"{entry.task}) to {shown(path)} ({path.stat().st_size / 2**20:.1f} MiB): input {INPUT} (batch, "
            f"{entry.config.n_samples}) float32 at {entry.config.sample_rate} Hz; outputs "
            + ", ".join(served.meta["outputs"]))
    print(line, flush=True)
    if worst is not None:
        print(f"check: onnxruntime matches the graph in torch within {worst:.1e} on {len(probe_waves(entry.config))} "
              f"probe windows (allowed {TOLERANCE:.0e})")
    return 0
