"""Seeded parameters for tests, benchmarks and checking scripts (not part of the package).

``random_arrays(cfg, seed)`` gives every parameter of ``cfg`` (names and shapes of
:func:`xumx.params.parameter_spec`, in its order) filled from ``numpy.random.RandomState(seed)``.
For the default configuration and seed 0 these are bit for bit the parameters of the parity
fixture (tests/data/parity; tests/test_parity.py checks it). Scripts outside the test suite put
this folder on ``sys.path`` to import it.
"""
from typing import Dict

import numpy as np

from xumx.config import ModelConfig
from xumx.params import parameter_spec


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
