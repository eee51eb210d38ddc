"""The CPU threads of each process when an MPI launcher starts several on one machine.

Every library sizes its thread pool to all the cores it sees (OpenBLAS, OpenMP, scipy's FFT
workers, onnxruntime), so ``mpirun -n N`` on one machine would run N times as many threads as
cores, and threads that share a core stall each other at every synchronisation. Under a launcher
each rank therefore takes its share of the cores (:func:`thread_share`): the physical cores this
process may use, split evenly over the ranks on this machine, the first ranks taking one more
when they do not divide, at least one each. A launcher that binds each rank to its own cores
(OpenMPI's default for two ranks) leaves each fewer cores to split, and the share only shrinks
with it.

``XUMX_THREADS=N`` in the environment overrides the share (``mpirun -x XUMX_THREADS=4 ...``),
also for one process. :func:`rank_threads` says what applies; :func:`apply_rank_threads` sets
BLAS and OpenMP pools (threadpoolctl) and scipy's FFT workers in the training kernels;
:func:`xumx.engine.default_threads` (onnxruntime) follows :func:`rank_threads` too.
"""
import contextlib
import os
from typing import Mapping, Optional

from .errors import ConfigError
from .mpi import LOCAL_RANK_VARS, env_number

#: Environment variable: the threads of each process (overrides the share).
ENV = "XUMX_THREADS"
#: Environment variables through which MPI launchers announce the ranks on this machine.
LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE",
                   "PMI_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def physical_cores() -> int:
    """Physical cores this process may use (Linux topology; elsewhere the logical count)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f, open(base + "core_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def thread_share(cores: int, local_size: int, local_rank: int) -> int:
    """Threads of rank ``local_rank`` of ``local_size`` ranks sharing ``cores`` cores.

    >>> [thread_share(16, 3, r) for r in range(3)]
    [6, 5, 5]
    >>> thread_share(2, 4, 3)
    1
    """
    if local_size < 1 or not 0 <= local_rank < local_size:
        raise ValueError(f"local rank {local_rank} of {local_size} ranks")
    base, extra = divmod(max(1, int(cores)), local_size)
    return max(1, base + (local_rank < extra))


def rank_threads(env: Mapping[str, str] = os.environ, cores: Optional[int] = None) -> Optional[int]:
    """The threads this process should use: ``XUMX_THREADS`` when set (a positive whole number,
    else ConfigError), its share of ``cores`` (default: the physical cores it may use) when a
    launcher announces several ranks on this machine, otherwise None (the libraries' own
    choice)."""
    given = env.get(ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ConfigError(f"{ENV} must be a whole number of threads >= 1, not {given!r}")
        return int(given)
    size = env_number(env, LOCAL_SIZE_VARS)
    if not size or size < 2:
        return None
    rank = env_number(env, LOCAL_RANK_VARS) or 0
    if cores is None:
        cores = physical_cores()
    return thread_share(cores, size, min(rank, size - 1))


def apply_rank_threads(env: Mapping[str, str] = os.environ) -> Optional[int]:
    """Limit this process's BLAS and OpenMP pools and the training kernels' FFT workers to
    :func:`rank_threads`; returns it (None: nothing changed)."""
    n = rank_threads(env)
    if n is None:
        return None
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)   # kept for the life of the process
    global APPLIED
    APPLIED = n
    return n


#: The threads :func:`apply_rank_threads` set in this process (None: none set).
APPLIED: Optional[int] = None


def single_thread_blas(small: bool = True):
    """A context in which BLAS runs on one thread while ``small``: small products (in a time
    loop, or in blocks) lose more to thread hand-offs than they gain. The limit is the
    process's while it lasts (threadpoolctl), as BLAS's thread count is."""
    if not small:
        return contextlib.nullcontext()
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER = None
