"""Print the signal-to-error ratio (dB) of every array of the parity fixture for both engines (onnxruntime and the NNabla graph).

Usage: python benchmarks/parity.py [PARITY_DIR]   (default: tests/data/parity)

The parameters are the fixture's (random_arrays of tests/seeded.py, seed 0). The NNabla graph column
needs nnabla (Python 3.8-3.10); without it only onnxruntime is measured.
"""
import os
import sys
import tempfile

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from xumx.training.backend import NnablaMissing, require_nnabla  # noqa: E402
from xumx.config import ModelConfig, SeparationConfig  # noqa: E402
from xumx.separator import Separator  # noqa: E402
from xumx.weights import save_model  # noqa: E402
from seeded import random_arrays

CONFIGS = {"default": SeparationConfig(),
           "softmask": SeparationConfig(softmask=True, alpha=2.0, niter=0, residual_model=True),
           "em3": SeparationConfig(niter=3)}


def main(folder):
    audio, _ = sf.read(os.path.join(folder, "input.wav"), dtype="float32")
    ref = np.load(os.path.join(folder, "official_seed0.npz"))
    backends = ["onnxruntime"]
    try:
        require_nnabla("the NNabla graph column")
        backends.append("nnabla")
    except NnablaMissing as e:
        print(f"({e})")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed0.h5")
        save_model(path, ModelConfig(), random_arrays(ModelConfig(), seed=0))
        seps = {b: Separator.from_file(path, backend=b) for b in backends}
        outs = {(b, c): s.with_separation(cfg).separate(audio)
                for b, s in seps.items() for c, cfg in CONFIGS.items()}
    print(f"{'array':20s} {'onnxruntime':>12s} {'NNabla graph':>13s}")
    for key in ref.files:
        c, name = key.split("/")
        r = ref[key].astype(np.float64)
        dbs = [10 * np.log10(np.sum(r ** 2) / np.sum((outs[(b, c)][name][:len(r)] - r) ** 2))
               for b in backends]
        print(f"{key:20s} " + " ".join(f"{db:12.1f} " for db in dbs))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "parity"))
