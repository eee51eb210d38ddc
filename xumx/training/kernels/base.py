"""What every kernel shares: an nnabla ``PythonFunction`` computed on numpy views of its
variables, and the BLAS / FFT threading."""
import contextlib
import os

import numpy as np
from nnabla.function import PythonFunction

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


def put_grad(v, value: np.ndarray, accum: bool):
    """Set (or, with ``accum``, add to) a variable's gradient."""
    g = v.grad.data
    if accum:
        g += value.reshape(g.shape)
    else:
        g[...] = value.reshape(g.shape)


def single_thread_blas(small: bool = True):
    """Limit BLAS to one thread while ``small``: tiny products in a time loop lose more to
    thread hand-offs than they gain (needs threadpoolctl, a dependency of xumx)."""
    if not small:
        return contextlib.nullcontext()
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER = None
