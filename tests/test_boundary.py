"""The nnabla boundary: separation and evaluation on the CPU never import nnabla (on any
Python), and where nnabla is missing, what needs it stops with one line.

Each run is a subprocess through tests/nnabla_probe.py, which reports the nnabla modules
loaded at its end; ``block=True`` makes nnabla unimportable, as on Python 3.11+.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, gpu_onnxruntime, sine_mix, tiny_config
from xumx.training.backend import NnablaMissing, missing_message
from xumx.weights import save_model
from seeded import random_arrays

PROBE = os.path.join(ROOT, "tests", "nnabla_probe.py")
SOURCES = ["bass", "drums", "vocals", "other"]


def probe(tmp_path, *args, block=False, watch=None):
    """(CompletedProcess, nnabla modules loaded) of ``nnabla_probe.py [--block] -m/-c ...``;
    with ``watch`` (packages), the modules of those packages loaded instead."""
    report = tmp_path / "nnabla-modules.json"
    cmd = [sys.executable, PROBE] + (["--block"] if block else []) + \
        (["--watch", ",".join(watch)] if watch else []) + [str(report), *args]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    return p, json.loads(report.read_text())


@pytest.fixture
def song(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(str(path), sine_mix(8000 * 2 + 77, 8000), 8000)   # tiny_model's rate
    return str(path)


# ------------------------------------------------------------------ separation never loads it
def test_cli_separation_never_imports_nnabla(tiny_model, song, tmp_path):
    p, loaded = probe(tmp_path, "-m", "xumx.test", "--inputs", song, "--model", tiny_model,
                      "--outdir", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "out" / "song")) == sorted(f"{s}.wav" for s in SOURCES)
    assert loaded == []


API_CALLS = '''
import argparse, sys
import numpy as np
from xumx.test import separate, separate_args_dict
from xumx import Separator
from xumx.engine import OnnxNet
from xumx.weights import load_xumx
model = sys.argv[1]
audio = (0.1 * np.random.RandomState(0).standard_normal((8000 * 2 + 5, 2))).astype(np.float32)
keys = dict(model=model, umx_infer=False, targets=["bass", "drums", "vocals", "other"],
            softmask=False, alpha=1.0, residual_model=False, niter=1)
cfg, arrays = load_xumx(model)
outs = [separate_args_dict(audio, keys), separate(audio, argparse.Namespace(**keys)),
        separate(audio, model_path=model), Separator.load(model).separate(audio),
        Separator(OnnxNet.from_arrays(cfg, arrays)).separate(audio)]
assert all(list(o) == keys["targets"] and all(v.shape == audio.shape for v in o.values())
           for o in outs)
print("separated", len(outs))
'''


def test_api_separation_never_imports_nnabla(tiny_model, tmp_path):
    p, loaded = probe(tmp_path, "-c", API_CALLS, tiny_model)
    assert p.returncode == 0 and "separated 5" in p.stdout, p.stderr
    assert loaded == []


def test_evaluation_never_imports_nnabla(tiny_model, tiny_musdb, tmp_path):
    p, loaded = probe(tmp_path, "-m", "xumx.eval", "--model", tiny_model, "--root", tiny_musdb,
                      "--is-wav", "--evaldir", str(tmp_path / "scores"), "--targets", "vocals", "drums")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "scores" / "scores.csv").exists()
    assert loaded == []


# ------------------------------------------------------------------ nor the onnx package
#: what the onnx package brings; none of it is a dependency of xumx (issue 19: Spleeter Web's
#: TensorFlow pins protobuf < 5 and ml-dtypes 0.3, which no recent onnx accepts)
ONNX_STACK = ("onnx", "google.protobuf", "ml_dtypes")

BUILD_AND_SEPARATE = '''
import sys
import numpy as np
from xumx.engine import OnnxNet
from xumx.onnxnet import model_bytes
from xumx.separator import Separator
from xumx.weights import load_xumx
cfg, arrays = load_xumx(sys.argv[1])
assert model_bytes(cfg, arrays)[:2] == b"\\x08\\x07"   # ModelProto.ir_version = 7
out = Separator(OnnxNet.from_arrays(cfg, arrays)).separate(np.zeros((4000, 2), np.float32))
print("separated", sorted(out))
'''


@pytest.mark.parametrize("run", ["export", "separate", "api"])
def test_building_and_serving_never_import_onnx(run, tiny_model, song, tmp_path, monkeypatch):
    """Exporting, separating with a model built in this very process (an empty model cache)
    and the API build the ONNX model without the onnx package, protobuf or ml_dtypes (all
    three are installed in the test environments, so an import would show)."""
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    args = {"export": ["-m", "xumx.export", "--model", tiny_model, "--out",
                       str(tmp_path / "m.onnx")],
            "separate": ["-m", "xumx.test", song, "--model", tiny_model, "--outdir",
                         str(tmp_path / "out")],
            "api": ["-c", BUILD_AND_SEPARATE, tiny_model]}[run]
    p, loaded = probe(tmp_path, *args, watch=ONNX_STACK)
    assert p.returncode == 0, p.stderr
    assert loaded == []
    if run == "export":
        assert (tmp_path / "m.onnx").stat().st_size > 100000
    elif run == "separate":
        assert len(os.listdir(tmp_path / "out" / "song")) == 4
        assert [n for n in os.listdir(tmp_path / "cache" / "onnx") if n.endswith(".onnx")]
    else:
        assert "separated ['bass', 'drums', 'other', 'vocals']" in p.stdout


def test_separation_at_another_rate_never_imports_scipy_signal(tiny_model, tmp_path):
    """A song at 48 kHz (resampled to the model's rate and back) is separated without
    scipy.signal, whose imports (scipy.stats, optimize, sparse, ...) would hold about 40 MB of
    every separation's memory (docs/onnx-engine.md, "Memory"); the probe sees it when it is
    imported (below)."""
    path = tmp_path / "song48k.wav"
    sf.write(str(path), sine_mix(48000 * 2 + 77, 48000), 48000)
    p, loaded = probe(tmp_path, "-m", "xumx.test", str(path), "--model", tiny_model, "--outdir",
                      str(tmp_path / "out"), watch=("scipy.signal",))
    assert p.returncode == 0, p.stderr
    assert len(os.listdir(tmp_path / "out" / "song48k")) == 4
    assert loaded == []
    p, loaded = probe(tmp_path, "-c", "import scipy.signal", watch=("scipy.signal",))
    assert "scipy.signal" in loaded


def test_the_probe_sees_onnx(tmp_path):
    """The watch of the test above works: importing onnx's helper shows up."""
    p, loaded = probe(tmp_path, "-c", "import onnx.helper", watch=ONNX_STACK)
    assert p.returncode == 0, p.stderr
    assert "onnx.helper" in loaded and "google.protobuf" in loaded


# ------------------------------------------------------------------ without nnabla: one line
BACKEND_NNABLA = '''
import sys
import numpy as np
from xumx.training.backend import NnablaMissing
from xumx.separator import Separator
try:
    Separator.load(sys.argv[1], backend="nnabla")
except NnablaMissing as e:
    print("refused:", e)
out = Separator.load(sys.argv[1]).separate(np.zeros((4000, 2), np.float32))
print("onnxruntime still separates:", sorted(out))
'''


def test_backend_nnabla_without_nnabla_is_one_clear_error(tiny_model, tmp_path):
    p, loaded = probe(tmp_path, "-c", BACKEND_NNABLA, tiny_model, block=True)
    assert p.returncode == 0, p.stderr
    refused = [ln for ln in p.stdout.splitlines() if ln.startswith("refused:")]
    assert len(refused) == 1 and "the NNabla graph (backend='nnabla') needs " \
        "nnabla, which runs on CPython 3.8-3.10" in refused[0]
    assert "onnxruntime still separates: ['bass', 'drums', 'other', 'vocals']" in p.stdout
    assert loaded == []


@pytest.mark.parametrize("command", ["train", "train-with-flags"])
def test_commands_needing_nnabla_stop_with_one_line(command, tiny_model, tiny_musdb, song, tmp_path):
    out = tmp_path / "out"
    argv, prefix, feature = {
        "train": (["xumx.train"], "xumx.train: error: ", "training"),
        "train-with-flags": (["xumx.train", "--root", tiny_musdb, "--is-wav", "--output", str(out)],
                             "xumx.train: error: ", "training"),
    }[command]
    p, loaded = probe(tmp_path, "-m", *argv, block=True)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"{prefix}{feature} needs nnabla, which runs on CPython 3.8-3.10")
    assert "make setup" in lines[0] and "environment-cpu.yml" in lines[0]
    assert not out.exists() and loaded == []


