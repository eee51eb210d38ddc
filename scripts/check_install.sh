#!/usr/bin/env bash
# What a user gets from `pip install <this checkout>` on a given Python, checked for real:
#
#   scripts/check_install.sh VENV PYTHON [PIP ARGS...]
#   scripts/check_install.sh /tmp/v313 /usr/bin/python3.13
#   scripts/check_install.sh /tmp/v311 python3.11 -c constraints.txt   # with a caller's pins
#
# Makes the virtual environment VENV (outside the repository; replaced if it exists) with
# PYTHON, installs the checkout into it (not editable), then, from a folder outside the
# checkout: prints the versions pip chose, writes an ONNX model with xumx.onnxproto and runs it in
# onnxruntime (without importing onnx, protobuf or ml_dtypes), separates 8 s of
# generated audio with `python -m xumx.test` and a full-size seeded model (no nnabla may load),
# and checks nnabla: importable on Python 3.8-3.10, else `python -m xumx.train` must stop with
# one line and exit status 1. Leaves VENV in place; exits non-zero on the first failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:?usage: scripts/check_install.sh VENV PYTHON [PIP ARGS...]}"
PY="${2:?usage: scripts/check_install.sh VENV PYTHON [PIP ARGS...]}"
shift 2
case "$(cd "$(dirname "$VENV")" && pwd)/" in "$ROOT"/*) echo "VENV must be outside the checkout" >&2; exit 2;; esac

rm -rf "$VENV"
"$PY" -m venv "$VENV"
V="$VENV/bin/python"
LOG="$VENV/pip.log"
"$V" -m pip install -q --upgrade pip > "$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
start=$(date +%s)
"$V" -m pip install -q "$ROOT" "$@" >> "$LOG" 2>&1 || { grep -v "^WARNING: Location" "$LOG" >&2; exit 1; }
echo "pip install $ROOT $*: done in $(( $(date +%s) - start )) s ($("$V" --version))"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"   # the installed package runs, not the checkout
ROOT_CHECKOUT="$ROOT" "$V" - <<'PYEOF'
import importlib.metadata as md
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"

print("versions:", ", ".join(f"{n} {version(n)}" for n in
      ("numpy", "scipy", "h5py", "protobuf", "ml-dtypes", "onnx", "onnxruntime", "nnabla")))
import xumx
assert not xumx.__file__.startswith(os.environ.get("ROOT_CHECKOUT", "/nonexistent")), xumx.__file__

# xumx writes a model (no onnx package), onnxruntime runs it on numpy arrays
import onnxruntime as ort
from xumx import onnxproto
f32 = onnxproto.DataType.FLOAT
graph = onnxproto.graph([onnxproto.node("Mul", ["x", "x"], ["y"])], "square",
                        [onnxproto.tensor_value_info("x", f32, [None])],
                        [onnxproto.tensor_value_info("y", f32, [None])])
model = onnxproto.model(graph, 7, [onnxproto.opset("", 13)]).tobytes()
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
out = session.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
assert out.tolist() == [0.0, 1.0, 4.0, 9.0], out
assert not any(m.split(".")[0] in ("onnx", "ml_dtypes") or m.startswith("google.protobuf")
               for m in sys.modules), "the onnx stack was imported"
print("xumx.onnxproto -> onnxruntime: ok (onnx, protobuf, ml_dtypes not imported)")

# separation with the installed command, full-size seeded model, 8 s of generated music
from xumx.config import DEFAULT_SAMPLE_RATE, DEFAULT_SOURCES, ModelConfig
from xumx.synth import song_stems
sys.path.insert(0, os.path.join(os.environ["ROOT_CHECKOUT"], "tests"))   # the seeded parameters
from seeded import random_arrays
from xumx.weights import save_model
save_model("model.h5", ModelConfig(), random_arrays(ModelConfig(), seed=0))
mix = sum(song_stems(np.random.RandomState(0), 8.0, DEFAULT_SAMPLE_RATE).values())
sf.write("song.wav", (0.5 * mix / np.abs(mix).max()).astype(np.float32), DEFAULT_SAMPLE_RATE)
probe = ("import runpy, sys; sys.argv = ['xumx.test'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('xumx.test', run_name='__main__')\n"
         "finally:\n    print('nnabla loaded:', any(m.split('.')[0] == 'nnabla' for m in sys.modules))")
p = subprocess.run([sys.executable, "-c", probe, "--inputs", "song.wav", "--model", "model.h5",
                    "--outdir", "out"], capture_output=True, text=True)
assert p.returncode == 0, p.stderr
assert sorted(os.listdir("out/song")) == sorted(f"{s}.wav" for s in DEFAULT_SOURCES)
assert "nnabla loaded: False" in p.stdout, p.stdout
print("python -m xumx.test:", p.stdout.splitlines()[0])

if (3, 8) <= sys.version_info[:2] <= (3, 10):
    import nnabla
    print("nnabla", nnabla.__version__, "imports: training and the NNabla graph are available")
else:
    p = subprocess.run([sys.executable, "-m", "xumx.train"], capture_output=True, text=True)
    lines = p.stderr.splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    print("python -m xumx.train: exit 1,", lines[0])
PYEOF
