"""Seconds per X-UMX training step and peak memory: xumx (NNabla, CPU) with its fast CPU kernels,
with nnabla's own functions, and the same step in PyTorch.

A step is what ``xumx.train`` does per batch: STFT of mixture and targets, the network, the ISTFT
of every estimate, the multi-domain loss over all proper source subsets, backward, L2 weight
decay and Adam. Every measurement runs in its own process (``--warmup`` untimed steps first,
then ``--steps`` timed ones; the median is reported), so the peak resident memory (VmHWM) is that
configuration's own; ``--repeats`` runs the implementations alternately and reports the median
over the runs. Numbers only; nothing is asserted.

    python benchmarks/train_step.py                                  # rows 1-3, fast kernels
    python benchmarks/train_step.py --rows 1 3 --nnabla --torch-python /tmp/torchenv/bin/python
    python benchmarks/train_step.py --rows 1 --profile               # time per nnabla function
    python benchmarks/train_step.py --rows 1 --xumx-root /tmp/xumx-main  # another checkout
    python benchmarks/train_step.py --rows 2 --before /tmp/xumx-main --with-no-dropout \
        --torch-python /tmp/torchenv/bin/python --repeats 3   # before/after/dropout/PyTorch
    mpirun -n 2 python benchmarks/train_step.py --child --hidden-size 64 --nfft 1024 --nhop 256 \
        --batch-size 4 --seq-dur 2      # data parallel: each process steps on its own batch

The rows are those of issue 11 (4 sources, stereo, 3 bidirectional LSTM layers, 44.1 kHz):
1. hidden 64, nfft 1024 / hop 256, batch 8 x 2 s; 2. hidden 512, nfft 4096 / hop 1024,
batch 16 x 1 s; 3. the paper's recipe, hidden 512, nfft 4096 / hop 1024, batch 16 x 6 s.
PyTorch runs ``benchmarks/torch_xumx_step.py`` with ``--torch-python`` (torch and numpy;
e.g. ``python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy``), or with
this interpreter when it can import torch. Every implementation runs the recipe's LSTM dropout
(0.4, ``--dropout``) unless it predates it (a checkout from before the flag, ``--before`` or
``--xumx-root``, runs as it is). The machine is shared by others at times: the load
average is printed with every run, and CPU time (user + sys) next to wall time.
"""
import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ROWS = {
    1: dict(hidden_size=64, nfft=1024, nhop=256, batch_size=8, seq_dur=2.0),
    2: dict(hidden_size=512, nfft=4096, nhop=1024, batch_size=16, seq_dur=1.0),
    3: dict(hidden_size=512, nfft=4096, nhop=1024, batch_size=16, seq_dur=6.0),
}
#: Figures of issue 11 (same machine kind, PyTorch 2.13 CPU): s/step and peak GB.
ISSUE_TORCH = {1: (0.57, 2.1), 2: (2.06, 2.8), 3: (19.7, 7.6)}
GOAL_RATIO = 1.0   # issue 24: row 2 within 1.0x of PyTorch (issue 11 asked 1.5x)


