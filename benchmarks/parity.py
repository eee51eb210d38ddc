"""Print the signal-to-error ratio (dB) of every array of ../shared/parity for both engines.

Usage: python benchmarks/parity.py [PARITY_DIR]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

from xumx.config import SeparationConfig
from xumx.separator import Separator

CONFIGS = {"default": SeparationConfig(),
           "softmask": SeparationConfig(softmask=True, alpha=2.0, niter=0, residual_model=True),
           "em3": SeparationConfig(niter=3)}


def main(folder):
    audio, _ = sf.read(os.path.join(folder, "input.wav"), dtype="float32")
    ref = np.load(os.path.join(folder, "official_seed0.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed0.h5")
        subprocess.run([sys.executable, os.path.join(folder, "make_params.py"), path, "0"], check=True)
        print(f"{'array':20s} {'onnxruntime':>12s} {'NNabla graph':>13s}")
        seps = {b: Separator.from_file(path, backend=b) for b in ("onnxruntime", "nnabla")}
        outs = {(b, c): s.with_separation(cfg).separate(audio)
                for b, s in seps.items() for c, cfg in CONFIGS.items()}
    for key in ref.files:
        c, name = key.split("/")
        r = ref[key].astype(np.float64)
        dbs = [10 * np.log10(np.sum(r ** 2) / np.sum((outs[(b, c)][name][:len(r)] - r) ** 2))
               for b in ("onnxruntime", "nnabla")]
        print(f"{key:20s} {dbs[0]:12.1f} {dbs[1]:13.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "parity"))
