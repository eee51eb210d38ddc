"""Reduced precision (issue 23): the int8 graph of xumx.onnxnet (DynamicQuantizeLSTM with weights
quantised in numpy) runs, its masks stay close to float32's, the model cache keeps the two
graphs apart, and --precision / Separator.load(precision=...) reach the network."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from conftest import sine_mix, tiny_config
from seeded import random_arrays
from xumx import modelcache, onnxnet
from xumx.config import SeparationConfig
from xumx.engine import OnnxNet
from xumx.errors import ConfigError, EvalError
from xumx.evaluation import identity as identity_mod
from xumx.onnxnet import INT8_LEVEL, model_bytes, quantize_symmetric, serving_bytes
from xumx.parsing import parse
from xumx.separator import Separator
from xumx.weights import save_model


def ser(ref, est):
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-300))


#: mask SER of the int8 graph against float32's on the tiny models (measured 66-74 dB with
#: onnxruntime 1.23 and 1.32; a scale off by a factor 2 gives under 10 dB)
MIN_MASK_SER = 40


def test_quantize_symmetric_known_answer():
    w = np.array([[1.0, -1.0, 0.0], [-0.25, 4.0, 0.0]], np.float32)   # (K 2, M 3): per column
    q, scale = quantize_symmetric(w, axis=0)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    np.testing.assert_allclose(scale, [1 / INT8_LEVEL, 4 / INT8_LEVEL, 1])   # zero column: 1
    quarter = int(np.rint(INT8_LEVEL / 4))   # 63 / 4 = 15.75 -> 16
    np.testing.assert_array_equal(q, [[INT8_LEVEL, -quarter, 0], [-quarter, INT8_LEVEL, 0]])
    rng = np.random.RandomState(0)
    w = rng.standard_normal((3, 40, 8)).astype(np.float32)
    q, scale = quantize_symmetric(w, axis=1)
    assert scale.shape == (3, 8) and np.abs(q).max() == INT8_LEVEL
    err = np.abs(q * scale[:, None, :] - w)
    assert np.all(err <= scale[:, None, :] / 2 + 1e-7)


@pytest.mark.parametrize("kw", [dict(), dict(crossing=False, sources=("a", "b")),
                                dict(unidirectional=True, nb_channels=1, sources=("a", "b"),
                                     nb_layers=3)],
                         ids=["default", "no-crossing", "uni-mono"])
def test_int8_graph_runs_close_to_float32(kw, rng):
    cfg = tiny_config(**kw)
    arrays = random_arrays(cfg, seed=5)
    mag = (3 * np.abs(rng.standard_normal((40, 2, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)

    def graph(write, **precision):   # (the graph's bytes, its head or None)
        out = write(cfg, arrays, **precision)
        return out if isinstance(out, tuple) else (out, None)

    for write in (serving_bytes, model_bytes):   # what OnnxNet runs, what xumx.export writes
        (f32, head), (int8, head8) = graph(write, precision="float32"), graph(write, precision="int8")
        assert b"DynamicQuantizeLSTM" in int8 and b"com.microsoft" in int8
        assert b"com.microsoft" not in f32
        assert graph(write)[0] == f32   # the default
        ref, net = OnnxNet(f32, threads=1, head=head), OnnxNet(int8, threads=1, head=head8)
        assert (ref.precision, net.precision) == ("float32", "int8") and net.cfg == cfg
        a, b = ref.batch_masks(mag), net.batch_masks(mag)
        assert b.shape == a.shape and b.dtype == np.float32 and b.min() >= 0
        assert MIN_MASK_SER <= ser(a, b) < 120   # close, and not the float32 graph again


def test_broken_scale_fails_the_bound(monkeypatch, rng):
    """The bound of the test above catches a quantiser that is wrong by a factor of 2."""
    cfg = tiny_config()
    arrays = random_arrays(cfg, seed=5)
    mag = (3 * np.abs(rng.standard_normal((40, 1, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)
    ref = OnnxNet.from_arrays(cfg, arrays, threads=1).batch_masks(mag)
    right = quantize_symmetric
    monkeypatch.setattr(onnxnet, "quantize_symmetric",
                        lambda w, axis: (lambda q, s: (q, 2 * s))(*right(w, axis)))
    wrong = OnnxNet.from_arrays(cfg, arrays, threads=1, precision="int8").batch_masks(mag)
    assert ser(ref, wrong) < MIN_MASK_SER


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision must be one of float32, int8"):
        SeparationConfig(precision="int4")
    with pytest.raises(ValueError, match="precision"):
        model_bytes(tiny_config(), random_arrays(tiny_config(), seed=1), precision="bf16")


def test_cache_keeps_float32_and_int8_apart(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(sources=("a", "b"))
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, random_arrays(cfg, seed=4))
    folder = tmp_path / "cache" / "onnx"
    mag = np.abs(rng.standard_normal((30, cfg.nb_channels, cfg.nb_bins))).astype(np.float32)
    f32 = Separator.load(path)
    int8 = Separator.load(path, precision="int8")
    assert (f32.net.precision, int8.net.precision) == ("float32", "int8")
    assert int8.separation.precision == "int8"
    entries = lambda: sorted(n for n in os.listdir(folder) if n.endswith(".onnx"))  # noqa: E731
    assert len(entries()) == 2 and len(os.listdir(folder)) == 4   # each with its head
    assert MIN_MASK_SER <= ser(f32.masks(mag), int8.masks(mag)) < 120
    # from the cache: each precision its own entry, the same masks
    np.testing.assert_array_equal(Separator.load(path, precision="int8").masks(mag), int8.masks(mag))
    np.testing.assert_array_equal(Separator.load(path).masks(mag), f32.masks(mag))
    assert len(entries()) == 2
    # an entry holding the other precision's graph (a mix-up) is built again, not used
    from xumx.modelfiles import ModelFiles
    files = ModelFiles.resolve(path)
    int8_entry = modelcache.cached_model(modelcache.model_key(files, "int8"), None, str(folder))[0]
    with open(modelcache.cached_model(modelcache.model_key(files), None, str(folder))[0], "rb") as f:
        float_graph = f.read()
    with open(int8_entry, "wb") as f:
        f.write(float_graph)
    again = Separator.load(path, precision="int8")
    assert again.net.precision == "int8"
    np.testing.assert_array_equal(again.masks(mag), int8.masks(mag))


def test_the_network_and_the_settings_agree(tiny_model):
    sep = Separator.load(tiny_model)
    with pytest.raises(ConfigError, match="loaded in float32 and the settings ask for int8"):
        sep.with_settings(precision="int8")
    with pytest.raises(ConfigError, match="needs the onnxruntime backend"):
        Separator.load(tiny_model, backend="nnabla", precision="int8")


def test_flag_reaches_the_separator(tmp_path, monkeypatch, tiny_model):
    """xumx.test --precision int8 separates with the int8 graph (the one in the cache)."""
    from xumx.test import main
    _, _, _, separation = parse("test", ["x.wav", "--precision", "int8"])
    assert separation.precision == "int8"
    assert parse("test", ["x.wav"])[3].precision == "float32"
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(8000, 8000), 8000)
    loaded = []
    real = Separator.load.__func__
    monkeypatch.setattr(Separator, "load", classmethod(
        lambda cls, *a, **k: loaded.append(real(cls, *a, **k)) or loaded[-1]))
    assert main([song, "--model", tiny_model, "--precision", "int8", "-o",
                 str(tmp_path / "out"), "-q"]) == 0
    assert [s.net.precision for s in loaded] == ["int8"]
    assert len(os.listdir(tmp_path / "out" / "song")) == 4
    (entry,) = [n for n in os.listdir(tmp_path / "cache" / "onnx") if n.endswith(".onnx")]
    assert OnnxNet(str(tmp_path / "cache" / "onnx" / entry)).precision == "int8"
    assert main([song, "--model", tiny_model, "--precision", "int4"]) == 2   # usage


def test_eval_identity_records_the_precision(tmp_path):
    """Scores of int8 stems are not mixed with float32 ones; a record from before the field
    existed is float32's."""
    base = str(tmp_path / "eval")
    identity = {"model_sha256": "0" * 64, "precision": "float32"}
    os.makedirs(base)
    with open(os.path.join(base, identity_mod.IDENTITY), "w") as f:
        json.dump({"identity": {"model_sha256": "0" * 64}, "model": "m.h5"}, f)
    identity_mod.check_identity(base, identity, "m.h5")   # an old record: float32
    with pytest.raises(EvalError, match="--precision: float32 there, int8 now"):
        identity_mod.check_identity(base, dict(identity, precision="int8"), "m.h5")


