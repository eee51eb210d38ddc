"""Benchmark: ``python -m xumx.test`` against open-unmix's ``umx`` command, whole commands at
their defaults, on generated stereo songs: a 60 s song, a 4-minute song and a folder of 8
songs of 30 s (xumx is given the folder, ``umx`` its 8 files: each one command); then the
per-stage profile of ``python -m xumx.test`` on a 60 s song.

Not a test: it prints numbers. In each case each command runs once untimed (warm-up: page
cache, and our ONNX model cache, whose build time is printed), then the two alternate
``--runs`` times (default 5); each run, the medians, their spread and the ratio are printed,
then a table of the cases, with the machine, both Pythons and the load average before each
case and after. Both commands run at their defaults (threads included: OMP_NUM_THREADS and the
like are removed from their environment); both are given a model folder or file, since the
published weights cannot be downloaded everywhere:

* xumx: a full-size X-UMX file of the published shapes with seeded random weights;
* open-unmix 1.3: a ``umxhq``-shaped model (hidden 512, 3 bidirectional LSTM layers, n_fft
  4096, 4 targets) with PyTorch's random initial weights, in the folder layout its CLI loads
  (``separator.json``, ``<target>.pth``, ``<target>.json``), so ``umx`` is given
  ``--model DIR --targets bass drums vocals other`` (required for local models).

The profile (``--profile-seconds``, 0: none) runs the command in a fresh process with its
stages timed (wall and process CPU time in the main thread; the Wiener filter's statistics,
E-step and synthesis with the CPU clock of the worker thread that ran them), after one run
that fills the model cache; ``--worker profile --threads 1`` gives one thread everywhere.

open-unmix needs PyTorch in another interpreter (``--openunmix-python``, or the environment
variable XUMX_OPENUNMIX_PYTHON; default /tmp/ouvenv/bin/python), made e.g. with::

    python3.11 -m venv /tmp/ouvenv
    /tmp/ouvenv/bin/pip install torch==2.13.0 numpy tqdm soundfile
    /tmp/ouvenv/bin/pip install --no-deps openunmix==1.3.0

torchaudio has no wheel for that PyTorch; when the interpreter cannot import it, the
benchmark puts ``benchmarks/torchaudio_shim`` (load/info/save with soundfile, as torchaudio's
soundfile backend) on its path. Usage::

    python benchmarks/separate.py                       # every case, 5 alternating runs
    python benchmarks/separate.py -n 3 --cases 60s --workdir /tmp/bench
    python benchmarks/separate.py --precision int8      # xumx with its opt-in int8 network

Other measurements, each in its own process: ``--worker engine --seconds S`` (one
``Separator.separate`` call: wall time and peak memory), ``--worker profile --seconds S``
(the profile's numbers as JSON). Training steps are measured by ``benchmarks/train_step.py``.
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
from chunking import full_size_model  # noqa: E402
from xumx.config import ModelConfig  # noqa: E402
from xumx.flags import PRECISIONS  # noqa: E402

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


#: the cases of a comparison: (name, song lengths in seconds; several: a folder of songs)
CASES = {"60s": ("a 60 s song", [60.0]), "4min": ("a 4-minute song", [240.0]),
         "folder": ("a folder of 8 songs of 30 s", [30.0] * 8)}


def write_songs(work, key, lengths):
    """The generated 16-bit WAV songs of a case: (what xumx.test is given, the files). Written
    by another process: a child's peak memory (``ru_maxrss``) starts from its parent's at
    exec, so this process stays small."""
    if len(lengths) == 1:
        paths = [os.path.join(work, f"song-{lengths[0]:g}.wav")]
        where = paths[0]
    else:
        where = os.path.join(work, f"songs-{key}")
        os.makedirs(where, exist_ok=True)
        paths = [os.path.join(where, f"song-{k + 1}.wav") for k in range(len(lengths))]
    todo = [(k, path, seconds) for k, (path, seconds) in enumerate(zip(paths, lengths))
            if not os.path.exists(path)]
    if todo:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "songs",
                        json.dumps(todo)], check=True)
    return where, paths


def work_songs(todo):
    import soundfile as sf
    from chunking import test_song
    for k, path, seconds in todo:
        sf.write(path + ".part.wav", test_song(seconds, RATE, seed=k), RATE, subtype="PCM_16")
        os.replace(path + ".part.wav", path)


def prepare(args, work):
    """Both models and, per case, both command lines (with their environments): {case: (xumx,
    open-unmix or None)}; open-unmix is None where its interpreter is missing."""
    ours = os.path.join(work, "random-full.h5")
    if not os.path.exists(ours):   # in another process, as the songs (write_songs)
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from chunking import full_size_model; full_size_model(sys.argv[2])",
                        HERE, work], check=True)
    env_ours = clean_env(XUMX_CACHE=os.path.join(work, "cache"),
                         PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    py = args.openunmix_python
    entry = env = umx_model = None
    if os.path.exists(py):
        env = clean_env()
        if subprocess.run([py, "-c", "import torchaudio"], capture_output=True).returncode:
            env["PYTHONPATH"] = os.path.join(HERE, "torchaudio_shim")
        umx_model = os.path.join(work, "umxhq-random")
        if not os.path.exists(os.path.join(umx_model, "separator.json")):
            subprocess.run([py, "-c", MAKE_UMX, umx_model, *TARGETS], env=env, check=True)
        script = os.path.join(os.path.dirname(py), "umx")
        entry = [script] if os.path.exists(script) else \
            [py, "-c", "import sys; from openunmix.cli import separate; sys.exit(separate())"]
    out = {}
    for key in args.cases:
        _, lengths = CASES[key]
        where, paths = write_songs(work, key, lengths)
        xumx = ([sys.executable, "-m", "xumx.test", "--inputs", where, "--model", ours,
                 "--outdir", os.path.join(work, "out-xumx")]
                + (["--precision", args.precision] if args.precision else []), env_ours)
        umx = None if entry is None else \
            (entry + paths + ["--model", umx_model, "--targets", *TARGETS,
                              "--outdir", os.path.join(work, "out-umx")], env)
        out[key] = (xumx, umx)
    return out


def compare_case(key, commands, runs, work):
    """One case: a warm-up of each command, then ``runs`` alternating timed runs; prints each
    run and the medians; returns (xumx median, open-unmix median or None, pair ratios)."""
    title, lengths = CASES[key]
    print(f"\n== {title} ({sum(lengths):g} s of audio; load average before: {load()})")
    for name, (cmd, env) in commands.items():
        print(f"  {name}: {' '.join(cmd)}")
    cache = os.path.join(work, "cache", "onnx")
    cold = not (os.path.isdir(cache) and any(f.endswith(".onnx") for f in os.listdir(cache)))
    for name, (cmd, env) in commands.items():
        wall, cpu, rss = timed(cmd, env, work)
        note = " (builds the ONNX model cache)" if name == "xumx" and cold else ""
        print(f"warm-up {name:<11} {wall:7.2f} s wall, {cpu:6.2f} s CPU, {rss:6.0f} MB peak{note}",
              flush=True)
    rows = {name: [] for name in commands}
    for k in range(runs):
        for name, (cmd, env) in commands.items():
            rows[name].append(timed(cmd, env, work))
            wall, cpu, rss = rows[name][-1]
            print(f"run {k + 1} {name:<13} {wall:7.2f} s wall, {cpu:6.2f} s CPU, {rss:6.0f} MB peak "
                  f"(load {load()})", flush=True)
    med = {}
    for name, got in rows.items():
        walls = [r[0] for r in got]
        med[name] = statistics.median(walls)
        print(f"{name:<11} median {med[name]:.2f} s wall (min {min(walls):.2f}, max {max(walls):.2f}), "
              f"median {statistics.median(r[1] for r in got):.2f} s CPU, "
              f"{max(r[2] for r in got):.0f} MB peak, {med[name] / sum(lengths):.3f}x real time")
    pairs = []
    if "open-unmix" in med:
        pairs = [a[0] / b[0] for a, b in zip(rows["xumx"], rows["open-unmix"])]
        print(f"ratio xumx / open-unmix (median wall times): "
              f"{med['xumx'] / med['open-unmix']:.3f} (per alternating pair: "
              f"{min(pairs):.3f} to {max(pairs):.3f})")
    return med["xumx"], med.get("open-unmix"), pairs


def compare(args):
    work = args.workdir or tempfile.mkdtemp(prefix="xumx-bench-")
    os.makedirs(work, exist_ok=True)
    cases = prepare(args, work)
    ours_v = versions(sys.executable, ["numpy", "onnxruntime"])
    print(f"machine: {machine()}; load average before: {load()}")
    print(f"songs: generated, stereo, 44.1 kHz, 16-bit WAV, in {work}")
    print(f"xumx:       Python {ours_v.pop('python')} ({sys.executable}), "
          + ", ".join(f"{k} {v}" for k, v in ours_v.items())
          + "; full-size X-UMX with random weights")
    umx = any(u is not None for _, u in cases.values())
    if not umx:
        print(f"open-unmix: skipped, no interpreter at {args.openunmix_python} "
              f"(--openunmix-python; see this script's docstring)")
    else:
        theirs = versions(args.openunmix_python, ["torch", "openunmix", "torchaudio", "numpy"],
                          env=next(iter(cases.values()))[1][1])
        print(f"open-unmix: Python {theirs.pop('python')} ({args.openunmix_python}), "
              + ", ".join(f"{k} {v}" for k, v in theirs.items())
              + "; umxhq-shaped model with random weights (--model DIR --targets ...)")
    table = []
    for key, (xumx, theirs) in cases.items():
        commands = {"xumx": xumx}
        if theirs is not None:
            commands["open-unmix"] = theirs
        table.append((key,) + compare_case(key, commands, args.runs, work))
    print(f"\nload average after: {load()}")
    print(f"{'case':<30} {'xumx':>8} {'open-unmix':>11} {'ratio':>7}  pairs (goal: ratio <= {GOAL})")
    for key, ours, theirs, pairs in table:
        ratio = f"{ours / theirs:7.3f}" if theirs else f"{'-':>7}"
        spread = f"{min(pairs):.3f}-{max(pairs):.3f}" if pairs else "-"
        umx = f"{theirs:10.2f}s" if theirs else f"{'-':>11}"
        print(f"{CASES[key][0]:<30} {ours:7.2f}s {umx} {ratio}  {spread}")
    if args.profile_seconds:
        print()
        profile(args.profile_seconds, None)


#: the wall-time ratio xumx / open-unmix that issue 23 aims for
GOAL = 0.20


# ---------------------------------------------------------------------- the profile
#: stages timed in the main thread (wall and process CPU: onnxruntime's threads count in the
#: network's CPU); the Wiener filter's stages run on its worker threads and are timed with
#: each thread's own CPU clock
MAIN_STAGES = (("load the model", "xumx.separator", "Separator.load"),
               ("STFT", "xumx.separator", "Separator._input_and_peak"),
               ("network", "xumx.separator", "Separator.batch_sources"),
               ("Wiener filter and synthesis, in all", "xumx.separator", "Separator._filter"))
THREAD_STAGES = (("fc3 (the network's head), block by block", "xumx.engine",
                  "SourceMagnitudes.__getitem__"),
                 ("Wiener statistics", "xumx.filtering", "_factor_sums"),
                 ("Wiener statistics", "xumx.filtering", "_covariance_sums"),
                 ("Wiener E-step", "xumx.filtering", "_em_step"),
                 ("synthesis (inverse FFTs, overlap-add)", "xumx.dsp", "OverlapAdd.segment"))


def _wrap(stages, module, attr, name, clock):
    import importlib
    owner = importlib.import_module(module)
    cls, _, fn = attr.rpartition(".")
    target = getattr(owner, cls) if cls else owner
    raw = target.__dict__.get(fn)
    real = raw.__func__ if isinstance(raw, classmethod) else getattr(target, fn)

    def timed_call(*a, **k):
        w, c = time.perf_counter(), clock()
        try:
            return real(*a, **k)
        finally:
            row = stages.setdefault(name, [0.0, 0.0, 0])
            row[0] += time.perf_counter() - w
            row[1] += clock() - c
            row[2] += 1
    setattr(target, fn, classmethod(timed_call) if isinstance(raw, classmethod) else timed_call)


def work_profile(seconds, threads):
    """``python -m xumx.test`` on a generated song in this process, with its stages timed."""
    w0, c0 = time.perf_counter(), time.process_time()
    import xumx.test  # noqa: F401  (the imports of a command line)
    import onnxruntime  # noqa: F401
    import xumx.separator  # noqa: F401
    import xumx.filtering
    stages = {"imports": [time.perf_counter() - w0, time.process_time() - c0, 1]}
    if threads:
        import xumx.engine
        xumx.engine.default_threads = lambda: threads
        xumx.filtering._ordered_map.__defaults__ = (threads,)
    for name, module, attr in MAIN_STAGES:
        _wrap(stages, module, attr, name, time.process_time)
    for name, module, attr in THREAD_STAGES:
        _wrap(stages, module, attr, name, time.thread_time)
    work = os.environ["XUMX_BENCH_WORK"]
    song, _ = write_songs(work, "profile", [seconds])
    code = xumx.test.main(["--inputs", song, "--model", full_size_model(work), "--outdir",
                           os.path.join(work, "out-profile"), "--quiet"])
    assert code == 0, code
    stages["whole process"] = [time.perf_counter() - w0, time.process_time() - c0, 1]
    return stages


def profile(seconds, threads):
    """Runs :func:`work_profile` in a fresh process (twice: the first builds the model cache
    and is not shown) and prints its table."""
    work = tempfile.mkdtemp(prefix="xumx-profile-")
    env = clean_env(XUMX_CACHE=os.path.join(work, "cache"), XUMX_BENCH_WORK=work)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "profile", "--seconds",
           str(seconds), "--threads", str(threads or 0)]
    for _ in range(2):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    stages = json.loads(done.stdout.split("RESULT ", 1)[1])
    whole = stages.pop("whole process")
    print(f"per-stage profile of python -m xumx.test, {seconds:g} s song, cached model, "
          f"{'default threads' if not threads else f'{threads} thread(s)'} "
          f"(load {load()}):")
    print(f"  {'stage':<40} {'calls':>5} {'wall s':>7} {'CPU s':>7}")
    threaded = {t[0] for t in THREAD_STAGES}
    for name, (wall, cpu, calls) in stages.items():
        if name not in threaded:
            print(f"  {name:<40} {calls:>5} {wall:7.2f} {cpu:7.2f}")
    for name, (wall, cpu, calls) in stages.items():
        if name in threaded:   # parts of the Wiener filter's row, on its threads: CPU only
            print(f"    {'of which ' + name:<38} {calls:>5} {'':>7} {cpu:7.2f}")
    rest = [whole[k] - sum(row[k] for name, row in stages.items()
                           if not any(name == t[0] for t in THREAD_STAGES)) for k in (0, 1)]
    print(f"  {'the rest (decode, cross-fade, write...)':<40} {'':>5} {rest[0]:7.2f} {rest[1]:7.2f}")
    print(f"  {'whole process':<40} {'':>5} {whole[0]:7.2f} {whole[1]:7.2f}")


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
    p.add_argument("--seconds", type=float, default=60.0,
                   help="--worker: song length (default 60)")
    p.add_argument("--runs", "-n", type=int, default=5,
                   help="timed runs of each command per case (default 5)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                   help="which comparisons (default: all)")
    p.add_argument("--profile-seconds", type=float, default=60.0,
                   help="song length of the per-stage profile after the comparison (0: none)")
    p.add_argument("--threads", type=int, default=0,
                   help="--worker profile: onnxruntime's and the Wiener filter's threads "
                        "(0: the defaults)")
    p.add_argument("--workdir", default=None,
                   help="folder for the song, the models and the outputs (default: a new "
                        "temporary folder); reused when given")
    p.add_argument("--openunmix-python",
                   default=os.environ.get("XUMX_OPENUNMIX_PYTHON", "/tmp/ouvenv/bin/python"),
                   help="interpreter with torch and openunmix (env XUMX_OPENUNMIX_PYTHON)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="give xumx.test --precision (default: none, its default)")
    p.add_argument("--worker", choices=["engine", "profile", "songs"],
                   help="instead: one in-process measurement (see the docstring)")
    p.add_argument("--niter", type=int, default=1, help="--worker engine: Wiener iterations")
    p.add_argument("songs", nargs="?", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "engine":
        print("RESULT " + json.dumps(work_engine(args.seconds, args.niter)))
    elif args.worker == "songs":
        work_songs(json.loads(args.songs))
    elif args.worker == "profile":
        print("RESULT " + json.dumps(work_profile(args.seconds, args.threads)))
    else:
        if args.runs < 1:
            p.error("--runs must be at least 1")
        compare(args)


if __name__ == "__main__":
    main()