def status_mb(field: str, pid="self") -> float:
    """A memory line of /proc/<pid>/status (VmHWM: peak resident, VmRSS: resident) in MB;
    nan when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# ---------------------------------------------------------------------- the xumx side
def child_xumx(args):
    """One configuration's steps in this process; prints one JSON line. Under ``mpirun`` each
    process steps on its own batch with gradients averaged, as ``xumx.train``; rank 0 prints."""
    if args.kernels == "nnabla":
        os.environ["XUMX_KERNELS"] = "nnabla"
    import numpy as np
    import nnabla as nn
    import nnabla.solvers as S
    from xumx.config import ModelConfig
    from xumx.training.distributed import make_communicator
    from xumx.training.model import OpenUnmixCrossNet
    from xumx.training.trainer import build_loss_graph
    comm, ctx = make_communicator("cpu")
    nn.set_default_context(ctx)
    try:   # as xumx.train does (a checkout from before issue 24 item 2 has no such call)
        from xumx.heap import reuse_large_blocks
        reuse_large_blocks()
    except ImportError:
        pass
    cfg = ModelConfig(hidden_size=args.hidden_size, nb_layers=args.nb_layers, nfft=args.nfft,
                      nhop=args.nhop)
    model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(0))
    length = int(args.seq_dur * cfg.sample_rate)
    takes_dropout = "dropout" in inspect.signature(build_loss_graph).parameters  # not before issue 24
    graph = build_loss_graph(model, args.batch_size, length, args.mcoef, test=False,
                             **({"dropout": args.dropout} if args.dropout is not None and takes_dropout else {}))
    try:   # the trainer's solver (a checkout from before issue 24 item 2: nnabla's Adam)
        from xumx.training.adam import make_solver
    except ImportError:
        make_solver = S.Adam
    solver = make_solver(1e-3)
    params = model.get_parameters(grad_only=True)
    solver.set_parameters(params)
    rng = np.random.RandomState(comm.rank)
    walls, cpus, profile = [], [], {}
    nb_sources, channels = len(cfg.sources), cfg.nb_channels
    for step in range(args.warmup + args.steps):
        y = (0.1 * rng.randn(args.batch_size, nb_sources * channels, length)).astype(np.float32)
        x = y.reshape(args.batch_size, nb_sources, channels, length).sum(1)
        hooks = {}
        if args.profile and step == args.warmup + args.steps - 1:
            hooks = profile_hooks(profile)
        t0, c0 = time.perf_counter(), os.times()
        graph.feed(x, y)
        solver.zero_grad()
        graph.loss.forward(clear_no_need_grad=True, **hooks.get("forward", {}))
        graph.loss.backward(clear_buffer=True, **hooks.get("backward", {}))
        t1, p1 = time.perf_counter(), time.process_time()
        comm.all_reduce_grads(list(params.values()))
        solver.weight_decay(1e-5)
        solver.update()
        c1 = os.times()
        if hooks:
            profile["solver", "Adam + weight decay"] = (time.perf_counter() - t1, time.process_time() - p1)
        comm.barrier()
        if step >= args.warmup:
            walls.append(time.perf_counter() - t0)
            cpus.append((c1.user - c0.user) + (c1.system - c0.system))
    out = {"s_per_step": walls, "cpu_per_step": cpus, "vmhwm_mb": status_mb("VmHWM"),
           "loss": float(graph.loss.d), "processes": comm.n_procs}
    if profile:
        out["profile"] = [[phase, name, wall, cpu] for (phase, name), (wall, cpu) in profile.items()]
    if comm.rank == 0:
        print(json.dumps(out))


def profile_hooks(profile):
    """nnabla function hooks that add each function's wall and CPU time (all threads) to
    ``profile[(phase, type)]``."""
    hooks = {}
    for phase in ("forward", "backward"):
        starts = []

        def pre(f, starts=starts):
            starts.append((time.perf_counter(), time.process_time()))

        def post(f, starts=starts, phase=phase):
            wall, cpu = starts.pop()
            old = profile.get((phase, f.info.type_name), (0.0, 0.0))
            profile[phase, f.info.type_name] = (old[0] + time.perf_counter() - wall,
                                                old[1] + time.process_time() - cpu)
        hooks[phase] = {"function_pre_hook": pre, "function_post_hook": post}
    return hooks


# ---------------------------------------------------------------------- the parent
def spawn(cmd, env, timeout, mem_limit_mb, cpus=None):
    """Run a child (on the CPUs ``cpus`` when given); returns its JSON result, or {'error': ...}.
    A child above ``mem_limit_mb`` resident is killed (the 24 GB machine would otherwise swap or
    kill something else)."""
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=pin)
    start, peak = time.time(), 0.0
    while proc.poll() is None:
        rss = status_mb("VmRSS", proc.pid)
        peak = max(peak, rss if rss == rss else 0.0)
        if peak > mem_limit_mb:
            proc.kill()
            proc.wait()
            return {"error": f"killed above {mem_limit_mb / 1024:.0f} GB resident"}
        if time.time() - start > timeout:
            proc.kill()
            proc.wait()
            return {"error": f"timed out after {timeout} s"}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def config_args(cfg):
    return ["--hidden-size", str(cfg["hidden_size"]), "--nb-layers", str(cfg["nb_layers"]),
            "--nfft", str(cfg["nfft"]), "--nhop", str(cfg["nhop"]),
            "--batch-size", str(cfg["batch_size"]), "--seq-dur", str(cfg["seq_dur"])]


def dropout_args(impl, args):
    """The LSTM dropout of a run: the recipe's 0.4 unless --dropout says otherwise (another
    checkout too; one from before the flag runs without: the child passes it only where
    ``build_loss_graph`` takes it)."""
    if impl == "xumx-nodrop":
        return ["--dropout", "0"]
    return ["--dropout", str(args.dropout)]


def command(impl, cfg, args):
    """(argv, env) of one child."""
    env = dict(os.environ)
    if impl == "torch":
        argv = [args.torch_python, os.path.join(HERE, "torch_xumx_step.py"),
                "--threads", str(args.torch_threads), "--dropout", str(args.dropout)]
    else:
        argv = [sys.executable, os.path.abspath(__file__), "--child", "--kernels",
                "nnabla" if impl == "xumx-nnabla" else "fast"]  # (another checkout: ignored)
        root = args.before if impl == "xumx@before" else args.xumx_root
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
        env.pop("XUMX_KERNELS", None)
        if args.profile:
            argv.append("--profile")
        argv += dropout_args(impl, args)
    return argv + config_args(cfg) + ["--steps", str(args.steps), "--warmup", str(args.warmup)], env


def torch_python(args):
    if args.torch_python:
        return args.torch_python
    try:
        import torch  # noqa: F401
        return sys.executable
    except ImportError:
        return None


def describe(res):
    if "error" in res:
        return res["error"]
    return (f"{statistics.median(res['s_per_step']):7.2f} s/step (cpu {statistics.median(res['cpu_per_step']):6.2f} s), "
            f"peak {res['vmhwm_mb'] / 1024:5.2f} GB, loss {res['loss']:.4f}")


def print_profile(res):
    """Per nnabla function type: forward and backward wall time, and the share of the step's
    CPU time (user + sys, all threads: meaningful on a loaded machine too)."""
    rows = res.get("profile")
    if not rows:
        return
    total_wall, total_cpu = sum(r[2] for r in rows), sum(r[3] for r in rows)
    by_name = {}
    for phase, name, wall, cpu in rows:
        entry = by_name.setdefault(name, {"forward": 0.0, "backward": 0.0, "solver": 0.0, "cpu": 0.0})
        entry[phase] += wall
        entry["cpu"] += cpu
    print(f"    profile of one step: {total_wall:.2f} s wall, {total_cpu:.2f} s CPU in functions and the solver")
    print(f"    {'function':24s} {'forward s':>9s} {'backward s':>10s} {'CPU s':>7s} {'CPU share':>9s}")
    for name, t in sorted(by_name.items(), key=lambda kv: -kv[1]["cpu"]):
        if t["cpu"] < 0.002 * total_cpu and t["forward"] + t["backward"] < 0.002 * total_wall:
            continue
        print(f"    {name:24s} {t['forward'] + t['solver']:9.3f} {t['backward']:10.3f} {t['cpu']:7.2f} "
              f"{100 * t['cpu'] / max(total_cpu, 1e-9):8.1f}%")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=sorted(ROWS), choices=sorted(ROWS))
    p.add_argument("--nnabla", action="store_true", help="also run xumx with nnabla's own functions")
    p.add_argument("--no-fast", action="store_true", help="skip xumx with the fast kernels")
    p.add_argument("--torch-python", default=os.environ.get("XUMX_TORCH_PYTHON"),
                   help="a Python with torch for the PyTorch reference (default: this one if it has torch)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch's intra-op threads (default: 0, torch's own choice)")
    p.add_argument("--cpus", type=int, nargs="+", default=None,
                   help="pin every run to these CPUs (e.g. --cpus 0: one core each, which also sizes "
                        "torch's, OpenBLAS's and pocketfft's threads; steadier on a shared machine)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run (default: 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default: 2)")
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per implementation (default: 1)")
    p.add_argument("--profile", action="store_true", help="time every nnabla function of the last step")
    p.add_argument("--xumx-root", default=ROOT, help="the xumx checkout to measure (default: this one)")
    p.add_argument("--before", default=None, metavar="DIR",
                   help="also measure this checkout (with the same dropout where it has the flag), alternating with the others")
    p.add_argument("--with-no-dropout", action="store_true",
                   help="also measure this checkout with dropout 0 (what dropout costs)")
    p.add_argument("--mem-limit-gb", type=float, default=20.0, help="kill a run above this resident size")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per run (default: 3600)")
    # one configuration (children, or --rows 0 style custom runs)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kernels", default="fast", choices=["fast", "nnabla"], help=argparse.SUPPRESS)
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--nb-layers", type=int, default=3)
    p.add_argument("--nfft", type=int, default=None)
    p.add_argument("--nhop", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-dur", type=float, default=None)
    p.add_argument("--mcoef", type=float, default=10.0)
    p.add_argument("--dropout", type=float, default=None,
                   help="LSTM dropout between layers of every implementation (default: the "
                        "recipe's 0.4; 0: none)")
    args = p.parse_args(argv)
    if args.dropout is None and not args.child:
        args.dropout = 0.4
    if args.child:  # unset sizes: the paper's recipe
        for name, value in ROWS[3].items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        return child_xumx(args)

    if os.path.realpath(args.xumx_root) != os.path.realpath(ROOT) and not args.nnabla:
        impls = ["xumx@" + os.path.basename(os.path.normpath(args.xumx_root))]  # that checkout as it is
    else:
        impls = ([] if args.no_fast else ["xumx-fast"]) + (["xumx-nnabla"] if args.nnabla else [])
        impls += (["xumx-nodrop"] if args.dropout and args.with_no_dropout else []) \
            + (["xumx@before"] if args.before else [])
    args.torch_python = torch_python(args)
    if args.torch_python:
        impls.append("torch")
    else:
        print("PyTorch: not importable here and no --torch-python given: its column is skipped")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
          + (f" (runs pinned to {args.cpus})" if args.cpus else "")
          + f", load average {load()}, xumx from {args.xumx_root}")
    summary = {}
    for row in args.rows:
        cfg = dict(ROWS[row], nb_layers=args.nb_layers)
        for name in ("hidden_size", "nfft", "nhop", "batch_size", "seq_dur"):
            if getattr(args, name) is not None:
                cfg[name] = getattr(args, name)
        print(f"\nrow {row}: hidden {cfg['hidden_size']}, {cfg['nb_layers']} layers, nfft {cfg['nfft']} / "
              f"hop {cfg['nhop']}, batch {cfg['batch_size']} x {cfg['seq_dur']:g} s")
        results = {impl: [] for impl in impls}
        for rep in range(args.repeats):
            for impl in impls:
                argv, env = command(impl, cfg, args)
                before = load()
                res = spawn(argv, env, args.timeout, args.mem_limit_gb * 1024, args.cpus)
                results[impl].append(res)
                print(f"  {impl:12s} run {rep + 1}: {describe(res)}   [load {before} -> {load()}]", flush=True)
                if args.profile and impl != "torch":
                    print_profile(res)
        summary[row] = {}
        for impl, runs in results.items():
            ok = [r for r in runs if "error" not in r]
            if ok:
                summary[row][impl] = (statistics.median(statistics.median(r["s_per_step"]) for r in ok),
                                      max(r["vmhwm_mb"] for r in ok) / 1024)
            else:
                summary[row][impl] = (runs[-1]["error"], None)

    print("\nsummary (median s/step, peak GB):")
    print(f"{'row':>4s} " + " ".join(f"{impl:>22s}" for impl in impls) + "   xumx-fast / torch")
    for row, res in summary.items():
        cells = []
        for impl in impls:
            t, gb = res[impl]
            cells.append(f"{t:>12.2f} s {gb:5.2f} GB" if gb is not None else f"{str(t)[:22]:>22s}")
        ratio = ""
        fast, ref = res.get("xumx-fast", (None, None)), res.get("torch", (None, None))
        if fast[1] is not None and ref[1] is not None:
            ratio = f"   {fast[0] / ref[0]:.2f} (goal <= {GOAL_RATIO})"
        print(f"{row:>4d} " + " ".join(cells) + ratio)
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    sys.exit(main())