def test_export_int8(tmp_path, tiny_model, rng):
    from xumx.export import main
    out = str(tmp_path / "m.onnx")
    assert main(["--model", tiny_model, "--out", out, "--precision", "int8", "-q"]) == 0
    net = OnnxNet(out)
    assert net.precision == "int8"
    mag = np.abs(rng.standard_normal((20, net.cfg.nb_channels, net.cfg.nb_bins))).astype(np.float32)
    assert ser(Separator.load(tiny_model).masks(mag), net.masks(mag)) >= MIN_MASK_SER


def test_function_api_keys_the_precision(tmp_path, monkeypatch, tiny_model):
    """xumx.api caches a Separator per model and settings: an int8 call after a float32 one
    gets the int8 network, not the cached float32 one."""
    from xumx import api
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    audio = sine_mix(8000, 8000)
    d = dict(model=tiny_model, targets=["vocals", "bass"])
    f32 = api.separate_args_dict(audio, d)
    int8 = api.separate_args_dict(audio, dict(d, precision="int8"))
    assert api.get_separator(tiny_model, SeparationConfig(precision="int8")).net.precision == "int8"
    assert api.get_separator(tiny_model).net.precision == "float32"
    for name in ("vocals", "bass"):
        assert MIN_MASK_SER <= ser(f32[name], int8[name]) < 120   # measured 65-66 dB
