"""The processes an MPI launcher (``mpirun -n N``) started, without nnabla: what training,
evaluation and batch separation share.

- Not under a launcher (or ``-n 1``): :class:`SingleProcess`, nothing to communicate and mpi4py
  never imported.
- Under ``mpirun -n N``, N > 1: :class:`MpiProcesses` over mpi4py's ``COMM_WORLD``. If it cannot
  start (mpi4py missing, or linked to another MPI than the launcher's) that is a
  :class:`~xumx.errors.DistributedError`, not N single-process runs doing the same work.

A rank that leaves a command with an error or an interruption while the others may still be
working or waiting for it ends the whole job (:func:`abandon`, called by :func:`xumx.cli.run`
after the rank's one line): MPI gives a rank no way to learn that another one left, and
Open MPI's ``mpirun`` waits for ever for a rank that finalized MPI and exited. A rank that
exits without finalizing is taken as a crash: the launcher sends the other ranks SIGTERM (their
clean-up runs, as after a Ctrl-C) and exits with the status of the rank that left first.
(``MPI_Abort`` ends the job too, but Open MPI then drops the rank's last line.)
"""
import os
from typing import Callable, List, Mapping, Optional, Sequence, TypeVar

from .errors import DistributedError

T = TypeVar("T")

#: Environment variables through which MPI launchers announce the world size, the rank and the
#: rank on this machine (Open MPI, MPICH/Hydra, PMIx, MVAPICH, Slurm).
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                   "PMI_LOCAL_RANK", "SLURM_LOCALID")


def env_number(env: Mapping[str, str], names: Sequence[str]) -> Optional[int]:
    for name in names:
        if env.get(name, "").strip().isdigit():
            return int(env[name])
    return None


def launcher_world_size(env: Mapping[str, str] = os.environ) -> int:
    """The number of processes an MPI launcher started (1 when not launched by one)."""
    found = env_number(env, SIZE_VARS)
    return 1 if found is None else found


def launcher_rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's rank as the launcher announced it (0 when not launched by one)."""
    return env_number(env, RANK_VARS) or 0


def local_rank(env: Mapping[str, str], rank: int) -> int:
    """This process's rank among those on its machine (``rank`` when no launcher says)."""
    found = env_number(env, LOCAL_RANK_VARS)
    return rank if found is None else found


class SingleProcess:
    """The processes of a run that was not launched by mpirun: one, rank 0."""
    n_procs, rank, local_rank = 1, 0, 0

    def all_reduce_mean(self, values: Sequence[float]) -> List[float]:
        """The mean over the ranks of each value (every rank gets it)."""
        return [float(v) for v in values]

    def bcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        return obj

    def allgather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def barrier(self):
        """Wait until every rank is here."""

    def share(self, items: Sequence[T]) -> List[T]:
        """This rank's part of ``items`` (the same sequence on every rank): every
        ``n_procs``-th from its rank, so that each item is taken by exactly one rank and
        neighbouring items (often of similar length) go to different ranks."""
        return list(items[self.rank::self.n_procs])

    def on_rank0(self, fn: Callable[[], T]) -> T:
        """``fn()`` run by rank 0 only, its result on every rank (picklable)."""
        return self.bcast(fn() if self.rank == 0 else None)

    def rank0_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank, rank 0's before the others' (a download to the shared cache
        done once, the others find it there)."""
        if self.rank == 0:
            result = fn()
            self.barrier()
            return result
        self.barrier()
        return fn()


class MpiProcesses(SingleProcess):
    """The ranks of mpi4py's ``COMM_WORLD`` (``comm``)."""

    def __init__(self, comm, env: Mapping[str, str] = os.environ):
        self.comm = comm
        self.n_procs, self.rank = comm.Get_size(), comm.Get_rank()
        self.local_rank = local_rank(env, self.rank)

    def all_reduce_mean(self, values: Sequence[float]) -> List[float]:
        import numpy as np
        from mpi4py import MPI
        arr = np.asarray(values, dtype=np.float64)
        out = np.empty_like(arr)
        self.comm.Allreduce(arr, out, op=MPI.SUM)
        return list(out / self.n_procs)

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()


_WORLD: List[SingleProcess] = []


def world(env: Mapping[str, str] = os.environ) -> SingleProcess:
    """The processes of this run (see the module docstring); started once per process."""
    if _WORLD:
        return _WORLD[0]
    size = launcher_world_size(env)
    if size <= 1:
        return SingleProcess()
    try:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    except Exception as e:
        raise DistributedError(f"started by mpirun for {size} processes but mpi4py cannot start "
                               f"({type(e).__name__}: {e}); install the 'mpi' extra") from None
    if comm.Get_size() != size:
        raise DistributedError(f"the launcher announced {size} processes but MPI sees "
                               f"{comm.Get_size()} (mpi4py linked to another MPI than mpirun?)")
    _WORLD.append(MpiProcesses(comm, env))
    return _WORLD[0]


def abandon(status: int) -> None:
    """This rank leaves with ``status`` (non-zero) before the end of the work: it exits at once,
    without MPI's finalization, and so the launcher ends the job's other ranks (see the module
    docstring). Its clean-up has run (the command's exception unwound first) and its output is
    flushed; the launcher forwards its last line. Nothing when no world of several ranks was
    started in this process."""
    if _WORLD and _WORLD[0].n_procs > 1:
        import sys
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def rank_tag(env: Mapping[str, str] = os.environ) -> str:
    """" (rank 1 of 2)" in a run of several ranks, else "": what a command's lines carry so that
    the lines of ranks are told apart."""
    size = launcher_world_size(env)
    return f" (rank {launcher_rank(env)} of {size})" if size > 1 else ""
