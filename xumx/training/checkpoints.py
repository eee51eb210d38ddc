"""Training checkpoints: one HDF5 file holding the parameters, the solver's states and the
run's metadata, written atomically and read as untrusted input (:mod:`xumx.h5safe`)."""
import json
from typing import Dict

import numpy as np

from ..config import ModelConfig
from ..h5safe import H5File, WeightsError, show
from ..modelfiles import BEST_NAME, CHECKPOINT_NAME  # noqa: F401  (a run folder's files)
from ..params import parameter_spec
from ..weights import check_declared, check_finite, check_total, naming, writing_h5

#: The format marker of training checkpoints (one HDF5 file: params/, solver/, meta).
CHECKPOINT_FORMAT = "xumx-checkpoint/1"


def write_checkpoint(path: str, params: Dict[str, np.ndarray], solver: Dict[str, np.ndarray],
                     meta: dict):
    """One HDF5 file (so one atomic os.replace) with groups params/, solver/ and a JSON meta."""
    with writing_h5(path) as f:   # interrupted: the old one stays
        f.attrs["format"] = CHECKPOINT_FORMAT
        f.attrs["meta"] = json.dumps(meta)
        for group, arrays in (("params", params), ("solver", solver)):
            g = f.create_group(group)
            for index, (name, value) in enumerate(arrays.items()):
                g.create_dataset(name, data=value).attrs["index"] = index


def read_checkpoint(path: str):
    """(params, solver states, meta) of a training checkpoint, or None when ``path`` is not
    one (no :data:`CHECKPOINT_FORMAT` marker). Like :func:`xumx.weights.read_parameters`, every
    dataset is checked before any value is read: ``params/<name>`` against the spec of the
    model configuration in the metadata, ``solver/<name>/<state>`` against its parameter's
    shape (``t``: a scalar), at most 3 states per trainable parameter."""
    with H5File(path) as h5:
        if h5.text("format") != CHECKPOINT_FORMAT:
            return None
        try:
            meta = json.loads(h5.text("meta") or "null")
        except ValueError as e:
            raise h5.error(f"the checkpoint's metadata is not JSON ({e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
            raise h5.error("the checkpoint's metadata has no model configuration")
        try:
            cfg = ModelConfig.from_dict(meta["model"])
            check_total(cfg, "the checkpoint's model configuration and its parameters")
            check_declared(cfg, h5.datasets, "params/")
        except (TypeError, ValueError) as e:
            raise h5.error(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        spec = parameter_spec(cfg)
        trainable = {name: shape for name, shape, grad in spec if grad}
        states: Dict[str, int] = {}
        for key, entry in h5.datasets.items():
            if not key.startswith("solver/"):
                continue
            param, _, state = key[len("solver/"):].rpartition("/")
            if param not in trainable:
                raise h5.error(f"solver state '{show(key)}' belongs to no trainable parameter")
            want = () if state == "t" else trainable[param]
            if entry.shape != want:
                raise h5.error(f"solver state '{show(key)}' has shape {entry.shape}, expected {want}")
            states[param] = states.get(param, 0) + 1
            if states[param] > 3:
                raise h5.error(f"more than 3 solver states for parameter '{show(param)}'")
        params = {name: h5.read("params/" + name, shape) for name, shape, _ in spec}
        solver = {}
        for key in sorted((k for k in h5.datasets if k.startswith("solver/")),
                          key=lambda k: (h5.datasets[k].index is None, h5.datasets[k].index or 0, k)):
            entry = h5.datasets[key]
            solver[key[len("solver/"):]] = h5.read(key, entry.shape,
                                                   np.int64 if entry.shape == () else np.float32)
    with naming(path):
        check_finite(params)
    return params, solver, meta


