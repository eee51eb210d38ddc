"""Reading and writing parameter files in nnabla's HDF5 layout, plus the JSON sidecar.

nnabla's format: one dataset per parameter at the path of its name, with the attributes
``need_grad`` and ``index`` (creation order). Files are read with h5py only (nothing is ever
unpickled). What shapes cannot tell (hop size, sample rate) is read from ``<file>.json``
beside the weights, written by training; the published defaults apply when it is absent.
"""
import json
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np

from .config import (DEFAULT_NHOP, DEFAULT_NFFT, DEFAULT_SAMPLE_RATE, DEFAULT_SOURCES,
                     ModelConfig)
from .files import replacing  # noqa: F401  (also used by training)
from .model import parameter_spec

#: Parameters old nnabla versions saved for their Python STFT/ISTFT; ignored on load.
_LEGACY_KEYS = {"conv_r", "conv_i", "conv_cos", "conv_sin"}


class WeightsError(ValueError):
    """A parameter file that cannot be used, with a message naming the file and the cause."""


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def read_h5(path: str) -> Dict[str, Tuple[np.ndarray, bool, int]]:
    """{name: (array, need_grad, index)} of every dataset in an nnabla parameter file."""
    import h5py
    if not os.path.exists(path):
        raise WeightsError(f"{path}: no such file")
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a folder, not a parameter file (use --umx-infer for UMX folders)")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot be read ({e})") from None
    if not is_h5:
        raise WeightsError(f"{path}: not an HDF5 parameter file")
    out = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if obj.dtype.kind not in "fiub":   # strings, objects, compounds: refused unread
                        raise WeightsError(f"{path}: dataset '{name}' holds {obj.dtype} data, "
                                           f"not numbers: not a parameter file")
                    out[name] = (np.asarray(obj[()]), bool(obj.attrs.get("need_grad", True)),
                                 int(obj.attrs.get("index", len(out))))
            f.visititems(visit)
    except WeightsError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: damaged or truncated HDF5 file ({e})") from None
    if not out:
        raise WeightsError(f"{path}: contains no parameters")
    return out


def write_h5(path: str, arrays, need_grad: Optional[Dict[str, bool]] = None):
    """Write {name: array} in nnabla's layout (in the given order), atomically."""
    import h5py
    with replacing(path) as tmp, h5py.File(tmp, "w") as f:
        for index, (name, value) in enumerate(arrays.items()):
            ds = f.create_dataset(name, data=np.asarray(value, dtype=np.float32))
            ds.attrs["need_grad"] = bool(need_grad.get(name, True)) if need_grad else True
            ds.attrs["index"] = index


