"""Seconds per training iteration (forward, backward, gradient all-reduce, Adam update) of X-UMX
on random audio; run it alone or under ``mpirun -n N`` (then each process steps on its own batch
and the printed throughput counts all processes).

    python scripts/time_train_step.py                     # default model, batch 16 x 6 s
    python scripts/time_train_step.py --hidden-size 64 --nfft 1024 --nhop 512 --nb-layers 1 \
        --batch-size 4 --seq-dur 2 --steps 5
    mpirun -n 2 python scripts/time_train_step.py ...     # data-parallel throughput
"""
import argparse
import time

import numpy as np


def main(argv=None):
    import nnabla as nn
    import nnabla.solvers as S
    from xumx.config import ModelConfig
    from xumx.distributed import make_communicator
    from xumx.model import OpenUnmixCrossNet
    from xumx.training import build_loss_graph
    p = argparse.ArgumentParser()
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--nb-layers", type=int, default=3)
    p.add_argument("--nfft", type=int, default=4096)
    p.add_argument("--nhop", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-dur", type=float, default=6.0)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--context", default="cpu")
    a = p.parse_args(argv)
    comm, ctx = make_communicator(a.context)
    cfg = ModelConfig(hidden_size=a.hidden_size, nb_layers=a.nb_layers, nfft=a.nfft, nhop=a.nhop)
    rng = np.random.RandomState(comm.rank)
    with nn.context_scope(ctx):
        model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(0))
        length = int(a.seq_dur * cfg.sample_rate)
        g = build_loss_graph(model, a.batch_size, length, 10.0, test=False)
        solver = S.Adam(0.001)
        params = model.get_parameters(grad_only=True)
        solver.set_parameters(params)
        times = []
        for step in range(a.steps + 1):   # the first step (allocation) is not counted
            y = (0.1 * rng.randn(a.batch_size, len(cfg.sources) * cfg.nb_channels, length)).astype(np.float32)
            x = y.reshape(a.batch_size, len(cfg.sources), cfg.nb_channels, length).sum(1)
            comm.barrier()
            t0 = time.perf_counter()
            g.feed(x, y)
            solver.zero_grad()
            g.loss.forward(clear_no_need_grad=True)
            g.loss.backward(clear_buffer=True)
            comm.all_reduce_grads(list(params.values()))
            solver.weight_decay(1e-5)
            solver.update()
            comm.barrier()
            if step:
                times.append(time.perf_counter() - t0)
    if comm.rank == 0:
        t = float(np.mean(times))
        print(f"{comm.n_procs} process(es), batch {a.batch_size} x {a.seq_dur} s per process, "
              f"hidden {a.hidden_size}, layers {a.nb_layers}, nfft {a.nfft}, hop {a.nhop}: "
              f"{t:.2f} s/iteration, {comm.n_procs * a.batch_size / t:.2f} excerpts/s")


if __name__ == "__main__":
    main()
