"""ONNX export for CPU-only serving: the exportable mel kernel, parity of onnxruntime with the
torch serving path on real recordings, the metadata, refusal of foreign and edited files,
and the ``export`` command.

Real data: windows of the bundled recordings (5 s at 32 kHz for the chirpid recipe,
0.5 s at 16 kHz for the small one), normalised with real per-band statistics (those of
the windows themselves, or of the conftest's small cache). The models have random weights
with randomised batch-norm statistics (seeded), so their probabilities vary from window
to window and parity is not vacuous; training would change nothing about the arithmetic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chirpid_io import audio
from chirpid_io.config import PRESETS, SpectrogramConfig
from chirpid_io.errors import ConfigError
from chirpid_io.inputs import samples_dir
from chirpid_io.kernels import mel_spectrogram, reference, to_storage
from chirpid_io.kernels.matmul_stft import MAX_SLICES, MatmulMelPower, factors
from chirpid_io.kernels.torch_stft import MelFrontend
from chirpid_io.trainers.models import BirdCNN, BirdCNNv5c
from chirpid_io.trainers.registry import ModelRegistry

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from chirpid_io.export import (EMBEDDINGS, PREFIX, PROBABILITIES, TOLERANCE, OnnxModel,  # noqa: E402
                               OnnxModelError, export_onnx, metadata)
from chirpid_io.kernels.torch_stft import scale  # noqa: E402
from chirpid_io.kernels import value_scale  # noqa: E402
from chirpid_io.kernels import quantise  # noqa: E402
from chirpid_io.serve_graph import ServeGraph, torch_reference  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: embeddings: |ONNX - model.embed(torch path input)| <= EMBED_TOLERANCE * max |embedding|
EMBED_TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # a shared 2-core machine: one thread each for torch and onnxruntime
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def real_windows(config: SpectrogramConfig, hop_seconds: float, limit: int) -> np.ndarray:
    """Windows of every bundled recording at ``config``'s rate, overlapping by
    ``hop_seconds``, short clips zero-padded; at most ``limit``, spread over the files."""
    cut = config.replace(hop_seconds=hop_seconds, pad_short=True, energy_threshold=None)
    per_file = []
    for path in sorted(samples_dir().rglob("*")):
        if path.suffix in (".wav", ".mp3", ".flac", ".ogg"):
            per_file.append(audio.windows(audio.load(path, config.sample_rate), cut).samples)
    chosen, round_ = [], 0
    while len(chosen) < limit and any(round_ < len(w) for w in per_file):
        chosen += [w[round_] for w in per_file if round_ < len(w)]
        round_ += 1
    return np.stack(chosen[:limit])


def image_stats(waves: np.ndarray, config: SpectrogramConfig) -> dict:
    """Per-band mean and std of the recipe values of ``waves``' stored images."""
    stored = to_storage(mel_spectrogram(waves, config).numpy(), config.storage_dtype).astype(np.float64)
    values = stored * value_scale(config.storage_dtype)
    return {"mean": values.mean(axis=(0, 2)), "std": values.std(axis=(0, 2))}


def model_inputs(waves: np.ndarray, config: SpectrogramConfig, stats) -> torch.Tensor:
    """The torch path's model input of ``waves`` (kernel, to_storage, ModelInput)."""
    from chirpid_io.loaders.transform import ModelInput

    stored = to_storage(mel_spectrogram(waves, config).numpy(), config.storage_dtype)
    return ModelInput(stats, value_scale(config.storage_dtype), config.n_mels)(torch.from_numpy(stored))


