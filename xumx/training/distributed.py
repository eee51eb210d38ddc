"""Data-parallel training across processes started by ``mpirun``.

- Not under an MPI launcher: one process, nothing to communicate.
- Under ``mpirun -n N`` with ``--context cudnn``: nnabla's NCCL ``MultiProcessDataParallelCommunicator``
  (each process on GPU ``device_id + local_rank``).
- Under ``mpirun -n N`` on the CPU: an mpi4py all-reduce of the gradients.

Each rank limits its CPU threads to its share of the cores (:mod:`xumx.threads`; ``XUMX_THREADS``
overrides it). Gradients are **averaged** over the ranks every step, so parameters stay identical everywhere.
If the launcher says N > 1 processes but the communicator cannot start, that is an error
(:class:`DistributedError`): the published code silently trained N identical single-process copies.
The launcher's processes and their mpi4py world are :mod:`xumx.mpi`'s (shared with evaluation and
batch separation, which run without nnabla); this module adds the gradients' reductions.
"""
import os
from typing import List, Mapping, Sequence, Tuple

import numpy as np

from .. import mpi
from ..errors import DistributedError  # noqa: F401  (raised here: tests import it from here)
from ..mpi import LOCAL_RANK_VARS, SIZE_VARS, launcher_world_size, local_rank  # noqa: F401

REFERENCE_BATCH = 16


def scaled_hyperparameters(lr: float, weight_decay: float, n_procs: int) -> Tuple[float, float]:
    """The learning-rate scaling rule of ``xumx.train`` (linear in the number of processes).

    ``--batch-size`` is per process and gradients are averaged, so ``mpirun -n N`` trains with an
    N times larger global batch and N times fewer steps per epoch; the learning rate grows N times
    (linear scaling rule) to keep the progress per epoch, and the weight decay is unchanged (with
    averaged gradients it keeps its weight relative to the loss gradient). With one process the
    flags apply as given. (The published code multiplied both by n_procs * batch_size / 16 with
    summed gradients; at one process and batch 16 the two rules agree.)
    """
    if n_procs < 1:
        raise ValueError(f"n_procs must be >= 1, not {n_procs}")
    return lr * n_procs, weight_decay


class SingleProcess(mpi.SingleProcess):
    """The communicator of a run that was not launched by mpirun."""

    def all_reduce_grads(self, params: Sequence):
        """Replace every parameter's gradient by its mean over the ranks."""

    def all_reduce_data(self, params: Sequence):
        """Replace the values (e.g. batch-norm running statistics) by their mean over the ranks."""


class MpiCpu(mpi.MpiProcesses, SingleProcess):
    """mpi4py all-reduce of gradients (packed into one buffer per step)."""

    def _mean(self, arrays):
        from mpi4py import MPI
        flat = np.concatenate([a.ravel() for a in arrays]).astype(np.float32)
        total = np.empty_like(flat)
        self.comm.Allreduce(flat, total, op=MPI.SUM)
        total /= self.n_procs
        offsets = np.cumsum([0] + [a.size for a in arrays])
        return [total[a:b].reshape(x.shape) for a, b, x in zip(offsets[:-1], offsets[1:], arrays)]

    def all_reduce_grads(self, params: Sequence):
        for p, g in zip(params, self._mean([p.g for p in params])):
            p.g = g

    def all_reduce_data(self, params: Sequence):
        for p, d in zip(params, self._mean([p.d for p in params])):
            p.d = d


class NcclGpu(MpiCpu):
    """nnabla's multi-process data-parallel communicator (NCCL) for gradients; mpi4py-free."""

    def __init__(self, comm, ctx):
        self.nn_comm, self.ctx = comm, ctx
        self.n_procs, self.rank, self.local_rank = comm.size, comm.rank, comm.local_rank

    def all_reduce_grads(self, params: Sequence):
        self.nn_comm.all_reduce([p.grad for p in params], division=True, inplace=False)

    def all_reduce_data(self, params: Sequence):
        self.nn_comm.all_reduce([p.data for p in params], division=True, inplace=False)

    def all_reduce_mean(self, values: Sequence[float]) -> List[float]:
        import nnabla as nn
        v = nn.NdArray.from_numpy_array(np.asarray(values, dtype=np.float32))
        self.nn_comm.all_reduce([v], division=True, inplace=False)
        return [float(x) for x in v.data]

    def bcast(self, obj):
        # objects are broadcast as float arrays of a shape every rank knows (statistics)
        import nnabla as nn
        arrays = [nn.NdArray.from_numpy_array(np.asarray(a, dtype=np.float32)) for a in obj]
        self.nn_comm.bcast(arrays, src=0, inplace=False)
        return tuple(a.data.copy() for a in arrays)

    def barrier(self):
        self.nn_comm.barrier()


def make_communicator(context: str = "cpu", device_id: str = "0",
                      env: Mapping[str, str] = os.environ):
    """(communicator, nnabla extension context) for this process; see the module docstring."""
    # scipy's own BLAS (the LSTM kernel's recurrent products) is loaded first, so that the
    # rank's limit covers it too
    from scipy.linalg import blas  # noqa: F401
    from .backend import extension_context
    from ..threads import apply_rank_threads
    apply_rank_threads(env)
    size = launcher_world_size(env)
    if size <= 1:
        return SingleProcess(), extension_context(context, device_id, "training")
    if context == "cpu":
        return MpiCpu(mpi.world(env).comm, env), extension_context(context, device_id, "training")
    try:
        import nnabla.communicators as C
        local = local_rank(env, 0)
        ctx = extension_context(context, int(device_id) + local, "training")
        comm = C.MultiProcessDataParallelCommunicator(ctx)
        comm.init()
    except Exception as e:
        raise DistributedError(f"started by mpirun for {size} processes but nnabla's multi-process "
                               f"communicator cannot start ({type(e).__name__}: {e}); it needs "
                               f"nnabla-ext-cuda with NCCL/MPI support") from None
    ctx.device_id = str(int(device_id) + comm.local_rank)
    return NcclGpu(comm, ctx), ctx
