"""Fast CPU kernels inside the NNabla training graph.

nnabla's CPU backend builds its LSTM from per-frame functions, its STFT/ISTFT from dense
convolutions, and runs elementwise functions at about 10-15 ns per element. On a CPU context
the graph builders of :mod:`xumx.training.model`, :mod:`xumx.training.stft` and :mod:`xumx.training.losses` therefore use
these replacements, each an nnabla function (``nnabla.function.PythonFunction``) with its
forward and backward written in numpy (BLAS) and scipy's pocketfft; nnabla still owns the
graph, autodiff, solvers, communicators and checkpoints:

- :mod:`.lstm`: the multi-layer (B)LSTM of every source at once, published parameter layout;
- :mod:`.spectral`: STFT (with magnitude) and masked ISTFT by FFT;
- :mod:`.losses`: the frequency- and time-domain combination losses, each one function;
- :mod:`.layers`: affine + batch normalisation and the elementwise chains around them.

Whether a graph uses them is decided in one place, :func:`enabled`: yes on nnabla's CPU
context, no on GPU contexts (which keep nnabla's cuDNN/CUDA functions), and no when
``XUMX_KERNELS=nnabla`` is set in the environment or inside :func:`forced` ``(False)``
(benchmarks and tests compare both).
"""
import contextlib
import os

#: Environment variable: ``nnabla`` makes every graph use nnabla's own functions.
ENV = "XUMX_KERNELS"
_forced = None


def enabled(ctx=None) -> bool:
    """Whether graphs built now (in ``ctx``, default nnabla's current context) use these kernels."""
    if _forced is not None:
        return _forced
    if os.environ.get(ENV, "").strip().lower() == "nnabla":
        return False
    if ctx is None:
        import nnabla as nn
        ctx = nn.get_current_context()
    return all(b.split(":")[0] == "cpu" for b in ctx.backend)


@contextlib.contextmanager
def forced(on: bool):
    """Graphs built inside use (``on``) or do not use the kernels, whatever the context."""
    global _forced
    before, _forced = _forced, bool(on)
    try:
        yield
    finally:
        _forced = before
