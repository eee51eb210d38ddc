"""Function-style separation API kept for existing callers (Spleeter Web, the published code).

Separators come from :func:`xumx.separator.load_separator` (the loader of every command) and
are cached per model file (path, size, modification time and mode), so parameters are read
once per model file and reused across calls and chunks. Failures raise the ValueError (or
RuntimeError) subclasses of :mod:`xumx.errors`, one line each.
"""
import os
import threading
from typing import Dict, Optional

import numpy as np

from .config import SeparationConfig
from .engine import device_of
from .errors import InputError
from .separator import Separator, load_separator

#: The separation settings a call leaves out (SeparationConfig's defaults).
DEFAULT = SeparationConfig()
_CACHE: Dict[tuple, Separator] = {}
_LOCK = threading.Lock()


def get_separator(model: str, separation: SeparationConfig = SeparationConfig(),
                  umx: bool = False, context=None) -> Separator:
    """A Separator for ``model`` with the given settings, loading the file only once."""
    if not model:
        raise InputError("no model file given")
    path = os.path.abspath(os.path.expanduser(str(model)))
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # let the loader report the missing file
    # the device follows the caller's nnabla default context when there is one (xumx.engine)
    device = device_of(context)
    key = (path, stamp, bool(umx), separation.targets if umx else None, device)
    with _LOCK:
        sep = _CACHE.get(key)
        if sep is None:
            sep = load_separator(path, SeparationConfig(targets=separation.targets), umx,
                                 context=device.kind, device_id=device.index)
            for k in [k for k in _CACHE if k[0] == path]:
                del _CACHE[k]   # the file changed: drop what was loaded from it before
            _CACHE[key] = sep
    return sep.with_separation(separation)


def separate_args_dict(audio: np.ndarray, args_dict: dict) -> Dict[str, np.ndarray]:
    """Separate ``audio`` (T, 2) with settings from a dict.

    Keys (as Spleeter Web 3.12+ passes them): model, umx_infer, targets (a list of names, or
    one name as a string), softmask, alpha, residual_model, niter; and ``rate``, the audio's
    sample rate in Hz (default: the model's, 44100 for x-umx.h5; another rate is resampled to
    it and back). ``audio`` is float around [-1, 1] or integer samples (int16 / 32768, int32 /
    2**31, uint8 centred). Returns {target: (T, 2) float32} at ``rate`` for exactly the
    targets asked for, plus 'residual' with residual_model.
    """
    d = dict(args_dict)
    if "model" not in d:
        raise InputError("args_dict needs a 'model' key: the path of the X-UMX .h5 file")
    targets = d.get("targets")
    separation = SeparationConfig(targets=targets or None,
                                  niter=int(d.get("niter", DEFAULT.niter)),
                                  softmask=bool(d.get("softmask", DEFAULT.softmask)),
                                  alpha=float(d.get("alpha", DEFAULT.alpha)),
                                  residual_model=bool(d.get("residual_model", DEFAULT.residual_model)))
    sep = get_separator(d["model"], separation, umx=bool(d.get("umx_infer", False)))
    return sep.separate(audio, d.get("rate"))


def separate(audio: np.ndarray, args=None, model_path: str = "models/x-umx.h5",
             niter: int = DEFAULT.niter, softmask: bool = DEFAULT.softmask,
             alpha: float = DEFAULT.alpha, residual_model: bool = DEFAULT.residual_model,
             rate: Optional[int] = None, **kwargs) -> Dict[str, np.ndarray]:
    """Separate ``audio`` (T, 2) at ``rate`` Hz (default: the model's, 44100 for x-umx.h5),
    as :func:`separate_args_dict` does.

    Two call forms:
      * ``separate(audio, args)`` with an argparse Namespace carrying model, umx_infer,
        targets, softmask, alpha, residual_model and niter (the published code), and
        optionally rate;
      * ``separate(audio, model_path=..., niter=1, softmask=False, alpha=1.0,
        residual_model=False, rate=None)`` (Spleeter Web up to 3.11).
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
