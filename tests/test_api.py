"""The function-style API that existing callers use (published code, Spleeter Web): thin calls
of the Separator (tests/test_separator.py)."""
import argparse
import sys
import types

import numpy as np
import pytest

from conftest import sine_mix
from xumx import api
from xumx.config import SeparationConfig
from xumx.errors import EngineError
from xumx.separator import Separator

SOURCES = ["bass", "drums", "vocals", "other"]


def _dict(model, **kw):
    d = dict(model=model, umx_infer=False, targets=SOURCES, softmask=False, alpha=1.0,
             residual_model=False, niter=1)
    d.update(kw)
    return d


@pytest.mark.parametrize("seconds_extra", [(1, 17), (0, 50), (45, 0)])
def test_three_forms_agree_and_keep_the_length(tiny_model, seconds_extra):
    seconds, extra = seconds_extra
    audio = sine_mix(8000 * seconds + extra, 8000)   # the tiny model runs at 8 kHz, hop 64
    by_dict = api.separate_args_dict(audio, _dict(tiny_model))
    ns = argparse.Namespace(**_dict(tiny_model))
    by_namespace = api.separate(audio, ns)
    by_keywords = api.separate(audio, model_path=tiny_model, niter=1, softmask=False, alpha=1.0,
                               residual_model=False)
    for out in (by_dict, by_namespace, by_keywords):
        assert list(out) == SOURCES
        for wav in out.values():
            assert wav.shape == audio.shape and wav.dtype.kind == "f"
            assert np.isfinite(wav).all()
        for k in SOURCES:
            np.testing.assert_array_equal(out[k], by_dict[k])


def test_estimates_sum_to_the_mixture(tiny_model):
    """Wiener filtering distributes the mixture: with EM the estimates add up to it."""
    audio = sine_mix(8000, 8000)
    out = api.separate_args_dict(audio, _dict(tiny_model, niter=1))
    total = sum(out.values())
    err = 10 * np.log10(np.sum(audio.astype(float) ** 2) / np.sum((total - audio) ** 2))
    assert err > 30


def test_targets_by_name_and_residual(tiny_model):
    audio = sine_mix(8000, 8000)
    full = api.separate_args_dict(audio, _dict(tiny_model))
    vocals = api.separate_args_dict(audio, _dict(tiny_model, targets=["vocals"]))
    assert list(vocals) == ["vocals"]
    np.testing.assert_allclose(vocals["vocals"], full["vocals"], atol=1e-6)
    reordered = api.separate_args_dict(audio, _dict(tiny_model, targets=["other", "bass"]))
    assert list(reordered) == ["other", "bass"]
    np.testing.assert_allclose(reordered["bass"], full["bass"], atol=1e-6)
    with_res = api.separate_args_dict(audio, _dict(tiny_model, residual_model=True, softmask=True,
                                                   alpha=2.0, niter=0))
    assert list(with_res) == SOURCES + ["residual"]
    with pytest.raises(ValueError, match="unknown target.*piano"):
        api.separate_args_dict(audio, _dict(tiny_model, targets=["piano"]))


def test_parameters_are_loaded_once(tiny_model, monkeypatch):
    import xumx.modelcache
    calls = []
    real = xumx.modelcache.load_net
    monkeypatch.setattr(xumx.modelcache, "load_net", lambda *a, **k: calls.append(a) or real(*a, **k))
    api._CACHE.clear()
    audio = sine_mix(4000, 8000)
    for niter in (0, 1, 2):
        api.separate_args_dict(audio, _dict(tiny_model, niter=niter))
    api.separate(audio, model_path=tiny_model)
    assert len(calls) == 1


@pytest.mark.parametrize("auto_forward", [False, True])
@pytest.mark.nnabla
def test_caller_nnabla_state_is_left_alone(tiny_model, auto_forward):
    import nnabla as nn
    from nnabla.ext_utils import get_extension_context
    ctx = get_extension_context("cpu", type_config="float")
    nn.set_default_context(ctx)
    nn.set_auto_forward(auto_forward)
    api.separate_args_dict(sine_mix(4000, 8000), _dict(tiny_model))
    assert nn.get_auto_forward() is auto_forward
    assert str(nn.get_current_context()) == str(ctx)
    assert not nn.get_parameters()


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 8000), np.float32), r"looks like \(channels, samples\)"),
    (np.zeros((8000, 2, 1), np.float32), "nb_timesteps"),
    (np.zeros((8000, 2), bool), "numbers"),
    (np.zeros((8000, 2), np.complex64), "numbers"),
    (np.zeros((0, 2), np.float32), "empty"),
    (np.zeros((100, 3), np.float32), "1 or 2 channels"),
    (np.full((100, 2), np.nan, np.float32), "NaN"),
    ([[0.0, 0.0]], "numpy array"),
])
def test_bad_audio_is_explained(tiny_model, bad, match):
    with pytest.raises(ValueError, match=match):
        api.separate_args_dict(bad, _dict(tiny_model))


def test_missing_model_key_and_file(tmp_path):
    with pytest.raises(ValueError, match="'model'"):
        api.separate_args_dict(sine_mix(100, 8000), {"niter": 1})
    with pytest.raises(ValueError, match="no such file"):
        api.separate_args_dict(sine_mix(100, 8000), {"model": str(tmp_path / "nope.h5")})


