"""The function forms that existing callers use (Spleeter Web, the published code), as thin
calls of :class:`xumx.Separator` (new code: use it directly).

Separators are cached per model file (its path, size and modification time), settings and
device, so a file is read once and reused across calls. The whole song may be passed in one
call: it is separated in cross-faded chunks, in bounded memory, and the stems have its length.
Failures raise the ValueError (or RuntimeError) subclasses of :mod:`xumx.errors`, one line each.
"""
import os
import sys
import threading
from typing import Dict, Optional

import numpy as np

from .config import ChunkConfig, SeparationConfig
from .errors import InputError
from .separator import Separator

#: The separation settings a call leaves out (SeparationConfig's defaults).
DEFAULT = SeparationConfig()
_CACHE: Dict[tuple, Separator] = {}
_LOCK = threading.Lock()


def legacy_device(args_dict: dict) -> str:
    """The device a function-form call asks for: ``args_dict['device']`` ("cpu", "cuda",
    "cuda:1") or Spleeter Web's ``context`` ("cpu" / "cudnn", with ``device_id``); without
    either, the GPU when the caller set nnabla's default context to one (what callers of the
    published code did before this package took a device), else the CPU."""
    if args_dict.get("device") is not None:
        return str(args_dict["device"])
    context = args_dict.get("context")
    if context is None:
        nn = sys.modules.get("nnabla")   # only what the caller imported: never imported here
        current = getattr(nn, "get_current_context", None) if nn is not None else None
        ctx = current() if current is not None else None
        names = {str(b).split(":")[0] for b in getattr(ctx, "backend", None) or ()}
        if not names & {"cuda", "cudnn"}:
            return "cpu"
        context, args_dict = "cudnn", dict(args_dict, device_id=getattr(ctx, "device_id", 0))
    context = str(context)
    if context == "cpu":
        return "cpu"
    index = args_dict.get("device_id")
    return context if index is None else f"{context}:{index}"


def get_separator(model: str, separation: SeparationConfig = SeparationConfig(),
                  umx: bool = False, device: str = "cpu",
                  chunking: ChunkConfig = ChunkConfig()) -> Separator:
    """A :class:`~xumx.Separator` for the model file ``model`` with these settings on
    ``device``, loading the file only once (cached until the file changes)."""
    if not model:
        raise InputError("no model file given")
    path = os.path.abspath(os.path.expanduser(str(model)))
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # let the loader report the missing file
    from .separator import needed_sources
    needed = needed_sources(separation) if umx else None
    key = (path, stamp, bool(umx), needed, str(device), separation.precision)
    with _LOCK:
        sep = _CACHE.get(key)
        if sep is None:
            sep = Separator.load(path, device, umx=umx, targets=needed,
                                 precision=separation.precision)
            for k in [k for k in _CACHE if k[0] == path]:
                del _CACHE[k]   # the file changed: drop what was loaded from it before
            _CACHE[key] = sep
    return Separator(sep.net, sep.model, separation, chunking)


def separate_args_dict(audio: np.ndarray, args_dict: dict) -> Dict[str, np.ndarray]:
    """Separate ``audio`` (the whole song, or a piece of it) with settings from a dict.

    Keys (as Spleeter Web passes them): model, umx_infer, targets (a list of names, or one
    name as a string), softmask, alpha, residual_model, niter; and optionally ``rate`` (the
    audio's sample rate in Hz; default: the model's, 44100 for x-umx.h5; another rate is
    resampled to it and back), ``context`` ("cpu" or "cudnn", Spleeter Web's setting) with
    ``device_id``, or ``device`` ("cpu", "cuda", "cuda:1"), and ``chunk_dur``/``overlap``
    (seconds; default 30 and 1), and ``precision`` ("float32", the default, or "int8": the
    network's int8 graph, :class:`~xumx.config.SeparationConfig`). ``audio`` is (T, 2),
    (T, 1) or (T,), float around [-1, 1] or integer samples. Returns {target: float32 array of the input's shape} at ``rate`` for
    exactly the targets asked for, plus 'residual' with residual_model. A GPU that cannot be
    used raises EngineError.
    """
    d = dict(args_dict)
    if "model" not in d:
        raise InputError("args_dict needs a 'model' key: the path of the X-UMX .h5 file")
    separation = SeparationConfig(targets=d.get("targets") or None,
                                  niter=int(d.get("niter", DEFAULT.niter)),
                                  softmask=bool(d.get("softmask", DEFAULT.softmask)),
                                  alpha=float(d.get("alpha", DEFAULT.alpha)),
                                  residual_model=bool(d.get("residual_model", DEFAULT.residual_model)),
                                  precision=str(d.get("precision", DEFAULT.precision)))
    chunking = ChunkConfig(**{k: float(d[k]) for k in ("chunk_dur", "overlap") if k in d})
    sep = get_separator(d["model"], separation, umx=bool(d.get("umx_infer", False)),
                        device=legacy_device(d), chunking=chunking)
    return sep.separate(audio, d.get("rate"))


def separate(audio: np.ndarray, args=None, model_path: str = "models/x-umx.h5",
             niter: int = DEFAULT.niter, softmask: bool = DEFAULT.softmask,
             alpha: float = DEFAULT.alpha, residual_model: bool = DEFAULT.residual_model,
             rate: Optional[int] = None, **kwargs) -> Dict[str, np.ndarray]:
    """Separate ``audio`` (T, 2) at ``rate`` Hz (default: the model's), as
    :func:`separate_args_dict` does.

    Two call forms:
      * ``separate(audio, args)`` with an argparse Namespace carrying model, umx_infer,
        targets, softmask, alpha, residual_model and niter (the published code), and
        optionally rate;
      * ``separate(audio, model_path=..., niter=1, softmask=False, alpha=1.0,
        residual_model=False, rate=None)`` (Spleeter Web up to 3.11; ``model_path``'s default
        is that of the code it replaces).
    """
    if args is not None and not isinstance(args, (str, os.PathLike)):
        keys = ("model", "umx_infer", "targets", "softmask", "alpha", "residual_model", "niter",
                "rate")
        d = {k: getattr(args, k) for k in keys if hasattr(args, k)}
        return separate_args_dict(audio, d if rate is None else dict(d, rate=rate))
    if args is not None:
        model_path = args
    if kwargs:
        raise TypeError(f"separate() got unexpected arguments {sorted(kwargs)}")
    return separate_args_dict(audio, {"model": model_path, "niter": niter, "softmask": softmask,
                                      "alpha": alpha, "residual_model": residual_model,
                                      "rate": rate})
