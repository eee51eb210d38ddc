"""Shared fixtures: tiny model configurations and generated parameter files."""
import hashlib
import os
import sys

import numpy as np
import pytest

from xumx.config import ModelConfig, SeparationConfig
from xumx.weights import save_model
from seeded import random_arrays

HERE = os.path.dirname(os.path.abspath(__file__))
#: The parity fixture (see its README.md): the published code's input and outputs.
PARITY = os.path.join(HERE, "data", "parity")
#: The project's shared folder beside a checkout, where the fixture came from (tests marked
#: 'shared' compare with it and are deselected where it is absent).
SHARED_PARITY = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "parity"))


#: Test modules that are about nnabla functions throughout (they import nnabla at the top);
#: every test in them carries the 'nnabla' mark, and a run that deselects that mark does not
#: collect them at all (nnabla may not be importable there).
NNABLA_MODULES = {"test_kernels.py", "test_adam.py"}


def pytest_ignore_collect(collection_path, config):
    if collection_path.name in NNABLA_MODULES and "not nnabla" in (config.option.markexpr or ""):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Deselect the tests marked 'shared' when ../shared/parity is not beside the checkout."""
    if os.path.isdir(SHARED_PARITY):
        return
    gone = [item for item in items if item.get_closest_marker("shared")]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = [item for item in items if not item.get_closest_marker("shared")]
        _DESELECTED_WHY.append(f"{len(gone)} test(s) marked 'shared' deselected: no "
                               f"{SHARED_PARITY} beside the checkout ("
                               + ", ".join(item.name for item in gone) + ")")


_DESELECTED_WHY = []


def pytest_report_collectionfinish(config, start_path, items):
    """Say why tests were deselected by this file (not only how many), at the top of a run."""
    return list(_DESELECTED_WHY)


def pytest_terminal_summary(terminalreporter):
    for line in _DESELECTED_WHY:
        terminalreporter.write_line(line)


def gpu_onnxruntime() -> bool:
    """Whether this onnxruntime has the CUDA provider (onnxruntime-gpu)."""
    import onnxruntime
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def nnabla_cuda() -> bool:
    """Whether nnabla's CUDA extension (nnabla-ext-cuda) is installed."""
    import importlib.util
    try:
        return importlib.util.find_spec("nnabla_ext.cuda") is not None
    except ImportError:   # no nnabla_ext package at all
        return False


def tiny_config(**kw) -> ModelConfig:
    """A model small enough for the CPU test suite (8 kHz, n_fft 256, hidden 16)."""
    base = dict(sources=("bass", "drums", "vocals", "other"), nb_channels=2, hidden_size=16,
                nb_layers=2, nfft=256, nhop=64, max_bin=100, sample_rate=8000)
    base.update(kw)
    return ModelConfig(**base)


def separator_of(cfg: ModelConfig, arrays, backend: str = "onnxruntime", **settings):
    """A :class:`xumx.Separator` of parameters held in memory: the onnxruntime engine's
    (``backend='onnxruntime'``) or the NNabla graph's (``'nnabla'``), with ``settings``
    (:data:`xumx.separator.SETTINGS`)."""
    from xumx.config import ChunkConfig
    from xumx.separator import Separator, settings_of
    if backend == "nnabla":
        from xumx.training.reference import NnablaNet
        net = NnablaNet(cfg, arrays)
    else:
        from xumx.engine import OnnxNet
        net = OnnxNet.from_arrays(cfg, arrays)
    separation, chunking = settings_of(SeparationConfig(), ChunkConfig(), settings)
    return Separator(net, None, separation, chunking)


def write_umx_folder(folder, cfg: ModelConfig, arrays) -> str:
    """``folder`` (a pathlib.Path) made into a UMX folder: one Open-Unmix ``<target>.h5`` (the
    X-UMX names without the target suffix) and its sidecar per source of ``cfg``."""
    from xumx.weights import write_h5
    folder.mkdir()
    for t in cfg.sources:
        write_h5(str(folder / f"{t}.h5"), {k.replace(f"_{t}", ""): v for k, v in arrays.items()
                                          if k.split("/")[0].endswith(f"_{t}")})
        (folder / f"{t}.json").write_text(cfg.to_json())
    return str(folder)