@pytest.mark.skipif(gpu_onnxruntime(), reason="onnxruntime-gpu is installed here: this checks "
                    "the message of a machine without it (test_engine checks a GPU build is used)")
@pytest.mark.parametrize("command", ["test", "eval"])
def test_gpu_context_needs_no_nnabla_and_says_what_it_needs(command, tiny_model, tiny_musdb, song,
                                                            tmp_path):
    """--context cudnn is onnxruntime's CUDA provider, not nnabla's: without nnabla and without
    onnxruntime-gpu (this machine) it stops with one line naming what GPU separation needs."""
    out = tmp_path / "out"
    argv, prefix = {
        "test": (["xumx.test", "--inputs", song, "--model", tiny_model, "--context", "cudnn",
                  "--outdir", str(out)], "xumx.test: error: "),
        "eval": (["xumx.eval", "--model", tiny_model, "--root", tiny_musdb, "--is-wav",
                  "--context", "cudnn", "--evaldir", str(out)], "xumx.eval: error: "),
    }[command]
    p, loaded = probe(tmp_path, "-m", *argv, block=True)
    assert p.returncode != 0, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"{prefix}cannot run on CUDA device 0")
    assert "onnxruntime-gpu" in lines[0] and "nnabla" not in lines[0]
    assert not out.exists() and loaded == []