def random_model(model: torch.nn.Module, inputs: torch.Tensor) -> torch.nn.Module:
    """Random weights (seed them before building ``model``) with batch-norm statistics
    measured on ``inputs``, real model inputs, as training would set them: a freshly
    initialised deep network otherwise loses or blows up its signal block by block and
    gives every window the same (or a saturated) answer."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(inputs)
    return model.eval()


def register(root: Path, model, config, stats, task: str = "single", name: str = "birds") -> ModelRegistry:
    registry = ModelRegistry(root)
    names = [f"species_{i}" for i in range(model.n_classes)]
    registry.save(model, name, config=config, class_names=names, stats=stats, extra={"task": task})
    return registry


def stored_values(waves: np.ndarray, config: SpectrogramConfig, kernel: str) -> np.ndarray:
    """Stored values (as float32) of ``waves`` by ``kernel``: "graph" (ServeGraph's
    matmul DFT), "torch" (the torch path) or "reference" (float64 numpy)."""
    if kernel == "graph":
        with torch.inference_mode():
            images = scale(MatmulMelPower(config)(torch.from_numpy(waves)), config)
            return quantise(images, config.storage_dtype).numpy()
    images = mel_spectrogram(waves, config, backend=kernel).numpy()
    return to_storage(images, config.storage_dtype).astype(np.float32)


def check_flips(a: np.ndarray, b: np.ndarray, storage_dtype: str) -> np.ndarray:
    """Which stored values differ; asserts each by one uint8 level, or (float16) by at
    most one ulp or the images' own difference (near 0 float16's ulp is finer than it)."""
    differs = a != b
    if storage_dtype == "uint8":
        np.testing.assert_array_equal(np.abs(a - b)[differs], 1.0)
    else:
        ulp = np.spacing(np.minimum(a, b).astype(np.float16)).astype(np.float32)
        assert (np.abs(a - b) <= np.maximum(ulp, 3e-5)).all()
    return differs


def check_parity(entry, path: Path, waves: np.ndarray, flipped_tolerance: float = TOLERANCE) -> dict:
    """ONNX vs ServeGraph in torch vs the torch serving path; returns what was measured.

    The graph's stored values equal the torch path's but where one sits on a rounding
    boundary (a few in a million at uint8: the two DFTs round differently); there they
    differ by one step. Windows without such a value must agree within TOLERANCE; a window
    with one within ``flipped_tolerance`` (a one-level change of one input value moves a
    deep network's probabilities by up to a few 1e-4)."""
    served = OnnxModel(path, threads=1)
    probs, embeddings = served.run(waves)
    ref = torch_reference(entry, waves)
    graph = ServeGraph(entry)
    with torch.inference_mode():
        graph_probs, graph_embeddings = (t.numpy() for t in graph(torch.from_numpy(waves)))
        graph_inputs = graph.model_input(torch.from_numpy(waves)).numpy()
    assert probs.shape == ref.probabilities.shape == (len(waves), len(entry.class_names))
    # not vacuous: the windows get different answers, not all saturated
    assert ref.probabilities.std(axis=0).max() > 1e-2
    assert ((ref.probabilities > 0.02) & (ref.probabilities < 0.98)).mean() > 0.2
    if entry.task == "single":
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the same graph in onnxruntime and in torch
    assert np.abs(probs - graph_probs).max() <= TOLERANCE
    peak = np.abs(ref.embeddings).max()
    assert np.abs(embeddings - graph_embeddings).max() <= EMBED_TOLERANCE * peak
    # the graph's model input against the torch path's: equal but for the flipped values
    differs = check_flips(stored_values(waves, entry.config, "graph"), stored_values(waves, entry.config, "torch"),
                          entry.config.storage_dtype)
    np.testing.assert_array_equal(graph_inputs != ref.inputs, differs[:, None])
    assert differs.mean() < (1e-4 if entry.config.storage_dtype == "uint8" else 1e-2)
    flipped = differs.any(axis=(1, 2))
    gap = np.abs(probs - ref.probabilities).max(axis=1)
    assert (gap[~flipped] <= TOLERANCE).all()
    assert (gap[flipped] <= flipped_tolerance).all()
    embed_gap = np.abs(embeddings - ref.embeddings).max(axis=1) / peak
    assert (embed_gap[~flipped] <= EMBED_TOLERANCE).all()
    return {"flipped_values": int(differs.sum()), "values": differs.size, "windows_flipped": int(flipped.sum()),
            "windows": len(waves), "max_prob_diff_unflipped": float(gap[~flipped].max(initial=0)),
            "max_prob_diff_flipped": float(gap[flipped].max(initial=0)),
            "max_prob_diff_same_graph": float(np.abs(probs - graph_probs).max()),
            "max_embed_diff_rel": float(embed_gap.max())}


# -- the exportable kernel ----------------------------------------------------------------
KERNEL_RECIPES = {
    "chirpid": PRESETS["chirpid"],
    "birdclef": PRESETS["birdclef"],
    "short window": SpectrogramConfig(sample_rate=16_000, window_seconds=0.5, hop_seconds=0.25, n_fft=512,
                                      win_length=400, hop_length=128, n_mels=32, fmax=8_000.0),
    "prime n_fft, odd hop, not centred, magnitude": SpectrogramConfig(
        sample_rate=16_000, window_seconds=0.3, n_fft=509, win_length=509, hop_length=127, n_mels=20,
        fmax=8_000.0, center=False, power=1.0),
    "reflect, htk, no norm": SpectrogramConfig(sample_rate=8_000, window_seconds=0.4, n_fft=256, win_length=256,
                                               hop_length=100, n_mels=16, fmax=4_000.0, pad_mode="reflect",
                                               mel_scale="htk", mel_norm=None),
}


@pytest.mark.parametrize("name", list(KERNEL_RECIPES))
def test_matmul_mel_power_matches_the_float64_reference(name):
    config = KERNEL_RECIPES[name]
    rng = np.random.default_rng(1)
    t = np.arange(config.n_samples) / config.sample_rate
    waves = np.stack([0.1 * rng.standard_normal(config.n_samples),
                      0.5 * np.sin(2 * np.pi * (300 + 0.4 * config.fmax * t / t[-1]) * t),
                      np.where(np.arange(config.n_samples) == config.n_samples // 3, 1.0, 0.0)]).astype(np.float32)
    with torch.inference_mode():
        got = MatmulMelPower(config)(torch.from_numpy(waves)).double().numpy()
        stft = MelFrontend(config).mel_power(torch.from_numpy(waves)).double().numpy()
    want = np.stack([reference.mel_power(w, config) for w in waves])
    assert got.shape == want.shape == (3, *config.shape)
    peak = want.max(axis=(1, 2), keepdims=True)
    # as close to float64 as torch.stft is (both ~2e-7 to 5e-7 of each clip's peak)
    assert (np.abs(got - want) / peak).max() < 2e-6
    assert (np.abs(stft - want) / peak).max() < 2e-6


def test_factors_split_n_fft_along_the_hop():
    assert factors(2048, 512) == (32, 64)
    assert factors(1024, 320) == (32, 32)  # gcd 64
    assert factors(509, 127) == (509, 1)  # nothing shared: a plain DFT, frames gathered
    assert 509 > MAX_SLICES
    for n_fft, hop in ((2048, 512), (1024, 320), (512, 128), (400, 160), (256, 100)):
        n1, n2 = factors(n_fft, hop)
        assert n1 * n2 == n_fft and hop % n2 == 0


# -- parity on real recordings ------------------------------------------------------------
@pytest.fixture(scope="module")
def chirpid_birdcnn(tmp_path_factory):
    """BirdCNN (default width) at the chirpid recipe, single-label, uint8 storage."""
    config = PRESETS["chirpid"]
    waves = real_windows(config, hop_seconds=1.0, limit=10)
    stats = image_stats(waves, config)
    torch.manual_seed(0)
    model = random_model(BirdCNN(7), model_inputs(waves, config, stats))
    root = tmp_path_factory.mktemp("export")
    registry = register(root / "registry", model, config, stats)
    entry = registry.load("birds")
    path = export_onnx(entry, root / "out" / "birds.onnx")
    return entry, path, waves


def test_birdcnn_at_the_chirpid_recipe_matches_torch_on_real_recordings(chirpid_birdcnn):
    entry, path, waves = chirpid_birdcnn
    assert waves.shape == (10, 160_000)
    measured = check_parity(entry, path, waves)
    print("birdcnn, chirpid recipe, uint8:", measured)
    assert measured["values"] == 10 * 224 * 313
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_birdcnn_v5c_multilabel_at_the_chirpid_recipe_matches_torch(chirpid_birdcnn, tmp_path):
    """The one BirdCNNv5c export (about 12 s here): the old deployed network, a sigmoid per
    class, on the same real 5 s windows."""
    _, _, waves = chirpid_birdcnn
    config = PRESETS["chirpid"]
    stats = image_stats(waves, config)
    torch.manual_seed(0)
    model = random_model(BirdCNNv5c(5, dropout=0.6), model_inputs(waves, config, stats))
    registry = register(tmp_path / "registry", model, config, stats, task="multilabel")
    entry = registry.load("birds")
    path = export_onnx(entry, tmp_path / "v5c.onnx", check=False)  # check_parity does more
    # a flipped input value moves this network's probabilities by up to ~3e-4 (measured)
    measured = check_parity(entry, path, waves, flipped_tolerance=1e-3)
    print("birdcnn_v5c, chirpid recipe, uint8, multilabel:", measured)
    served = OnnxModel(path, threads=1)
    assert served.task == "multilabel" and served.architecture == "birdcnn_v5c"
    assert served.embed(waves[:2]).shape == (2, 1536)
    assert not np.allclose(served.predict(waves).sum(axis=1), 1.0, atol=1e-3)  # sigmoids, not a softmax


def test_the_graph_is_as_close_to_the_float64_definition_as_the_torch_path(chirpid_birdcnn):
    """The flips are the float32 pipeline's own noise: the torch path's stored values differ
    from the float64 reference's about as often as the graph's do."""
    _, _, waves = chirpid_birdcnn
    config = PRESETS["chirpid"]
    exact = stored_values(waves, config, "reference")
    graph_flips = check_flips(stored_values(waves, config, "graph"), exact, "uint8").sum()
    torch_flips = check_flips(stored_values(waves, config, "torch"), exact, "uint8").sum()
    print(f"stored values differing from the float64 reference: graph {graph_flips}, torch {torch_flips} "
          f"of {exact.size}")
    assert graph_flips <= 3 * torch_flips + 5 and torch_flips <= 1e-4 * exact.size


def test_metadata_round_trip(chirpid_birdcnn):
    entry, path, _ = chirpid_birdcnn
    served = OnnxModel(path, threads=1)
    assert served.config == entry.config and served.config.fingerprint() == served.fingerprint == entry.fingerprint
    assert served.class_names == entry.class_names and served.task == "single"
    assert served.architecture == "birdcnn" and (served.name, served.version) == ("birds", 1)
    assert served.meta["model_kwargs"] == entry.meta["model_kwargs"]
    np.testing.assert_array_equal(served.stats["mean"], entry.stats["mean"])
    np.testing.assert_array_equal(served.stats["std"], entry.stats["std"])
    assert served.meta["outputs"] == [PROBABILITIES, EMBEDDINGS] and served.has_embeddings
    assert served.n_samples == 160_000 and served.meta["input"]["sample_rate"] == 32_000
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props == metadata(entry, embeddings=True)
    assert json.loads(props[PREFIX + "recipe"]) == entry.config.to_dict()


def test_predict_checks_its_input_and_does_not_depend_on_the_batch(chirpid_birdcnn):
    entry, path, waves = chirpid_birdcnn
    served = OnnxModel(path, threads=1)
    whole = served.predict(waves, batch_size=16)
    np.testing.assert_allclose(served.predict(waves, batch_size=3), whole, atol=1e-6)
    np.testing.assert_allclose(served.predict(waves[4]), whole[4:5], atol=1e-6)  # one window, 1-D
    assert served.predict(np.empty((0, 160_000), np.float32)).shape == (0, 7)
    np.testing.assert_allclose(served.predict(waves.astype(np.float64)), whole, atol=1e-6)
    for bad, words in ((waves[:, :-1], "160000 samples"), (waves[None], "160000 samples"),
                       ((waves * 1000).astype(np.int16), "float"), (np.full_like(waves, np.nan), "NaN")):
        with pytest.raises(ConfigError, match=words):
            served.predict(bad)
    with pytest.raises(ConfigError, match="batch_size"):
        served.predict(waves, batch_size=0)
    with pytest.raises(ConfigError, match="threads"):
        OnnxModel(path, threads=0)


# -- refusal ------------------------------------------------------------------------------
class Raw(str):
    """Metadata text written as it is (not as JSON)."""


def _edited(path: Path, out: Path, **changes) -> Path:
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(PREFIX + key)
        else:
            props[PREFIX + key] = value if isinstance(value, Raw) else json.dumps(value)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, out)
    return out


def test_foreign_damaged_and_edited_files_are_refused(chirpid_birdcnn, tmp_path):
    entry, path, _ = chirpid_birdcnn
    from onnx import TensorProto, helper

    foreign = tmp_path / "foreign.onnx"
    node = helper.make_node("Identity", ["waves"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("waves", TensorProto.FLOAT, ["b", 160000])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["b", 160000])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), foreign)
    with pytest.raises(OnnxModelError, match="foreign.onnx: not a chirpid-io export"):
        OnnxModel(foreign)

    data = path.read_bytes()
    noise = np.random.default_rng(5).bytes(4096)
    for name, content in (("truncated.onnx", data[: len(data) // 3]), ("noise.onnx", noise), ("empty.onnx", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(OnnxModelError, match=f"{name}: not a (loadable ONNX model|chirpid-io export)"):
            OnnxModel(tmp_path / name)
    with pytest.raises(OnnxModelError, match="missing.onnx: cannot read"):
        OnnxModel(tmp_path / "missing.onnx")
    with pytest.raises(OnnxModelError, match="is a folder"):
        OnnxModel(tmp_path)

    recipe = entry.config.to_dict()
    edits = {
        "recipe does not match its fingerprint": {"recipe": {**recipe, "hop_seconds": 2.5}},
        "not a valid SpectrogramConfig": {"recipe": {**recipe, "n_mels": -3}},
        "gives 7 probabilities per window but the metadata names 8": {
            "class_names": entry.class_names + ["extra"]},
        "class_names holds duplicates": {"class_names": ["a"] * 7},
        "task regression is not one of": {"task": "regression"},
        "metadata format 2": {"format": 2},
        "lacks chirpid_io.stats": {"stats": None},
        "stats: normalisation": {"stats": {"mean": [0.1, 0.2]}},
        "chirpid_io.task is not valid JSON": {"task": Raw("{not json")},
        "graph's outputs are": {"outputs": [PROBABILITIES]},
        "not float \\(batch, 80000\\)": {"recipe": {**recipe, "window_seconds": 2.5, "hop_seconds": 2.5},
                                         "fingerprint": entry.config.replace(window_seconds=2.5,
                                                                             hop_seconds=2.5).fingerprint()},
    }
    for i, (words, changes) in enumerate(edits.items()):
        edited = _edited(path, tmp_path / f"edited-{i}.onnx", **changes)
        with pytest.raises(OnnxModelError, match=f"edited-{i}.onnx: .*{words}"):
            OnnxModel(edited)

    evil = tmp_path / "evil\n\x1b[2Jname.onnx"
    evil.write_bytes(b"\x00" * 10)
    with pytest.raises(OnnxModelError) as caught:
        OnnxModel(evil)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value) and "\\x1b" in str(caught.value)


def test_an_architecture_without_embed_exports_only_probabilities(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self, n_classes: int = 3):
            super().__init__()
            self.n_classes = n_classes
            self.init_kwargs = {"n_classes": n_classes}
            self.linear = torch.nn.Linear(1, n_classes)

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3)))

    from chirpid_io.trainers.models import MODELS, register_model

    register_model("test-plain-export", Plain)
    try:
        config = KERNEL_RECIPES["short window"]
        registry = register(tmp_path, Plain(), config, None)
        entry = registry.load("birds")
        with pytest.raises(ConfigError, match="no embed\\(\\).*--no-embeddings"):
            ServeGraph(entry, embeddings=True)
        waves = real_windows(config, 0.25, 6)
        with torch.inference_mode():
            probs = ServeGraph(entry, embeddings=False)(torch.from_numpy(waves)).numpy()
        np.testing.assert_allclose(probs, torch_reference(entry, waves).probabilities, atol=1e-6)
    finally:
        MODELS.pop("test-plain-export")


def test_importing_the_export_module_loads_neither_onnx_nor_torch(chirpid_birdcnn):
    _, path, waves = chirpid_birdcnn
    np.save(Path(path).with_suffix(".npy"), waves[:2])
    heavy = "sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'onnxscript') if m in sys.modules)"
    code = (f"import sys, numpy as np, chirpid_io, chirpid_io.export; print({heavy})\n"
            # serving needs onnxruntime, never torch
            f"model = chirpid_io.export.OnnxModel({str(path)!r}, threads=1)\n"
            f"print(model.predict(np.load({str(Path(path).with_suffix('.npy'))!r})).shape, {heavy})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.splitlines() == ["[]", "(2, 7) ['onnxruntime']"]


def test_a_missing_onnxruntime_is_a_config_error_naming_the_install(chirpid_birdcnn):
    _, path, _ = chirpid_birdcnn
    # sys.modules[name] = None is how Python itself marks a module as not importable
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from chirpid_io.export import OnnxModel\n"
            "from chirpid_io.errors import ConfigError\n"
            f"try:\n    OnnxModel({str(path)!r})\nexcept ConfigError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "onnxruntime package, which is not installed" in out.stdout
    assert "pip install 'chirpid-io[onnx]'" in out.stdout


# -- the command --------------------------------------------------------------------------
def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chirpid_io", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, timeout=300)


def test_export_command_end_to_end(small_cache, tmp_path, capsys):
    """A multilabel BirdCNN with float16 storage, exported by the command without
    embeddings, then served."""
    config = small_cache.config.replace(storage_dtype="float16")
    waves = real_windows(config, hop_seconds=0.25, limit=24)
    torch.manual_seed(0)
    model = random_model(BirdCNN(7, width=8), model_inputs(waves, config, small_cache.stats))
    registry = register(tmp_path / "registry", model, config, small_cache.stats, task="multilabel")
    out = tmp_path / "deploy" / "birds.onnx"
    done = _cli("export", tmp_path / "registry", out, "--no-embeddings", "--version", "v1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"exported birds v1 (birdcnn, 7 classes, multilabel) to {out} (")
    assert f"input waves (batch, {config.n_samples}) float32 at 16000 Hz; outputs probabilities" in lines[0]
    assert lines[1].startswith("check: onnxruntime matches the graph in torch within ")
    assert "warn" not in done.stderr.lower()  # the exporter's chatter stays off the terminal

    served = OnnxModel(out, threads=1)
    assert not served.has_embeddings and served.meta["outputs"] == [PROBABILITIES]
    entry = registry.load("birds")
    assert np.abs(served.predict(waves) - torch_reference(entry, waves).probabilities).max() <= TOLERANCE
    with pytest.raises(ConfigError, match="without embeddings"):
        served.embed(waves)

    registry.save(BirdCNN(7, width=8), "other", config=config, class_names=entry.class_names, stats=None)
    from chirpid_io.cli import main

    for args, words in (((), "holds 2 models (birds, other); choose one with --name"),
                        (("--name", "birds", "--version", "seven"), "--version seven: give latest, best or a"),
                        (("--name", "birds", "--version", "9"), "no version 9"),
                        (("--name", "nobody"), "no model named 'nobody'")):
        assert main(["export", str(tmp_path / "registry"), str(tmp_path / "x.onnx"), *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("chirpid-io export: error: ") and words in err, err
    assert not (tmp_path / "x.onnx").exists()

    with pytest.raises(SystemExit) as exited:
        main(["export", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for stated in ("(default: latest)", "(default: val_macro_f1)", "(default: included)", "(default: 20)",
                   "(default: the only one in the registry)", "checked, within 1e-04"):
        assert stated in text


def test_predict_serves_an_exported_file_as_it_serves_the_registered_model(chirpid_birdcnn, tmp_path, capsys):
    """``chirpid-io predict FILE.onnx`` writes the registry path's outputs: the same
    windows, probabilities within the export tolerance (the flipped-value allowance for
    windows where one stored value rounds the other way); a run started with the file
    refuses to continue with another model."""
    import pyarrow.parquet as pq

    from chirpid_io.cli import main

    entry, path, _ = chirpid_birdcnn
    clips = sorted(p for p in samples_dir().rglob("*") if p.suffix in (".wav", ".flac"))[:2]
    outs = {}
    for kind, model in (("onnx", path), ("torch", entry.path.parent.parent)):
        out = tmp_path / kind
        assert main(["predict", str(model), *map(str, clips), "--out", str(out), "--no-progress"]) == 0
        capsys.readouterr()
        outs[kind] = pq.read_table(out / "predictions.parquet").to_pydict()
    onnx, ref = outs["onnx"], outs["torch"]
    assert len(onnx["recording"]) == len(ref["recording"]) > 2
    for column in ("recording", "start_seconds", "padded"):
        assert onnx[column] == ref[column]
    names = [n for n in onnx if n.startswith("species_")]
    assert len(names) == len(entry.class_names)
    gap = max(np.abs(np.subtract(onnx[n], ref[n])).max() for n in names)
    assert gap <= 1e-3, gap
    assert main(["predict", str(entry.path.parent.parent), *map(str, clips), "--out", str(tmp_path / "onnx"),
                 "--no-progress"]) == 1
    assert "holds predictions of another model" in capsys.readouterr().err
