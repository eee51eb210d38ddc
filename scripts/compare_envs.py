"""Separate the same song in two Python environments and print the SER between their stems.

    python scripts/compare_envs.py                         # .venv against .venv-latest
    python scripts/compare_envs.py --python-a A/bin/python --python-b B/bin/python --seconds 40

The driver writes one generated song (xumx.synth, float WAV) and the full-size parity model
(seeded parameters) once; each environment then separates the song with ``python -m xumx.test``
(30 s chunks, float WAV stems) and the parity fixture's input (tests/data/parity) with
``separate_args_dict`` in its three configurations. Printed: per stem, the signal-to-error ratio
between the environments and, for the fixture, of each against the published code's outputs.
Exit status 1 when any SER between the environments is under 60 dB. Not a test: it prints.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY = os.path.join(ROOT, "tests", "data", "parity")
CONFIGS = {
    "default": dict(softmask=False, alpha=1.0, niter=1, residual_model=False),
    "softmask": dict(softmask=True, alpha=2.0, niter=0, residual_model=True),
    "em3": dict(softmask=False, alpha=1.0, niter=3, residual_model=False),
}
THRESHOLD_DB = 60.0


def ser_db(ref, est) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    err = np.sum((ref - est) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(ref ** 2) / err))


# ---------------------------------------------------------------------- worker (each env)
def worker(song, model, out):
    """Separate ``song`` through the CLI and the fixture through the API; save every stem."""
    import soundfile as sf
    from xumx.config import DEFAULT_SOURCES
    from xumx.test import separate_args_dict
    stems_dir = os.path.join(os.path.dirname(out), "stems")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xumx.test", "--inputs", song, "--model", model,
                    "--outdir", stems_dir, "--bits", "float", "--quiet"], check=True,
                   env=dict(os.environ, PYTHONPATH=ROOT))
    cli_wall = time.perf_counter() - start
    name = os.path.splitext(os.path.basename(song))[0]
    arrays = {f"song/{s}": sf.read(os.path.join(stems_dir, name, f"{s}.wav"), dtype="float32")[0]
              for s in DEFAULT_SOURCES}
    audio, _ = sf.read(os.path.join(PARITY, "input.wav"), dtype="float32")
    for config, kw in CONFIGS.items():
        est = separate_args_dict(audio, dict(model=model, umx_infer=False,
                                             targets=list(DEFAULT_SOURCES), **kw))
        arrays.update({f"{config}/{k}": v for k, v in est.items()})
    np.savez(out, **arrays)
    print("INFO " + json.dumps({
        "python": sys.version.split()[0], "numpy": np.__version__,
        "nnabla_loaded": any(m.split(".")[0] == "nnabla" for m in sys.modules),
        "cli_wall_s": cli_wall, "song_s": sf.info(song).duration}))


# ---------------------------------------------------------------------- driver
def run_env(python, song, model, folder):
    out = os.path.join(folder, "stems.npz")
    os.makedirs(folder)
    p = subprocess.run([python, os.path.abspath(__file__), "--worker", out, "--song", song,
                        "--model", model], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    info = [json.loads(ln[5:]) for ln in p.stdout.splitlines() if ln.startswith("INFO ")]
    if p.returncode or not info:
        sys.exit(f"compare_envs: {python} failed (exit {p.returncode}): "
                 f"{(p.stderr.strip().splitlines() or ['no output'])[-1]}")
    return np.load(out), info[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python-a", default=os.path.join(ROOT, ".venv", "bin", "python"))
    p.add_argument("--python-b", default=os.path.join(ROOT, ".venv-latest", "bin", "python"))
    p.add_argument("--seconds", type=float, default=40.0, help="song length (default 40: two chunks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--song", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    if args.worker:
        worker(args.song, args.model, args.worker)
        return 0

    import soundfile as sf
    from xumx.config import DEFAULT_SAMPLE_RATE, ModelConfig
    from xumx.synth import song_stems
    from xumx.weights import save_model
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from seeded import random_arrays
    with tempfile.TemporaryDirectory() as tmp:
        song, model = os.path.join(tmp, "song.wav"), os.path.join(tmp, "seed0.h5")
        stems = song_stems(np.random.RandomState(args.seed), args.seconds, DEFAULT_SAMPLE_RATE)
        mix = sum(stems.values())
        sf.write(song, (mix / max(1.0, np.abs(mix).max())).astype(np.float32), DEFAULT_SAMPLE_RATE,
                 subtype="FLOAT")
        save_model(model, ModelConfig(), random_arrays(ModelConfig(), seed=0))
        (a, info_a), (b, info_b) = (run_env(py, song, model, os.path.join(tmp, tag))
                                    for tag, py in (("a", args.python_a), ("b", args.python_b)))
        official = np.load(os.path.join(PARITY, "official_seed0.npz"))
        for tag, py, info in (("A", args.python_a, info_a), ("B", args.python_b, info_b)):
            print(f"{tag}: {py}  Python {info['python']}, numpy {info['numpy']}, nnabla loaded: "
                  f"{'yes' if info['nnabla_loaded'] else 'no'}, xumx.test wall "
                  f"{info['cli_wall_s']:.1f} s for {info['song_s']:.1f} s")
        print(f"song: {args.seconds:g} s generated (xumx.synth, seed {args.seed}), full-size seeded "
              f"model; fixture: tests/data/parity")
        print(f"{'stems':<22} {'A vs B dB':>10} {'A vs published':>15} {'B vs published':>15}")
        between = []
        for key in sorted(a.files):
            db = ser_db(a[key], b[key]) if a[key].shape == b[key].shape else float("-inf")
            between.append(db)
            ref = official[key] if key in official.files else None
            pub = ["-" if ref is None else f"{ser_db(ref, x[key][:len(ref)]):.1f}" for x in (a, b)]
            print(f"{key:<22} {db:>10.1f} {pub[0]:>15} {pub[1]:>15}")
        worst = min(between)
        print(f"lowest SER between the environments: {worst:.1f} dB "
              f"({'at least' if worst >= THRESHOLD_DB else 'UNDER'} {THRESHOLD_DB:g} dB)")
    return 0 if worst >= THRESHOLD_DB else 1


if __name__ == "__main__":
    sys.exit(main())
