"""Reading and writing parameter files in nnabla's HDF5 layout, plus the JSON sidecar.

nnabla's format: one dataset per parameter at the path of its name, with the attributes
``need_grad`` and ``index`` (creation order). Files are read with h5py only (nothing is ever
unpickled), and they come from strangers: :class:`xumx.h5safe.H5File` walks the metadata first
and refuses links, external storage, virtual datasets and non-numeric data; the configuration is
inferred from a few shapes, every declared shape is compared with
:func:`xumx.params.parameter_spec`, and a model beyond :func:`max_values` is refused, all before
any value is read (docs/weights-files.md). What shapes cannot tell (hop size, sample rate) is
read from ``<file>.json`` beside the weights, written by training; the published defaults apply
when it is absent.
"""
import contextlib
import json
import os
import re
import stat
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .config import (DEFAULT_NHOP, DEFAULT_NFFT, DEFAULT_SAMPLE_RATE, DEFAULT_SOURCES,
                     SAMPLE_RATES, ModelConfig)
from .files import os_reason, write_bytes, write_text
from .errors import XumxError
from .h5safe import H5File, WeightsError, show
from .params import parameter_spec

__all__ = ["WeightsError", "read_parameters", "load_xumx", "cannot_load", "save_model",
           "write_h5", "writing_h5", "infer_config", "check_arrays", "max_values",
           "sidecar_path", "stated_rate"]

#: Parameters old nnabla versions saved for their Python STFT/ISTFT; ignored on load.
_LEGACY_KEYS = {"conv_r", "conv_i", "conv_cos", "conv_sin"}
#: Largest model loaded, as a multiple of the published one (``$XUMX_MAX_VALUES`` overrides).
MAX_MODEL_FACTOR = 4
#: Largest sidecar read (bytes).
MAX_SIDECAR = 1 << 20


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def spec_values(cfg: ModelConfig) -> int:
    """Number of values of the model ``cfg`` (Python integers: no overflow)."""
    total = 0
    for _, shape, _ in parameter_spec(cfg):
        n = 1
        for d in shape:
            n *= int(d)
        total += n
    return total


