"""Parity with the published X-UMX code on the fixture in tests/data/parity (see its README).

The NNabla graph (the reference path, also used on GPUs) is checked here for every
configuration; the onnxruntime engine has the same check in test_engine.py. The three
function-style API forms are checked on the same fixture. The parameters come from
xumx's own generator (``random_arrays`` of tests/seeded.py, seed 0), checked here to be bit for
bit those of the published fixture's ``make_params.py``.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import PARITY, SHARED_PARITY, params_digest, read_h5
from xumx import api
from xumx.config import ModelConfig, SeparationConfig
from xumx.params import parameter_spec
from xumx.separator import Separator
from seeded import random_arrays

CONFIGS = {
    "default": dict(softmask=False, alpha=1.0, niter=1, residual_model=False),
    "softmask": dict(softmask=True, alpha=2.0, niter=0, residual_model=True),
    "em3": dict(softmask=False, alpha=1.0, niter=3, residual_model=False),
}
SOURCES = ["bass", "drums", "vocals", "other"]


def ser_db(ref, est):
    ref = ref.astype(np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((est - ref) ** 2))


#: SHA-256 of the parity parameters (see :func:`params_digest`), taken from the file that the
#: published fixture's make_params.py writes for seed 0 (test_generator_matches_make_params).
PARITY_PARAMS_SHA256 = "50ccc5bb7be792ac83e38a256019f37da6bed219f3d949a35922a105e034b714"


def test_generator_writes_the_parity_parameters(parity_model):
    """Our seeded generator, written by our h5py writer, gives the checksum of make_params.py's
    file (on numpy 1.x and 2.x alike)."""
    params = read_h5(parity_model)
    assert [n for n, _, _ in parameter_spec(ModelConfig())] == sorted(params, key=lambda k: params[k][2])
    assert all(v.dtype == np.float32 for v, _, _ in params.values())
    assert params_digest(params) == PARITY_PARAMS_SHA256


def test_parity_digest_sees_one_bit():
    params = {n: (v, ng, i) for i, ((n, _, ng), v) in
              enumerate(zip(parameter_spec(ModelConfig()), random_arrays(ModelConfig(), 0).values()))}
    assert params_digest(params) == PARITY_PARAMS_SHA256
    w = params["fc2_vocals/affine/W"][0]
    w.view(np.uint32)[7, 3] ^= 1
    assert params_digest(params) != PARITY_PARAMS_SHA256


@pytest.mark.shared
@pytest.mark.nnabla
def test_generator_matches_make_params(parity_model, tmp_path):
    """Where ../shared/parity is beside the checkout: its make_params.py (which needs nnabla)
    writes exactly the names, flags, order and arrays of our generator."""
    theirs = str(tmp_path / "make_params_seed0.h5")
    subprocess.run([sys.executable, os.path.join(SHARED_PARITY, "make_params.py"), theirs, "0"],
                   check=True, capture_output=True)
    ref, ours = read_h5(theirs), read_h5(parity_model)
    assert list(ref) == list(ours)
    for name, (value, need_grad, index) in ref.items():
        assert (need_grad, index) == ours[name][1:], name
        assert value.dtype == ours[name][0].dtype and np.array_equal(value, ours[name][0]), name
    assert params_digest(ref) == PARITY_PARAMS_SHA256


@pytest.mark.shared
def test_fixture_data_is_the_shared_one():
    """The fixture's data files are copies of ../shared/parity's."""
    for name in ("input.wav", "official_seed0.npz"):
        with open(os.path.join(PARITY, name), "rb") as a, open(os.path.join(SHARED_PARITY, name), "rb") as b:
            assert a.read() == b.read(), name


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


@pytest.mark.nnabla
def test_nnabla_graph_parity(parity_model, fixture_audio):
    audio, ref = fixture_audio
    sep = Separator.load(parity_model, backend="nnabla")
    mag = sep.model_input(sep.spectrogram(audio))
    masks = sep.masks(mag)
    sep.net.masks = lambda _mag: masks.copy()   # the network once; separate() scales it in place
    for name, kw in CONFIGS.items():
        _check(name, sep.with_settings(**kw).separate(audio), audio, ref)


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
