"""Where nnabla is needed, and the one line that says so when it is missing.

nnabla's last release (1.39) has wheels for CPython 3.8-3.10 only, so xumx installs it only
there (setup.py's environment marker). Separation never needs it; training, the NNabla graph
(``backend="nnabla"``) and training on nnabla's GPU contexts do; :func:`extension_context` is
the one place that builds an nnabla context. Each of those calls :func:`require_nnabla`
first: it returns the nnabla module, or raises :class:`NnablaMissing`, whose message is one line
saying what is needed and how to get it. Entry modules print that line and exit with status 1.
"""
import sys

from ..errors import NnablaMissing

#: The CPython versions nnabla 1.39 has wheels for (first, last).
NNABLA_PYTHONS = ((3, 8), (3, 10))

#: How to get an environment with nnabla: the project's own set-up and environment files.
HOW_TO_GET_IT = ("use a Python 3.8-3.10 environment with xumx installed (`make setup` makes one "
                 "in .venv; or `conda env create -f environment-cpu.yml`, environment-gpu.yml for "
                 "CUDA)")


def missing_message(feature: str, error: BaseException = None, version=None) -> str:
    """The one line for ``feature`` (e.g. 'training') when nnabla does not import (``error``)
    on Python ``version`` (default: this one)."""
    here = tuple(version or sys.version_info[:2])
    py = "%d.%d" % here
    if not NNABLA_PYTHONS[0] <= here <= NNABLA_PYTHONS[1]:
        why = f"this is Python {py}, where nnabla has no release"
    elif error is None or (isinstance(error, ModuleNotFoundError) and error.name == "nnabla"):
        why = f"it is not installed in this Python {py}"
    else:  # installed but broken (e.g. built for another numpy): say how
        detail = " ".join(str(error).split())
        why = f"it does not import here ({type(error).__name__}: {detail})"
    first, last = ("%d.%d" % v for v in NNABLA_PYTHONS)
    return (f"{feature} needs nnabla, which runs on CPython {first}-{last} only ({why}): "
            f"{HOW_TO_GET_IT}. Separation on the CPU works without it")


def require_nnabla(feature: str):
    """The ``nnabla`` module, or :class:`NnablaMissing` naming ``feature`` when it cannot be used."""
    try:
        import nnabla
    except ImportError as e:
        raise NnablaMissing(missing_message(feature, e)) from None
    return nnabla


def extension_context(name: str = "cpu", device_id=0, feature: str = "the NNabla graph"):
    """nnabla's extension context ``name`` ('cpu', 'cuda', 'cudnn') on GPU ``device_id``: the one
    place that builds one (training, the reference backend, the communicators). Separation's
    devices are :mod:`xumx.engine`'s, not nnabla contexts.

    Raises NnablaMissing when nnabla, or its CUDA extension for a GPU context, is missing."""
    require_nnabla(feature)
    from nnabla.ext_utils import get_extension_context
    try:
        return get_extension_context(name, device_id=str(device_id))
    except ImportError as e:
        raise NnablaMissing(f"--context {name} needs nnabla's CUDA extension (pip install "
                            f"nnabla-ext-cuda120, or the 'gpu' extra), which does not import "
                            f"here ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
