"""Benchmark: ``python -m xumx.test`` against open-unmix's ``umx`` command, whole commands at
their defaults, on a generated 60 s stereo song.

Not a test: it prints numbers. Each command runs once untimed (warm-up: page cache, and our
ONNX model cache, whose build time is printed), then the two alternate ``--runs`` times (default
3); the medians, their spread and the ratio are printed with the machine, both Pythons and
the load average before and after. Both commands run at their defaults (threads included:
OMP_NUM_THREADS and the like are removed from their environment); both are given a model
folder or file, since the published weights cannot be downloaded everywhere:

* xumx: a full-size X-UMX file of the published shapes with seeded random weights;
* open-unmix 1.3: a ``umxhq``-shaped model (hidden 512, 3 bidirectional LSTM layers, n_fft
  4096, 4 targets) with PyTorch's random initial weights, in the folder layout its CLI loads
  (``separator.json``, ``<target>.pth``, ``<target>.json``), so ``umx`` is given
  ``--model DIR --targets bass drums vocals other`` (required for local models).

open-unmix needs PyTorch in another interpreter (``--openunmix-python``, or the environment
variable XUMX_OPENUNMIX_PYTHON; default /tmp/ouvenv/bin/python), made e.g. with::

    python3.11 -m venv /tmp/ouvenv
    /tmp/ouvenv/bin/pip install torch==2.13.0 numpy tqdm soundfile
    /tmp/ouvenv/bin/pip install --no-deps openunmix==1.3.0

torchaudio has no wheel for that PyTorch; when the interpreter cannot import it, the
benchmark puts ``benchmarks/torchaudio_shim`` (load/info/save with soundfile, as torchaudio's
soundfile backend) on its path. Usage::

    python benchmarks/separate.py                       # 60 s, 3 alternating runs
    python benchmarks/separate.py --seconds 30 --runs 5 --workdir /tmp/bench

Another measurement, in its own process: ``--worker engine --seconds S`` (one
``Separator.separate`` call: wall time and peak memory). Training steps are measured by
``benchmarks/train_step.py``.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from xumx.config import ModelConfig  # noqa: E402

DEFAULT = ModelConfig()
RATE = DEFAULT.sample_rate
TARGETS = DEFAULT.sources
#: environment variables that would change a command's threads away from its default
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

#: run by the open-unmix interpreter: a umxhq-shaped model with random weights, as its CLI loads
MAKE_UMX = """
import json, os, sys, torch
from openunmix.model import OpenUnmix
from openunmix.utils import bandwidth_to_max_bin
out, targets = sys.argv[1], sys.argv[2:]
nfft, nhop, channels, hidden, rate = 4096, 1024, 2, 512, 44100
max_bin = bandwidth_to_max_bin(rate=float(rate), n_fft=nfft, bandwidth=16000)
os.makedirs(out, exist_ok=True)
for k, target in enumerate(targets):
    torch.manual_seed(k)
    model = OpenUnmix(nb_bins=nfft // 2 + 1, nb_channels=channels, hidden_size=hidden,
                      max_bin=max_bin)
    torch.save(model.state_dict(), os.path.join(out, target + ".pth"))
    with open(os.path.join(out, target + ".json"), "w") as f:
        json.dump({"args": {"nfft": nfft, "nhop": nhop, "nb_channels": channels,
                            "hidden_size": hidden}}, f)
with open(os.path.join(out, "separator.json"), "w") as f:
    json.dump({"sample_rate": float(rate), "nfft": nfft, "nhop": nhop, "nb_channels": channels}, f)
"""

VERSIONS = """
import importlib, importlib.metadata, json, platform, sys
out = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
        out[name] = getattr(module, "__version__", None) or importlib.metadata.version(name)
    except Exception as e:
        out[name] = "missing (%s)" % type(e).__name__
print(json.dumps(out))
"""


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs"


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def versions(python: str, modules, env=None) -> dict:
    done = subprocess.run([python, "-c", VERSIONS, *modules], capture_output=True, text=True,
                          env=env)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"python": "?"}


# ---------------------------------------------------------------------- commands
def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(extra)
    return env


def timed(cmd, env, cwd):
    """(wall s, CPU s of the process, peak RSS MB of the process) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
        else (status >> 8)
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n  "
                         + "\n  ".join(tail))
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def prepare(args, work):
    """The song, both models and both command lines (with their environments)."""
    import soundfile as sf
    from chunking import full_size_model, test_song
    song = os.path.join(work, f"song-{args.seconds:g}.wav")
    if not os.path.exists(song):
        sf.write(song, test_song(args.seconds, RATE), RATE, subtype="PCM_16")
    ours = full_size_model(work)
    xumx = ([sys.executable, "-m", "xumx.test", "--inputs", song, "--model", ours,
             "--outdir", os.path.join(work, "out-xumx")],
            clean_env(XUMX_CACHE=os.path.join(work, "cache"),
                      PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))))
    py = args.openunmix_python
    if not os.path.exists(py):
        return song, xumx, None
    env = clean_env()
    if subprocess.run([py, "-c", "import torchaudio"], capture_output=True).returncode:
        env["PYTHONPATH"] = os.path.join(HERE, "torchaudio_shim")
    umx_model = os.path.join(work, "umxhq-random")
    if not os.path.exists(os.path.join(umx_model, "separator.json")):
        subprocess.run([py, "-c", MAKE_UMX, umx_model, *TARGETS], env=env, check=True)
    script = os.path.join(os.path.dirname(py), "umx")
    entry = [script] if os.path.exists(script) else \
        [py, "-c", "import sys; from openunmix.cli import separate; sys.exit(separate())"]
    umx = (entry + [song, "--model", umx_model, "--targets", *TARGETS,
                    "--outdir", os.path.join(work, "out-umx")], env)
    return song, xumx, umx


