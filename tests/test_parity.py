"""Parity with the published X-UMX code on ../shared/parity (see its README)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import PARITY

CONFIGS = {
    "default": dict(softmask=False, alpha=1.0, niter=1, residual_model=False),
    "softmask": dict(softmask=True, alpha=2.0, niter=0, residual_model=True),
    "em3": dict(softmask=False, alpha=1.0, niter=3, residual_model=False),
}


def ser_db(ref, est):
    ref = ref.astype(np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((est - ref) ** 2))


@pytest.fixture(scope="module")
def parity_model(tmp_path_factory):
    if not os.path.isdir(PARITY):
        pytest.fail(f"parity fixture not found at {PARITY} (../shared/parity beside the repository)")
    path = str(tmp_path_factory.mktemp("parity") / "seed0.h5")
    subprocess.run([sys.executable, os.path.join(PARITY, "make_params.py"), path, "0"], check=True)
    return path


def test_parity_with_published_code(parity_model):
    from xumx.api import separate_args_dict
    audio, rate = sf.read(os.path.join(PARITY, "input.wav"), dtype="float32")
    assert rate == 44100
    ref = np.load(os.path.join(PARITY, "official_seed0.npz"))
    seen = set()
    for name, kw in CONFIGS.items():
        out = separate_args_dict(audio, dict(model=parity_model, umx_infer=False,
                                             targets=["bass", "drums", "vocals", "other"], **kw))
        keys = sorted(k.split("/")[1] for k in ref.files if k.startswith(name + "/"))
        assert sorted(out) == keys
        for key in keys:
            r = ref[f"{name}/{key}"]
            assert out[key].shape == audio.shape  # full length, not len - len % 1024
            db = ser_db(r, out[key][:len(r)])
            assert db >= 60, f"{name}/{key}: {db:.1f} dB"
            seen.add(f"{name}/{key}")
    assert seen == set(ref.files)
