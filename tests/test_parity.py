"""Parity with the published X-UMX code on ../shared/parity (see its README).

The NNabla graph (the reference path, also used on GPUs) is checked here for every
configuration; the onnxruntime engine has the same check in test_engine.py. The three
function-style API forms are checked on the same fixture.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import PARITY
from xumx import api
from xumx.config import SeparationConfig
from xumx.separator import Separator

CONFIGS = {
    "default": dict(softmask=False, alpha=1.0, niter=1, residual_model=False),
    "softmask": dict(softmask=True, alpha=2.0, niter=0, residual_model=True),
    "em3": dict(softmask=False, alpha=1.0, niter=3, residual_model=False),
}
SOURCES = ["bass", "drums", "vocals", "other"]


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


@pytest.fixture(scope="module")
def fixture_audio():
    audio, rate = sf.read(os.path.join(PARITY, "input.wav"), dtype="float32")
    assert rate == 44100
    return audio, np.load(os.path.join(PARITY, "official_seed0.npz"))


def _check(name, out, audio, ref):
    keys = sorted(k.split("/")[1] for k in ref.files if k.startswith(name + "/"))
    assert sorted(out) == keys
    for key in keys:
        r = ref[f"{name}/{key}"]
        assert out[key].shape == audio.shape  # full length, not len - len % 1024
        db = ser_db(r, out[key][:len(r)])
        assert db >= 60, f"{name}/{key}: {db:.1f} dB"


def test_nnabla_graph_parity(parity_model, fixture_audio):
    audio, ref = fixture_audio
    sep = Separator.from_file(parity_model, backend="nnabla")
    mag = sep.model_input(sep.spectrogram(audio))
    masks = sep.masks(mag)
    sep.masks = lambda _mag: masks.copy()   # the network once; separate() scales it in place
    for name, kw in CONFIGS.items():
        _check(name, sep.with_separation(SeparationConfig(**kw)).separate(audio), audio, ref)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_api_forms_parity(parity_model, fixture_audio, name):
    audio, ref = fixture_audio
    kw = CONFIGS[name]
    by_dict = api.separate_args_dict(audio, dict(model=parity_model, umx_infer=False,
                                                 targets=SOURCES, **kw))
    _check(name, by_dict, audio, ref)
    by_ns = api.separate(audio, argparse.Namespace(model=parity_model, umx_infer=False,
                                                   targets=SOURCES, **kw))
    by_kw = api.separate(audio, model_path=parity_model, **kw)
    for out in (by_ns, by_kw):
        assert list(out) == list(by_dict)
        for k in out:
            np.testing.assert_array_equal(out[k], by_dict[k])