def compare(args):
    work = args.workdir or tempfile.mkdtemp(prefix="xumx-bench-")
    os.makedirs(work, exist_ok=True)
    song, xumx, umx = prepare(args, work)
    ours_v = versions(sys.executable, ["numpy", "onnxruntime"])
    print(f"machine: {machine()}; load average before: {load()}")
    print(f"song: {song} ({args.seconds:g} s, stereo, 44.1 kHz, 16-bit WAV, generated)")
    print(f"xumx:       Python {ours_v.pop('python')} ({sys.executable}), "
          + ", ".join(f"{k} {v}" for k, v in ours_v.items())
          + "; full-size X-UMX with random weights")
    commands = {"xumx": xumx}
    if umx is None:
        print(f"open-unmix: skipped, no interpreter at {args.openunmix_python} "
              f"(--openunmix-python; see this script's docstring)")
    else:
        theirs = versions(args.openunmix_python, ["torch", "openunmix", "torchaudio", "numpy"],
                          env=umx[1])
        print(f"open-unmix: Python {theirs.pop('python')} ({args.openunmix_python}), "
              + ", ".join(f"{k} {v}" for k, v in theirs.items())
              + "; umxhq-shaped model with random weights (--model DIR --targets ...)")
        commands["open-unmix"] = umx
    for name, (cmd, env) in commands.items():
        print(f"  {name}: {' '.join(cmd)}")
    cache = os.path.join(work, "cache", "onnx")
    cold = not (os.path.isdir(cache) and any(f.endswith(".onnx") for f in os.listdir(cache)))
    for name, (cmd, env) in commands.items():
        wall, cpu, rss = timed(cmd, env, work)
        note = " (builds the ONNX model cache)" if name == "xumx" and cold else ""
        print(f"warm-up {name:<11} {wall:7.2f} s wall, {cpu:6.2f} s CPU, {rss:6.0f} MB peak{note}",
              flush=True)
    runs = {name: [] for name in commands}
    for k in range(args.runs):
        for name, (cmd, env) in commands.items():
            runs[name].append(timed(cmd, env, work))
            wall, cpu, rss = runs[name][-1]
            print(f"run {k + 1} {name:<13} {wall:7.2f} s wall, {cpu:6.2f} s CPU, {rss:6.0f} MB peak "
                  f"(load {load()})", flush=True)
    print(f"load average after: {load()}")
    med = {}
    for name, rows in runs.items():
        walls = [r[0] for r in rows]
        med[name] = statistics.median(walls)
        print(f"{name:<11} median {med[name]:.2f} s wall (min {min(walls):.2f}, max {max(walls):.2f}), "
              f"median {statistics.median(r[1] for r in rows):.2f} s CPU, "
              f"{max(r[2] for r in rows):.0f} MB peak, {med[name] / args.seconds:.3f}x real time")
    if "open-unmix" in med:
        pairs = [a[0] / b[0] for a, b in zip(runs["xumx"], runs["open-unmix"])]
        print(f"ratio xumx / open-unmix (median wall times): {med['xumx'] / med['open-unmix']:.3f} "
              f"(per alternating pair: {min(pairs):.3f} to {max(pairs):.3f})")


# ---------------------------------------------------------------------- workers
def work_engine(seconds, niter):
    from chunking import test_song
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from seeded import random_arrays
    from xumx.config import ChunkConfig, SeparationConfig
    from xumx.engine import OnnxNet
    from xumx.separator import Separator
    audio = test_song(seconds, RATE)
    sep = Separator(OnnxNet.from_arrays(DEFAULT, random_arrays(DEFAULT, 0)), None,
                    SeparationConfig(niter=niter), ChunkConfig(chunk_dur=0))
    base = peak_mb()
    start = time.perf_counter()
    out = sep.separate(audio)
    wall = time.perf_counter() - start
    assert set(out) == set(TARGETS) and all(o.shape == audio.shape for o in out.values())
    return dict(wall=wall, peak_mb=peak_mb(), base_mb=base)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="song length (default 60)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each command (default 3)")
    p.add_argument("--workdir", default=None,
                   help="folder for the song, the models and the outputs (default: a new "
                        "temporary folder); reused when given")
    p.add_argument("--openunmix-python",
                   default=os.environ.get("XUMX_OPENUNMIX_PYTHON", "/tmp/ouvenv/bin/python"),
                   help="interpreter with torch and openunmix (env XUMX_OPENUNMIX_PYTHON)")
    p.add_argument("--worker", choices=["engine"],
                   help="instead: one in-process measurement (see the docstring)")
    p.add_argument("--niter", type=int, default=1, help="--worker engine: Wiener iterations")
    args = p.parse_args(argv)
    if args.worker == "engine":
        print("RESULT " + json.dumps(work_engine(args.seconds, args.niter)))
    else:
        if args.runs < 1:
            p.error("--runs must be at least 1")
        compare(args)


if __name__ == "__main__":
    main()