def max_values() -> int:
    """The most values a loaded model may have: ``$XUMX_MAX_VALUES`` if set, else
    :data:`MAX_MODEL_FACTOR` times the published model (35.6 M values, so 142 M: 570 MB of
    float32)."""
    env = os.environ.get("XUMX_MAX_VALUES", "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise WeightsError(f"XUMX_MAX_VALUES={env!r} is not a number") from None
    return MAX_MODEL_FACTOR * spec_values(ModelConfig())


def check_total(cfg: ModelConfig, what: str):
    total, limit = spec_values(cfg), max_values()
    if total > limit:
        raise WeightsError(f"{what} describe a model of {total:,} values, more than the "
                           f"{limit:,} loaded (XUMX_MAX_VALUES; see docs/weights-files.md)")


def _check_sizes(entries):
    """Refuse any single declared dataset beyond the model limit (before inferring anything)."""
    limit = max_values()
    for name, entry in entries.items():
        if entry.size > limit:
            raise WeightsError(f"parameter '{show(name)}' declares shape {entry.shape} "
                               f"({entry.size:,} values), more than the {limit:,} of the largest "
                               f"model loaded (XUMX_MAX_VALUES; see docs/weights-files.md)")


def check_declared(cfg: ModelConfig, entries, prefix: str = ""):
    """Every parameter of ``cfg`` declared in ``entries`` (``prefix`` + name) with its shape."""
    for name, shape, _ in parameter_spec(cfg):
        entry = entries.get(prefix + name)
        if entry is None:
            raise WeightsError(f"missing parameter '{name}' (expected shape {shape})")
        if entry.shape != shape:
            raise WeightsError(f"parameter '{show(name)}' has shape {entry.shape}, expected {shape}")


@contextlib.contextmanager
def naming(where: str):
    """A WeightsError inside the block is re-raised as one line starting with ``where`` (the
    file or folder the parameters come from)."""
    try:
        yield
    except WeightsError as e:
        raise WeightsError(f"{where}: {e}") from None


def check_finite(arrays: Dict[str, np.ndarray]):
    for name, value in arrays.items():
        if not np.all(np.isfinite(value)):
            raise WeightsError(f"parameter '{name}' contains NaN or infinite values")


@contextlib.contextmanager
def writing_h5(path: str):
    """``with writing_h5(path) as f:`` an h5py File to fill, built in memory and then written
    to ``path`` atomically with Python's own I/O. HDF5 never sees a failed write: with HDF5
    2.0, a write failing inside it (a full disk) leaves it in a state that crashes the process
    when its objects are freed. A full disk is a :class:`xumx.files.WriteError` naming the
    OS's reason; the cost is one file's size in memory while it is written."""
    import io
    import h5py
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        yield f
    write_bytes(path, image.getbuffer(), durable=True)   # hours of training


def write_h5(path: str, arrays, need_grad: Optional[Dict[str, bool]] = None):
    """Write {name: array} in nnabla's layout (in the given order), atomically."""
    with writing_h5(path) as f:
        for index, (name, value) in enumerate(arrays.items()):
            ds = f.create_dataset(name, data=np.asarray(value, dtype=np.float32))
            ds.attrs["need_grad"] = bool(need_grad.get(name, True)) if need_grad else True
            ds.attrs["index"] = index


def _vote(names_shapes: Dict[str, Tuple[int, ...]], seen: Sequence[Tuple[str, int, int]]):
    """The value most of the parameters ``seen`` ((name, ndim, axis): the size of that axis of
    a parameter of that many dimensions) agree on, the first one seen breaking a tie; None
    when none of them is there with that many dimensions."""
    values = [tuple(names_shapes[n])[axis] for n, ndim, axis in seen
              if n in names_shapes and len(tuple(names_shapes[n])) == ndim]
    if not values:
        return None
    return max(values, key=lambda v: (values.count(v), -values.index(v)))


def infer_config(names_shapes: Dict[str, Tuple[int, ...]], meta: Optional[dict] = None,
                 source_order=None) -> ModelConfig:
    """The ModelConfig that the parameter shapes imply; ``meta`` supplies nhop/sample_rate.

    Each size is the one most parameters that show it agree on (the hidden size: every
    source's fc1, fc2, fc3 and batch-norm shapes; the bins: every source's means and scales;
    the LSTM's layers and directions: every source's LSTM), so that one wrong parameter is
    the one :func:`check_declared` then names, whichever source it belongs to. The caller
    compares every shape with the spec.
    """
    meta = dict(meta or {})
    found = [m.group(1) for n in names_shapes for m in [re.fullmatch(r"input_mean_(.+)", n)] if m]
    if not found:
        hint = ""
        if any(n.split("/")[-1] == "input_mean" for n in names_shapes):
            hint = (" (it looks like an Open-Unmix file: use --umx-infer with a folder of "
                    "<target>.h5)")
        elif any(n.startswith("params/input_mean_") for n in names_shapes):
            hint = " (it looks like a training checkpoint: use best_xumx.h5 of that run)"
        raise WeightsError("no 'input_mean_<source>' parameter: not an X-UMX parameter file" + hint)
    order = list(source_order or meta.get("sources") or DEFAULT_SOURCES)
    sources = [s for s in order if s in found] + [s for s in found if s not in order]
    s0 = sources[0]
    bn = ("beta", "gamma", "mean", "var")

    def size(what, *seen):
        value = _vote(names_shapes, [c for s in sources for c in seen_of(s, seen)])
        if value is None or value < 1:
            name, ndim, _ = seen[0]
            name = name.format(s=s0)
            if name not in names_shapes:
                raise WeightsError(f"missing parameter '{show(name)}'")
            raise WeightsError(f"parameter '{show(name)}' has shape "
                               f"{tuple(names_shapes[name])}, expected {ndim} non-empty "
                               f"dimension(s) ({what})")
        return value

    def seen_of(s, seen):
        return [(name.format(s=s), ndim, axis) for name, ndim, axis in seen]

    max_bin = size("bins", ("input_mean_{s}", 1, 0), ("input_scale_{s}", 1, 0))
    nb_bins = size("bins", ("output_scale_{s}", 1, 0), ("output_mean_{s}", 1, 0))
    n_in = size("inputs", ("fc1_{s}/affine/W", 2, 0))
    hidden = size("hidden size", ("fc1_{s}/affine/W", 2, 1), ("fc2_{s}/affine/W", 2, 1),
                  ("fc3_{s}/affine/W", 2, 0),
                  *[(f"{fc}_{{s}}/bn/{p}", 3, 2) for fc in ("fc1", "fc2") for p in bn])
    directions = size("directions", ("lstm_{s}/lstm/weight_l0", 4, 0),
                      ("lstm_{s}/lstm/bias", 4, 1))
    layers = _vote(names_shapes, [c for s in sources
                                  for c in seen_of(s, [("lstm_{s}/lstm/bias", 4, 0)])])
    if layers is None:
        deeper = f"lstm_{s0}/lstm/weight"
        layers = 1 + (tuple(names_shapes[deeper])[0] if deeper in names_shapes
                      and len(tuple(names_shapes[deeper])) == 5 else 0)
    if n_in % max_bin:
        raise WeightsError(f"fc1_{show(s0)}/affine/W has {n_in} inputs, not a multiple of "
                           f"{max_bin} bins")
    nfft = 2 * (nb_bins - 1)
    try:
        return ModelConfig(sources=tuple(sources), nb_channels=n_in // max_bin, hidden_size=hidden,
                           nb_layers=layers, unidirectional=directions == 1, nfft=nfft,
                           nhop=int(meta.get("nhop", nfft // 4 if nfft != DEFAULT_NFFT else DEFAULT_NHOP)),
                           max_bin=max_bin,
                           sample_rate=int(meta.get("sample_rate", DEFAULT_SAMPLE_RATE)),
                           crossing=bool(meta.get("crossing", True)))
    except (TypeError, ValueError, OverflowError) as e:
        raise WeightsError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def check_arrays(cfg: ModelConfig, arrays: Dict[str, np.ndarray]):
    """Raise WeightsError unless every parameter of ``cfg`` is present, finite and well shaped."""
    for name, shape, _ in parameter_spec(cfg):
        if name not in arrays:
            raise WeightsError(f"missing parameter '{name}' (expected shape {shape})")
        got = tuple(arrays[name].shape)
        if got != shape:
            raise WeightsError(f"parameter '{name}' has shape {got}, expected {shape}")
        if not np.all(np.isfinite(arrays[name])):
            raise WeightsError(f"parameter '{name}' contains NaN or infinite values")


def _read_meta(path: str) -> dict:
    """The sidecar of ``path`` ({} when there is none), checked: a JSON object of at most
    :data:`MAX_SIDECAR` bytes whose hop and rate are sane numbers."""
    side = sidecar_path(path)
    try:
        if os.path.exists(side) and not stat.S_ISREG(os.stat(side).st_mode) \
                and not os.path.isdir(side):
            raise WeightsError(f"{side}: model sidecar is not a regular file")
        with open(side, "rb") as f:
            text = f.read(MAX_SIDECAR + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise WeightsError(f"{side}: unreadable model sidecar ({os_reason(e)})") from None
    if len(text) > MAX_SIDECAR:
        raise WeightsError(f"{side}: model sidecar larger than {MAX_SIDECAR} bytes")
    try:
        meta = json.loads(text.decode("utf-8"))
    except ValueError as e:
        raise WeightsError(f"{side}: unreadable model sidecar ({e})") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{side}: model sidecar is not a JSON object")
    for key, low, high in (("sample_rate",) + SAMPLE_RATES, ("nhop", 1, 1 << 20)):
        value = meta.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and low <= value <= high):
            raise WeightsError(f"{side}: '{key}' must be an integer in {low}..{high}, "
                               f"not {repr(value)[:40]}")
    names = meta.get("sources")
    if names is not None and not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
        raise WeightsError(f"{side}: 'sources' is not a list of names")
    return meta


def stated_rate(path: str) -> Optional[int]:
    """The sample rate that the sidecar of ``path`` states (None: no sidecar, or it does not
    say)."""
    return _read_meta(path).get("sample_rate")


def _source_order(entries) -> list:
    """Sources in nnabla's creation order (the ``index`` attributes), else by name."""
    ordered = sorted(entries.values(), key=lambda e: (e.index is None, e.index or 0, e.name))
    return [e.name[len("input_mean_"):] for e in ordered if e.name.startswith("input_mean_")]


def _umx_name(target: str, name: str) -> str:
    """Map an Open-Unmix (UMX) parameter name to the X-UMX name of the same parameter."""
    head, _, rest = name.partition("/")
    if head == target and rest:
        head, _, rest = rest.partition("/")
    if head in ("input_mean", "input_scale", "output_scale", "output_mean") and not rest:
        return f"{head}_{target}"
    return f"{head}_{target}/{rest}" if rest else f"{head}_{target}"


def read_parameters(files: Sequence[str], umx_targets: Optional[Sequence[str]] = None,
                    where: Optional[str] = None) -> Tuple[ModelConfig, Dict[str, np.ndarray]]:
    """Read a model: (config inferred from the shapes and the sidecar, {name: float32 array}).

    Both layouts take this one path. X-UMX: ``files`` is the one weights file and
    ``umx_targets`` None. UMX: ``files`` are the Open-Unmix ``<target>.h5`` files of
    ``umx_targets`` (same order), read as one uncrossed model whose parameter names are the
    X-UMX ones. Every file is walked and every declared shape compared with
    :func:`xumx.params.parameter_spec` before any value is read; raises :class:`WeightsError`
    with one line naming ``where`` (default: the first file) and the parameter.
    (:class:`xumx.modelfiles.ModelFiles` says which files a model is.)
    """
    where = where or files[0]
    if umx_targets is not None and not os.path.isdir(where):
        raise WeightsError(f"{where}: UMX mode needs a folder of <target>.h5 files")
    meta = {}
    with contextlib.ExitStack() as stack:
        found = {}   # X-UMX name -> (file, name in it)
        for index, path in enumerate(files):
            h5 = stack.enter_context(H5File(path))
            for name in h5.datasets:
                if name.split("/")[0] in _LEGACY_KEYS:
                    continue
                xname = name if umx_targets is None else _umx_name(umx_targets[index], name)
                if xname in found:
                    raise WeightsError(f"{path}: '{show(name)}' and '{show(found[xname][1])}' "
                                       f"are the same parameter")
                found[xname] = (h5, name)
            meta = meta or _read_meta(path)   # its errors name the sidecar
        entries = {x: h5.datasets[name] for x, (h5, name) in found.items()}
        if umx_targets is None:
            order = _source_order(entries)
        else:
            meta, order = dict(meta, crossing=False), list(umx_targets)
        with naming(where):
            _check_sizes(entries)
            cfg = infer_config({k: e.shape for k, e in entries.items()}, meta, source_order=order)
            check_total(cfg, "the shapes of the input_mean, output_scale, fc and lstm parameters")
            check_declared(cfg, entries)
        arrays = {}
        for name, shape, _ in parameter_spec(cfg):
            h5, inner = found[name]
            arrays[name] = h5.read(inner, shape)
    with naming(where):
        check_finite(arrays)
    return cfg, arrays


def load_xumx(path: str) -> Tuple[ModelConfig, Dict[str, np.ndarray]]:
    """:func:`read_parameters` of one X-UMX weights file."""
    return read_parameters([path])


@contextlib.contextmanager
def cannot_load(path: str):
    """Failures to load the model ``path`` inside the block as one WeightsError line,
    "cannot load the model: <path>: <why>" (the wording of every command)."""
    try:
        yield
    except WeightsError as e:
        raise WeightsError(f"cannot load the model: {e}") from None
    except XumxError:   # a write that failed, a GPU that cannot be used...: their own line
        raise
    except OSError as e:
        where = e.filename or path
        raise WeightsError(f"cannot load the model: {where}: {os_reason(e)}") from None


def save_model(path: str, cfg: ModelConfig, arrays: Dict[str, np.ndarray]):
    """Write parameters (published names and order) and the JSON sidecar, both atomically."""
    spec = parameter_spec(cfg)
    check_arrays(cfg, arrays)
    write_h5(path, {name: arrays[name] for name, _, _ in spec},
             {name: ng for name, _, ng in spec})
    write_text(sidecar_path(path), cfg.to_json())
