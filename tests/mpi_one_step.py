"""One data-parallel SGD step, run by tests/test_distributed.py twice: under ``mpirun -n 2``
(each rank takes every second row of a fixed batch) and as one plain process (the whole batch).

The communicator is the one training uses (:func:`xumx.training.distributed.make_communicator`)
and is called as :class:`xumx.training.trainer.Trainer` calls it: ``all_reduce_grads`` on the
trainable parameters after backward, ``all_reduce_data`` on the batch-norm running statistics
after the update, ``bcast`` of the input statistics from rank 0. The solver is plain SGD: Adam's
update hardly changes when every gradient is scaled (its first step is about lr * sign(g)), so
it would hide gradients summed where they should be averaged. Each process saves
OUT/<rank or 'single'>.npz: the parameters after the step, the running mean, the statistics.
"""
import sys

import numpy as np
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S

sys.path.insert(0, __file__.rsplit("/", 1)[0].rsplit("/", 1)[0])
from xumx.training.distributed import make_communicator  # noqa: E402

BATCH, FEATURES = 4, 6


def main(out):
    comm, ctx = make_communicator("cpu", "0")
    rng = np.random.RandomState(7)
    x_all = rng.standard_normal((BATCH, FEATURES)).astype(np.float32) + 3.0
    t_all = rng.standard_normal((BATCH, 2)).astype(np.float32)
    x_np, t_np = x_all[comm.rank::comm.n_procs], t_all[comm.rank::comm.n_procs]
    with nn.context_scope(ctx):
        x, t = nn.Variable(x_np.shape), nn.Variable(t_np.shape)
        x.d, t.d = x_np, t_np
        with nn.parameter_scope("fit"):
            y = PF.affine(x, 2, rng=np.random.RandomState(0))
        loss = F.mean(F.squared_error(y, t))   # mean over this rank's rows
        with nn.parameter_scope("norm"):      # running statistics, as the model's batch norms
            h = PF.batch_normalization(F.reshape(x, x.shape + (1,)), axes=[1], batch_stat=True)
        trainable = nn.get_parameters(grad_only=True)
        with nn.parameter_scope("fit"):
            params = list(nn.get_parameters(grad_only=True).values())
        buffers = [v for k, v in nn.get_parameters(grad_only=False).items() if k not in trainable]
        solver = S.Sgd(0.5)
        solver.set_parameters(nn.get_parameters(grad_only=True))
        solver.zero_grad()
        F.sink(loss, h).forward()
        loss.backward()
        comm.all_reduce_grads(params)
        solver.update()
        comm.all_reduce_data(buffers)
    stats = (np.arange(FEATURES, dtype=np.float32) + 1, np.full(FEATURES, 2.5, np.float32))
    if comm.rank != 0:
        stats = (np.zeros(FEATURES, np.float32), np.zeros(FEATURES, np.float32))
    stats = comm.bcast(stats)
    result = {k: np.array(v.d) for k, v in nn.get_parameters(grad_only=False).items()}
    result.update({"stats/mean": stats[0], "stats/scale": stats[1]})
    name = "single" if comm.n_procs == 1 else f"rank{comm.rank}"
    np.savez(f"{out}/{name}.npz", **result)


if __name__ == "__main__":
    main(sys.argv[1])