def infer_config(names_shapes: Dict[str, Tuple[int, ...]], meta: Optional[dict] = None,
                 source_order=None) -> ModelConfig:
    """The ModelConfig that the parameter shapes imply; ``meta`` supplies nhop/sample_rate."""
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

    def shape(name):
        if name not in names_shapes:
            raise WeightsError(f"missing parameter '{name}'")
        return names_shapes[name]

    max_bin = shape(f"input_mean_{s0}")[0]
    nb_bins = shape(f"output_scale_{s0}")[0]
    n_in, hidden = shape(f"fc1_{s0}/affine/W")
    if n_in % max_bin:
        raise WeightsError(f"fc1_{s0}/affine/W has {n_in} inputs, not a multiple of {max_bin} bins")
    directions = shape(f"lstm_{s0}/lstm/weight_l0")[0]
    deeper = names_shapes.get(f"lstm_{s0}/lstm/weight")
    nfft = 2 * (nb_bins - 1)
    try:
        return ModelConfig(sources=tuple(sources), nb_channels=n_in // max_bin, hidden_size=hidden,
                           nb_layers=1 + (deeper[0] if deeper else 0),
                           unidirectional=directions == 1, nfft=nfft,
                           nhop=int(meta.get("nhop", nfft // 4 if nfft != DEFAULT_NFFT else DEFAULT_NHOP)),
                           max_bin=max_bin,
                           sample_rate=int(meta.get("sample_rate", DEFAULT_SAMPLE_RATE)),
                           crossing=bool(meta.get("crossing", True)))
    except ValueError as e:
        raise WeightsError(str(e)) from None


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
    side = sidecar_path(path)
    if not os.path.exists(side):
        return {}
    try:
        with open(side) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{side}: unreadable model sidecar ({e})") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{side}: model sidecar is not a JSON object")
    return meta


def load_xumx(path: str, sources=None) -> Tuple[ModelConfig, Dict[str, np.ndarray]]:
    """Read an X-UMX file: (config inferred from shapes + sidecar, {name: array})."""
    raw = read_h5(path)
    raw = {k: v for k, v in raw.items() if k.split("/")[0] not in _LEGACY_KEYS}
    by_index = sorted(raw, key=lambda k: raw[k][2])
    found = [n[len("input_mean_"):] for n in by_index if n.startswith("input_mean_")]
    try:
        cfg = infer_config({k: v[0].shape for k, v in raw.items()}, _read_meta(path),
                           source_order=found)
        arrays = {k: v[0] for k, v in raw.items()}
        check_arrays(cfg, arrays)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    if sources is not None:
        missing = [s for s in sources if s not in cfg.sources]
        if missing:
            raise WeightsError(f"{path}: has no source {missing} (it has {list(cfg.sources)})")
    return cfg, arrays


def _umx_name(target: str, name: str) -> str:
    """Map an Open-Unmix (UMX) parameter name to the X-UMX name of the same parameter."""
    head, _, rest = name.partition("/")
    if head == target and rest:
        head, _, rest = rest.partition("/")
    if head in ("input_mean", "input_scale", "output_scale", "output_mean") and not rest:
        return f"{head}_{target}"
    return f"{head}_{target}/{rest}" if rest else f"{head}_{target}"


def load_umx(folder: str, targets) -> Tuple[ModelConfig, Dict[str, np.ndarray]]:
    """Read a folder of NNabla Open-Unmix files ``<target>.h5`` as one uncrossed model."""
    if not os.path.isdir(folder):
        raise WeightsError(f"{folder}: UMX mode needs a folder of <target>.h5 files")
    arrays, meta = {}, {}
    for t in targets:
        path = os.path.join(folder, f"{t}.h5")
        for name, (value, _, _) in read_h5(path).items():
            if name.split("/")[0] not in _LEGACY_KEYS:
                arrays[_umx_name(t, name)] = value
        meta = meta or _read_meta(path)
    meta["crossing"] = False
    try:
        cfg = infer_config({k: v.shape for k, v in arrays.items()}, meta, source_order=targets)
        check_arrays(cfg, arrays)
    except WeightsError as e:
        raise WeightsError(f"{folder}: {e}") from None
    return cfg, arrays


def save_model(path: str, cfg: ModelConfig, arrays: Dict[str, np.ndarray]):
    """Write parameters (published names and order) and the JSON sidecar, both atomically."""
    spec = parameter_spec(cfg)
    check_arrays(cfg, arrays)
    write_h5(path, {name: arrays[name] for name, _, _ in spec},
             {name: ng for name, _, ng in spec})
    with replacing(sidecar_path(path)) as tmp, open(tmp, "w") as f:
        f.write(cfg.to_json())


def random_arrays(cfg: ModelConfig, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded random parameters of every name and shape of ``cfg`` (for tests and demos).

    Values are scaled so that every path of the network influences the masks. For the default
    configuration and seed 0 these are bit for bit the parameters of the parity fixture
    (tests/data/parity), on numpy 1.x and 2.x alike: every step is computed in float32.
    """
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape, _ in parameter_spec(cfg):
        n = rng.standard_normal(shape).astype(np.float32)
        leaf = name.split("/")[-1]
        if name.startswith("input_mean"):
            v = -(2.0 + 0.5 * np.abs(n))
        elif name.startswith("input_scale"):
            v = 0.3 + 0.05 * np.abs(n)
        elif name.startswith("output_scale"):
            v = 1.0 + 0.1 * n
        elif name.startswith("output_mean"):
            v = 0.4 + 0.1 * n
        elif leaf == "W":   # float32 divisors: numpy 2 would otherwise divide in float64
            v = n / np.float32(np.sqrt(shape[0]))
        elif leaf in ("weight_l0", "weight"):
            v = n / np.float32(np.sqrt(shape[-1]))
        elif leaf == "var":
            v = 1.0 + 0.2 * np.abs(n)
        elif leaf == "gamma":
            v = 1.0 + 0.1 * n
        else:  # beta, mean, bias
            v = 0.1 * n
        out[name] = v.astype(np.float32)
    return out
