"""What every kernel shares: an nnabla ``PythonFunction`` computed on numpy views of its
variables, and the BLAS / FFT threading."""
import contextlib
import os

import numpy as np
from nnabla.function import PythonFunction

from ...threads import single_thread_blas  # noqa: F401 (the kernels' name for it)

#: CPUs this process may use.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fft_workers() -> int:
    """Threads of scipy's pocketfft: every CPU, or the rank's share under an MPI launcher
    (:mod:`xumx.threads`; BLAS has its own pool, sized by OpenBLAS / threadpoolctl)."""
    from ... import threads
    return threads.APPLIED or CPUS


class NumpyFunction(PythonFunction):
    """A ``PythonFunction`` whose forward and backward read and write numpy views.

    Subclasses implement ``setup_impl``, ``forward_impl`` and ``backward_impl``; nnabla calls
    them as for its own functions. Every input's data is needed by the backward unless a
    subclass says otherwise; no output data is.
    """

    @property
    def name(self):
        return type(self).__name__

    @property
    def args(self):
        return {}

    def min_inputs(self):
        return 1

    def min_outputs(self):
        return 1

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True


def data(v) -> np.ndarray:
    """The numpy view of a variable's data (writes go to the variable)."""
    return v.data.data


#: Rows summed in float32 before the float64 total of :func:`column_sums`.
SUM_ROWS = 64


def column_sums(a: np.ndarray, b: np.ndarray = None) -> np.ndarray:
    """The sums over the rows of ``a`` (M, n), or of ``a * b``, as float64 (n,): float32 sums
    of :data:`SUM_ROWS` rows at a time (BLAS, einsum: no float64 copy of the operands), their
    total in float64."""
    total = np.zeros(a.shape[1])
    ones = np.ones(SUM_ROWS, np.float32)
    for i in range(0, a.shape[0], SUM_ROWS):
        rows = a[i:i + SUM_ROWS]
        total += ones[:rows.shape[0]] @ rows if b is None else \
            np.einsum("ij,ij->j", rows, b[i:i + SUM_ROWS])
    return total


def output(v) -> np.ndarray:
    """The numpy view of a variable's data for writing only: its values are undefined (nnabla
    neither zero-fills nor copies it), so the kernel writes every element."""
    return v.data.get_data("w")


def grad_buffer(v, accum: bool) -> np.ndarray:
    """Where a kernel computes an input's gradient, of the input's shape: the gradient array
    itself for writing only (every element to be written) unless ``accum``, else a new array;
    :func:`put_grad` then stores it (nothing left to copy in the first case)."""
    if accum:
        return np.empty(v.shape, np.float32)
    return v.grad.get_data("w")


def put_grad(v, value: np.ndarray, accum: bool):
    """Set (or, with ``accum``, add to) a variable's gradient; nothing to do for the array
    :func:`grad_buffer` gave without ``accum``."""
    if accum:
        g = v.grad.data
        g += value.reshape(g.shape)
        return
    g = v.grad.get_data("w")
    if not (value.size == g.size and np.may_share_memory(value, g)):
        g[...] = value.reshape(g.shape)



#: Work per time step (multiply-adds of the recurrent product, all cells) from which the cells
#: of a recurrence run in parallel threads, each with one BLAS thread (:func:`for_cell_groups`).
PARALLEL_STEP = 1 << 21
_POOL = None   # (pid, ThreadPoolExecutor) of for_groups


def cell_workers() -> int:
    """Threads for independent recurrences: the process's share of the CPUs (see
    :func:`fft_workers`)."""
    return fft_workers()


def parallel_cells_worth(cells: int, work_per_cell: int) -> bool:
    """Whether :func:`for_cell_groups` splits ``cells`` recurrences over threads."""
    return cells > 1 and cell_workers() > 1 and cells * work_per_cell >= PARALLEL_STEP


def for_cell_groups(cells: int, work_per_cell: int, fn):
    """``fn(slice)`` over groups of the cells ``0..cells-1``: one call with every cell, or, when
    :func:`parallel_cells_worth`, one group per worker thread, in parallel (numpy's products and
    elementwise functions release the GIL; the caller limits BLAS to one thread)."""
    for_groups(cells, cell_workers() if parallel_cells_worth(cells, work_per_cell) else 1, fn)


#: Work (multiply-adds of a layer's products, all sources) from which the sources of a
#: layer run on worker threads, each with one BLAS thread (:func:`for_sources`).
PARALLEL_SOURCES = 1 << 20


def source_workers(count: int, work: int) -> int:
    """Threads :func:`for_sources` uses for ``count`` sources: the process's CPUs when there
    are 2 to ``count`` of them and ``work`` reaches :data:`PARALLEL_SOURCES`, else 1 (with
    more CPUs than sources, BLAS's own threads on every product use them better)."""
    workers = cell_workers()
    return workers if 1 < workers <= count and work >= PARALLEL_SOURCES else 1


def for_sources(count: int, work: int, fn):
    """``fn(slice)`` over groups of the sources ``0..count-1`` of a layer: on
    :func:`source_workers` threads, each group's products on one BLAS thread, so its
    elementwise passes (single-threaded in numpy) run in parallel too; or one call here with
    every source (BLAS with its own threads). ``fn`` reads and writes numpy arrays only
    (nnabla's variables are resolved before and stored after) and each source's own."""
    workers = source_workers(count, work)
    with single_thread_blas(workers > 1):
        for_groups(count, workers, fn)


def for_parts(count: int, work: int, fn):
    """``fn(slice, threads)`` over groups of ``count`` independent parts of one function (batch
    items, rows, blocks of frames or samples, each written by one group only): on the kernels'
    threads when the process has 2 CPUs or more and ``work`` (elements touched) reaches
    :data:`PARALLEL_SOURCES`, each group with one BLAS thread and ``threads`` (1) FFT workers,
    so numpy's single-threaded elementwise passes run on every CPU; else one call with every
    part and ``threads`` the FFT's own (:func:`fft_workers`). A result summed over parts must be
    summed in part order after it, so that it does not depend on the grouping."""
    workers = min(cell_workers(), count) if work >= PARALLEL_SOURCES else 1
    threads = fft_workers() if workers <= 1 else 1
    with single_thread_blas(workers > 1):
        for_groups(count, workers, lambda part: fn(part, threads))


def for_groups(count: int, workers: int, fn):
    """``fn(slice)`` over ``workers`` consecutive groups of ``0..count-1`` (at most ``count``),
    each on a thread of the kernels' pool, in parallel; one group is called here."""
    workers = max(1, min(int(workers), count))
    if workers == 1:
        fn(slice(0, count))
        return
    global _POOL
    pool = _POOL
    # a forked child inherits the pool without its threads: it makes its own
    if pool is None or pool[0] != os.getpid() or pool[1]._max_workers < workers:
        from concurrent.futures import ThreadPoolExecutor
        pool = _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=workers,
                                                        thread_name_prefix="xumx-kernels"))
    bounds = [count * i // workers for i in range(workers + 1)]
    futures = [pool[1].submit(fn, slice(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    for f in futures:
        f.result()