def read_h5(path):
    """{name: (array, need_grad, index)} of every dataset of a parameter file we wrote ourselves
    (a trusted test file, read plainly with h5py)."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj[()], bool(obj.attrs.get("need_grad", True)),
                             int(obj.attrs.get("index", len(out))))
        f.visititems(visit)
    return out


def params_digest(params) -> str:
    """SHA-256 over {name: (array, need_grad, index)} in index order: names, flags, shapes,
    dtypes and every bit of every array."""
    h = hashlib.sha256()
    for name in sorted(params, key=lambda k: params[k][2]):
        value, need_grad, index = params[name]
        h.update(f"{name}|{int(need_grad)}|{index}|{value.dtype.str}|{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def adam_states(cfg: ModelConfig, value: float = 0.0) -> dict:
    """Solver states of the shapes ``xumx.train`` checkpoints (nnabla's Adam: mean, var, t)."""
    from xumx.params import parameter_spec
    out = {}
    for name, shape, grad in parameter_spec(cfg):
        if grad:
            out[f"{name}/mean"] = np.full(shape, value, np.float32)
            out[f"{name}/var"] = np.full(shape, value, np.float32)
            out[f"{name}/t"] = np.array(3, np.int64)
    return out


def checkpoint_meta(cfg: ModelConfig, epoch: int) -> dict:
    """The smallest checkpoint metadata that resuming reads: the epoch and the model."""
    import json
    return {"epoch": epoch, "model": json.loads(cfg.to_json())}


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory):
    """ONNX models built by the tests are cached in a temporary folder, not the user's."""
    old = os.environ.get("XUMX_CACHE")
    os.environ["XUMX_CACHE"] = str(tmp_path_factory.mktemp("xumx-cache"))
    yield
    if old is None:
        os.environ.pop("XUMX_CACHE", None)
    else:
        os.environ["XUMX_CACHE"] = old


@pytest.fixture(autouse=True)
def _nnabla_clean():
    """Each test starts with nnabla's global parameters empty and auto-forward off (where a test
    has imported nnabla: the separation tests run without it, and must not import it)."""
    nn = sys.modules.get("nnabla")
    if nn is not None:
        nn.clear_parameters()
        nn.set_auto_forward(False)
    yield
    nn = sys.modules.get("nnabla")
    if nn is not None:
        nn.clear_parameters()


@pytest.fixture
def tiny_cfg():
    return tiny_config()


@pytest.fixture(scope="session")
def parity_model(tmp_path_factory):
    """The parity fixture's parameter file: full size, seed 0 (142 MB, about two seconds)."""
    path = str(tmp_path_factory.mktemp("parity") / "seed0.h5")
    cfg = ModelConfig()
    save_model(path, cfg, random_arrays(cfg, seed=0))
    return path


@pytest.fixture
def tiny_model(tmp_path):
    """Path of a saved tiny X-UMX parameter file (with its JSON sidecar)."""
    cfg = tiny_config()
    path = str(tmp_path / "tiny.h5")
    save_model(path, cfg, random_arrays(cfg, seed=1))
    return path


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


def sine_mix(nb_timesteps, rate, nb_channels=2, seed=0):
    """A deterministic stereo test signal: a few sines plus a little noise, (T, C) float32."""
    r = np.random.RandomState(seed)
    t = np.arange(nb_timesteps) / rate
    sig = sum(0.2 * np.sin(2 * np.pi * f * t + r.rand()) for f in (110.0, 440.0, 1250.0))
    out = np.stack([sig * (0.8 + 0.2 * c) for c in range(nb_channels)], axis=1)
    return (out + 0.01 * r.standard_normal(out.shape)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_musdb(tmp_path_factory):
    """A generated musdb-layout WAV dataset at 8 kHz (tiny_config's rate): 3 train songs of 1.2 s
    (the hold-out keeps the last by name for validation) and 1 test song."""
    from xumx.synth import make_dataset
    root = str(tmp_path_factory.mktemp("tiny_musdb"))
    make_dataset(root, nb_train=3, nb_test=1, duration=1.2, seed=3, rate=8000)
    return root


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_section(heading: str, document: str = "README.md") -> str:
    """The text of ``document`` (README.md, or a path below the repository such as
    docs/flags.md) from the '## <heading>...' line to the next '## ' heading."""
    with open(os.path.join(ROOT, document), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## " + heading)
    end = text.find("\n## ", start + 4)
    return text[start:end if end >= 0 else len(text)]


def flag_rows(command: str) -> dict:
    """{option strings: (default, meaning)} of the flag table of ``python -m xumx.<command>``
    in docs/flags.md (markdown escapes undone)."""
    import html
    import re
    rows = {}
    for line in readme_section(f"python -m xumx.{command}", "docs/flags.md").splitlines():
        if line.startswith("| `-"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            names = tuple(re.findall(r"`(-[\w-]+)", cells[0]))
            rows[names] = (cells[1], html.unescape(cells[2]).replace("\\*", "*").replace("\\|", "|"))
    return rows