@pytest.mark.parametrize("version,error,why", [
    ((3, 13), ModuleNotFoundError("No module named 'nnabla'", name="nnabla"),
     "this is Python 3.13, where nnabla has no release"),
    ((3, 10), ModuleNotFoundError("No module named 'nnabla'", name="nnabla"),
     "it is not installed in this Python 3.10"),
    ((3, 9), ImportError("numpy.core.multiarray failed to import\n\nA module compiled..."),
     "it does not import here (ImportError: numpy.core.multiarray failed to import A module compiled...)"),
])
def test_missing_message_is_one_line_with_the_reason(version, error, why):
    msg = missing_message("training", error, version)
    assert "\n" not in msg and msg.startswith("training needs nnabla, which runs on CPython 3.8-3.10")
    assert f"({why})" in msg and "make setup" in msg
    assert issubclass(NnablaMissing, ImportError)


# ------------------------------------------------------------------ Spleeter Web's call
def spleeterweb_estimates(*args, **kwargs):
    """Spleeter Web's call, from scripts/spleeterweb_call.py (which scripts/check_spleeterweb.sh
    runs in real Python 3.11 and 3.10 environments)."""
    spec = importlib.util.spec_from_file_location(
        "spleeterweb_call", os.path.join(ROOT, "scripts", "spleeterweb_call.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.RATE * module.CHUNK_SECONDS == 1323000   # the reference's chunk size
    return module.spleeterweb_estimates(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny_44k_model(tmp_path_factory):
    cfg = tiny_config(sample_rate=44100)
    path = str(tmp_path_factory.mktemp("sw") / "x-umx.h5")
    save_model(path, cfg, random_arrays(cfg, seed=2))
    return path


@pytest.mark.parametrize("nnabla_lines", [False, pytest.param(True, marks=pytest.mark.nnabla)])
def test_spleeterweb_call(tiny_44k_model, nnabla_lines):
    """Without the caller's three nnabla lines (any Python), and with them (3.8-3.10): stems
    with exactly Spleeter Web's keys, the whole length, summing to the mixture."""
    if nnabla_lines:
        import nnabla as nn
        from nnabla.ext_utils import get_extension_context
        nn.set_default_context(get_extension_context("cpu"))
        nn.set_auto_forward(True)
    audio = sine_mix(44100 * 61 + 123, 44100)   # three chunks, the last one short
    est = spleeterweb_estimates(audio, tiny_44k_model, iterations=1)
    assert list(est) == SOURCES
    for value in est.values():
        assert value.shape == audio.shape and value.dtype == np.float32 and np.isfinite(value).all()
    total = sum(est.values())
    assert 10 * np.log10(np.sum(audio.astype(float) ** 2) / np.sum((total - audio) ** 2)) > 30
    if nnabla_lines:   # the caller's settings are left as they were
        assert nn.get_auto_forward() and "cpu" in str(nn.get_current_context())
