"""Benchmark: separation speed and peak memory of xumx (numpy CPU path and NNabla graph)
against open-unmix (PyTorch), and seconds per training iteration.

Not a test: it prints numbers. Every measurement runs in its own subprocess, so the peak
resident memory (ru_maxrss) printed is that path's own. Usage::

    python benchmarks/separate.py                     # 60 s; NNabla path on 10 s
    python benchmarks/separate.py --seconds 30 --skip-train
    python benchmarks/separate.py --openunmix-python /tmp/ouvenv/bin/python

The NNabla graph and training rows need nnabla (Python 3.8-3.10) and are skipped with a note
elsewhere, so the xumx row runs on any Python. open-unmix needs PyTorch, which may need another
Python than nnabla: give that interpreter with --openunmix-python (or the XUMX_OPENUNMIX_PYTHON
environment variable); it needs torch and ``openunmix`` importable (torchaudio is not needed:
a stub is inserted).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from xumx.config import ModelConfig  # noqa: E402  (plain Python: works beside torch too)

DEFAULT = ModelConfig()
RATE = DEFAULT.sample_rate
TARGETS = DEFAULT.sources


def make_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Generated stereo 'music' (T, C) float32: a few detuned partials, pulses and noise."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    channels = DEFAULT.nb_channels
    sig = np.zeros((t.size, channels))
    for k in range(6):
        f = 55.0 * 2 ** (rng.rand() * 5)
        gains = rng.rand(channels)
        tone = 0.1 * np.sin(2 * np.pi * f * t + rng.rand()) * (1 + np.sin(2 * np.pi * 0.5 * t * k))
        sig += tone[:, None] * gains
    pulses = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(t.size) * 0.2
    sig += pulses[:, None] + 0.01 * rng.standard_normal(sig.shape)
    return sig.astype(np.float32)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------- workers
def work_xumx(seconds, backend, niter):
    from xumx.config import SeparationConfig
    from xumx.separator import Separator
    from xumx.weights import random_arrays
    audio = make_audio(seconds)
    cfg = DEFAULT
    sep = Separator(cfg, random_arrays(cfg, 0), SeparationConfig(niter=niter), backend=backend)
    base = peak_mb()
    start = time.perf_counter()
    out = sep.separate(audio)
    wall = time.perf_counter() - start
    assert set(out) == set(TARGETS) and all(o.shape == audio.shape for o in out.values())
    return dict(wall=wall, peak_mb=peak_mb(), base_mb=base)


def work_openunmix(seconds, niter, threads):
    import types
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # unused by 'torch' STFT
    import torch
    if threads:
        torch.set_num_threads(threads)
    from openunmix.model import OpenUnmix, Separator
    torch.manual_seed(0)
    cfg = DEFAULT
    models = {t: OpenUnmix(nb_bins=cfg.nb_bins, nb_channels=cfg.nb_channels,
                           hidden_size=cfg.hidden_size, max_bin=cfg.max_bin) for t in TARGETS}
    sep = Separator(models, niter=niter, n_fft=cfg.nfft, n_hop=cfg.nhop,
                    nb_channels=cfg.nb_channels, sample_rate=RATE)
    sep.freeze()
    audio = torch.from_numpy(make_audio(seconds).T[None].copy())
    base = peak_mb()
    with torch.no_grad():
        start = time.perf_counter()
        out = sep(audio)
        wall = time.perf_counter() - start
    assert out.shape[:2] == (1, len(TARGETS))
    return dict(wall=wall, peak_mb=peak_mb(), base_mb=base, threads=torch.get_num_threads())


def work_train(batch, seconds, iters):
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.solvers as S
    from xumx.model import OpenUnmixCrossNet
    cfg = DEFAULT
    rng = np.random.RandomState(0)
    model = OpenUnmixCrossNet(cfg, rng=rng)
    audio = nn.Variable((batch, cfg.nb_channels, int(seconds * RATE)))
    mix_spec, masks, _ = model(audio, test=False)
    target = nn.Variable(mix_spec.shape)
    loss = sum(F.mean(F.squared_error(m * mix_spec, target)) for m in masks) / len(masks)
    solver = S.Adam(1e-3)
    solver.set_parameters(model.get_parameters(grad_only=True))
    times = []
    for _ in range(iters):
        audio.d = rng.uniform(-0.5, 0.5, audio.shape)
        target.d = rng.uniform(0, 1, target.shape)
        start = time.perf_counter()
        loss.forward(clear_no_need_grad=True)
        solver.zero_grad()
        loss.backward(clear_buffer=True)
        solver.update()
        times.append(time.perf_counter() - start)
    return dict(wall=min(times), peak_mb=peak_mb(), iters=iters)


def run_worker(args):
    if args.worker == "openunmix":
        res = work_openunmix(args.seconds, args.niter, args.torch_threads)
    elif args.worker == "train":
        res = work_train(args.train_batch, args.train_seconds, args.train_iters)
    else:
        res = work_xumx(args.seconds, args.worker, args.niter)
    print("RESULT " + json.dumps(res))


# ---------------------------------------------------------------------- driver
def nnabla_missing():
    """Why the NNabla rows cannot run in this Python (one line), or None when they can."""
    from xumx._nnabla import NnablaMissing, require_nnabla
    try:
        require_nnabla("the NNabla graph")
    except NnablaMissing as e:
        return str(e)
    return None


def spawn(python, worker, args, seconds, threads=0):
    """Run one measurement in a fresh interpreter; its result dict, or None with a note."""
    cmd = [python, os.path.abspath(__file__), "--worker", worker, "--seconds", str(seconds),
           "--niter", str(args.niter), "--train-batch", str(args.train_batch),
           "--train-seconds", str(args.train_seconds), "--train-iters", str(args.train_iters),
           "--torch-threads", str(threads)]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"  ({worker} failed with exit status {proc.returncode}"
          f"{' (killed: out of memory?)' if proc.returncode < 0 else ''}: {tail})")
    return None


def row(name, seconds, res):
    if res is None:
        return
    print(f"{name:<42} {seconds:>7.1f} {res['wall']:>9.2f} {res['wall'] / seconds:>8.3f} "
          f"{res['peak_mb']:>10.0f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="audio length (default 60)")
    p.add_argument("--niter", type=int, default=1, help="Wiener EM iterations (default 1)")
    p.add_argument("--nnabla-seconds", type=float, default=10.0,
                   help="audio length for the slow NNabla CPU path (default 10; 0 skips it)")
    p.add_argument("--openunmix-python",
                   default=os.environ.get("XUMX_OPENUNMIX_PYTHON", "/tmp/ouvenv/bin/python"),
                   help="interpreter with torch and openunmix (env XUMX_OPENUNMIX_PYTHON)")
    p.add_argument("--skip-train", action="store_true", help="skip the training iteration")
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--train-seconds", type=float, default=6.0)
    p.add_argument("--train-iters", type=int, default=1)
    p.add_argument("--openunmix-threads", default="1,0",
                   help="torch thread counts to run open-unmix with, comma-separated; 0 is "
                        "torch's default (default '1,0': on a busy 2-core machine torch's "
                        "spinning threads can be much slower than one thread)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return run_worker(args)

    print(f"stereo 44.1 kHz generated audio, {len(TARGETS)} targets, niter {args.niter}, "
          f"random full-size weights (hidden 512, n_fft 4096); each row its own process")
    print(f"{'path':<42} {'audio s':>7} {'wall s':>9} {'x real':>8} {'peak MB':>10}")
    results = {}
    results["numpy"] = spawn(sys.executable, "numpy", args, args.seconds)
    row("xumx CPU (numpy) path", args.seconds, results["numpy"])
    if os.path.exists(args.openunmix_python):
        for threads in (int(t) for t in args.openunmix_threads.split(",")):
            res = spawn(args.openunmix_python, "openunmix", args, args.seconds, threads)
            if res:
                row(f"open-unmix 1.3 (PyTorch, {res['threads']} thread(s))", args.seconds, res)
                best = results.get("openunmix")
                if best is None or res["wall"] < best["wall"]:
                    results["openunmix"] = res
    else:
        print(f"  (open-unmix skipped: no interpreter at {args.openunmix_python}; "
              f"give one with torch and openunmix via --openunmix-python)")
    missing = nnabla_missing()
    if missing:
        print(f"  (NNabla graph and training rows skipped: {missing})")
    if args.nnabla_seconds > 0 and not missing:
        results["nnabla"] = spawn(sys.executable, "nnabla", args, args.nnabla_seconds)
        label = "xumx NNabla graph (CPU)"
        if args.nnabla_seconds != args.seconds:
            label += f" [{args.nnabla_seconds:g} s excerpt]"
        row(label, args.nnabla_seconds, results["nnabla"])
    ours = results.get("numpy")
    if ours:
        rtf = ours["wall"] / args.seconds
        for key, name in (("openunmix", "the faster open-unmix"), ("nnabla", "NNabla graph")):
            other = results.get(key)
            if other:
                secs = args.seconds if key == "openunmix" else args.nnabla_seconds
                print(f"numpy path real-time factor / {name}'s: "
                      f"{rtf / (other['wall'] / secs):.3f}")
    if not args.skip_train and not missing:
        res = spawn(sys.executable, "train", args, args.seconds)
        if res:
            print(f"training iteration (NNabla CPU, batch {args.train_batch}, "
                  f"{args.train_seconds:g} s stereo, forward+backward+Adam): "
                  f"{res['wall']:.1f} s/iteration, peak {res['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