# ----------------------------------------------------------------- rates, integer audio, targets
def test_a_rate_resamples_in_and_out_as_the_command_line_does(tiny_model):
    """The audio's rate (44.1 kHz here, the tiny model runs at 8 kHz): stems at that rate and
    length, equal to the Separator's own (the command line's path)."""
    audio = sine_mix(44100 // 2 + 3, 44100)
    sep = Separator.load(tiny_model)
    want = sep.separate(audio, rate=44100)
    outs = [
            api.separate_args_dict(audio, _dict(tiny_model, rate=44100)),
            api.separate(audio, model_path=tiny_model, rate=44100),
            api.separate(audio, argparse.Namespace(**_dict(tiny_model), rate=44100))]
    for out in outs:
        assert list(out) == SOURCES
        for k in SOURCES:
            assert out[k].shape == audio.shape
            np.testing.assert_array_equal(out[k], want[k])
    # the model's own rate, given or not, is the plain separation
    at_8k = sine_mix(4000, 8000)
    np.testing.assert_array_equal(sep.separate(at_8k, rate=8000)["bass"], sep.separate(at_8k)["bass"])
    with pytest.raises(ValueError, match="rate"):
        sep.separate(audio, rate=0)


@pytest.mark.parametrize("dtype,scale,centre", [("int16", 32768, 0), ("int32", 2 ** 31, 0),
                                                ("uint8", 128, 128), ("int8", 128, 0)])
def test_integer_audio_is_scaled_by_its_full_scale(tiny_model, dtype, scale, centre):
    info = np.iinfo(dtype)
    floats = np.clip(sine_mix(4000, 8000), -0.99, 0.99)
    ints = np.clip(np.round(floats * scale + centre), info.min, info.max).astype(dtype)
    want = api.separate_args_dict((ints.astype(np.float64) - centre) / scale, _dict(tiny_model))
    for out in (api.separate_args_dict(ints, _dict(tiny_model)),
                Separator.load(tiny_model).separate(ints)):
        for k in SOURCES:
            assert out[k].dtype == np.float32
            np.testing.assert_allclose(out[k], want[k], atol=1e-6)


def test_a_string_of_targets_is_one_target(tiny_model):
    audio = sine_mix(4000, 8000)
    assert SeparationConfig(targets="vocals").targets == ("vocals",)
    full = api.separate_args_dict(audio, _dict(tiny_model))
    for out in (api.separate_args_dict(audio, _dict(tiny_model, targets="vocals")),
                api.separate(audio, argparse.Namespace(**_dict(tiny_model, targets="vocals")))):
        assert list(out) == ["vocals"]
        np.testing.assert_allclose(out["vocals"], full["vocals"], atol=1e-6)


def test_a_whole_song_is_cross_faded_not_cut(tiny_model):
    """Spleeter Web's call on a whole song: the Separator's cross-faded chunks (the keys
    chunk_dur/overlap set them), equal to Separator.separate with the same settings, and no
    seam where back-to-back pieces would have one."""
    audio = sine_mix(8000 * 7 + 123, 8000)   # 7 s: 3 chunks of 3 s
    settings = dict(chunk_dur=3.0, overlap=0.5)
    whole = api.separate_args_dict(audio, _dict(tiny_model, **settings))
    want = Separator.load(tiny_model, **settings).separate(audio)
    for k in SOURCES:
        assert whole[k].shape == audio.shape
        np.testing.assert_array_equal(whole[k], want[k])
    one_piece = api.separate_args_dict(audio, _dict(tiny_model, chunk_dur=0))
    cut = {k: np.concatenate([api.separate_args_dict(audio[a:a + 24000], _dict(tiny_model, chunk_dur=0))[k]
                              for a in range(0, audio.shape[0], 24000)]) for k in SOURCES}

    def seam_error(est):   # the worst sample step around the cuts, against the one-piece result
        return max(np.max(np.abs((est[k] - one_piece[k])[a - 64:a + 64])) for k in SOURCES
                   for a in (24000, 48000))
    assert seam_error(whole) < 0.25 * seam_error(cut)


def test_device_key(tiny_model, monkeypatch):
    """Spleeter Web's settings say "context": "cpu" | "cudnn"; a GPU that cannot be used is an
    error, never a silent CPU run; without a key the caller's nnabla default context (what
    callers of the published code set) still decides."""
    import onnxruntime as ort
    assert api.legacy_device({"context": "cpu"}) == "cpu"
    assert api.legacy_device({"context": "cudnn"}) == "cudnn"
    assert api.legacy_device({"context": "cudnn", "device_id": 1}) == "cudnn:1"
    assert api.legacy_device({"device": "cuda:2"}) == "cuda:2"
    monkeypatch.delitem(sys.modules, "nnabla", raising=False)
    assert api.legacy_device({}) == "cpu"
    fake = types.ModuleType("nnabla")
    fake.get_current_context = lambda: types.SimpleNamespace(backend=["cudnn:float"], device_id="1")
    monkeypatch.setitem(sys.modules, "nnabla", fake)
    assert api.legacy_device({}) == "cudnn:1"
    fake.get_current_context = lambda: types.SimpleNamespace(backend=["cpu:float"], device_id="0")
    assert api.legacy_device({}) == "cpu"
    monkeypatch.delitem(sys.modules, "nnabla")
    audio = sine_mix(4000, 8000)
    out = api.separate_args_dict(audio, _dict(tiny_model, context="cpu"))
    assert list(out) == SOURCES
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineError, match="cannot run on CUDA device 0"):
            api.separate_args_dict(audio, _dict(tiny_model, context="cudnn"))
