"""The numpy CPU path (xumx.fastpath), the blockwise Wiener filter and the streaming
inverse STFT against their references: the NNabla graph, norbert 0.2.1, dsp.istft, and the
published code's outputs in tests/data/parity."""
import os

import numpy as np
import pytest

from conftest import PARITY, sine_mix, tiny_config
from xumx import dsp, fastpath
from xumx.config import SeparationConfig
from xumx.fastpath import NumpyNet
from xumx.filtering import wiener_separate
from xumx.separator import Separator, resolve_backend
from xumx.weights import load_xumx, random_arrays


def ser(ref, est):
    """Signal-to-error ratio in dB."""
    ref, est = np.asarray(ref), np.asarray(est)
    return 10 * np.log10(np.sum(np.abs(ref) ** 2) / max(np.sum(np.abs(ref - est) ** 2), 1e-300))


@pytest.mark.parametrize("kw", [
    dict(),
    dict(hidden_size=24, sources=("a", "b")),
    dict(sources=("a", "b", "c"), nb_layers=1),
    dict(nb_channels=1),
    dict(unidirectional=True, sources=("a", "b")),
    dict(crossing=False, sources=("a", "b")),
])
@pytest.mark.nnabla
def test_numpy_net_matches_nnabla(kw, rng, monkeypatch):
    monkeypatch.setattr(fastpath, "LSTM_BLOCK", 7)  # several projection blocks, a partial last
    cfg = tiny_config(**kw)
    arrays = random_arrays(cfg, seed=5)
    mag = (3 * np.abs(rng.standard_normal((40, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)
    ref = Separator(cfg, arrays, backend="nnabla").masks(mag)
    out = NumpyNet(cfg, arrays).masks(mag)
    assert out.shape == ref.shape == (len(cfg.sources), 40, cfg.nb_channels, cfg.nb_bins)
    assert out.dtype == np.float32 and out.min() >= 0
    assert ser(ref, out) >= 60


def test_backend_choice():
    assert resolve_backend("auto", "cpu") == "numpy"
    assert resolve_backend("auto", None) == "numpy"  # nnabla's default context is the CPU
    assert resolve_backend("auto", "cudnn") == "nnabla"
    assert resolve_backend("nnabla", "cpu") == "nnabla"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("torch")


@pytest.mark.parametrize("sep", [SeparationConfig(niter=1),
                                 SeparationConfig(softmask=True, alpha=2.0, niter=0,
                                                  residual_model=True)])
@pytest.mark.parametrize("model_channels,audio_channels", [(2, 2), (2, 1), (1, 2)])
@pytest.mark.nnabla
def test_separator_paths_agree(sep, model_channels, audio_channels):
    cfg = tiny_config(nb_channels=model_channels)
    arrays = random_arrays(cfg, seed=2)
    audio = sine_mix(3000, cfg.sample_rate, audio_channels)
    fast = Separator(cfg, arrays, sep).separate(audio)
    ref = Separator(cfg, arrays, sep, backend="nnabla").separate(audio)
    assert set(fast) == set(ref)
    for name in ref:
        assert fast[name].shape == audio.shape
        assert ser(ref[name], fast[name]) >= 60, name


def _norbert(v, x, niter, softmask, alpha, residual):
    import norbert
    if softmask:
        v = v ** alpha
    x = x.astype(np.complex128)
    if residual:
        v = norbert.residual_model(v, x, alpha if softmask else 1)
    return norbert.wiener(v, x, niter, use_softmask=softmask)


@pytest.mark.parametrize("niter", [0, 1, 3])
@pytest.mark.parametrize("softmask,residual", [(False, False), (True, False), (False, True),
                                               (True, True)])
@pytest.mark.parametrize("channels,model_channels,level", [(2, 2, 30.0), (1, 1, 30.0),
                                                           (2, 1, 30.0), (2, 2, 0.1)])
def test_wiener_equals_norbert(niter, softmask, residual, channels, model_channels, level, rng):
    """Blocks of 7 frames (not dividing 30) give norbert's whole-input result."""
    x = level * (rng.standard_normal((30, 12, channels)) + 1j * rng.standard_normal((30, 12, channels)))
    v = (level * np.abs(rng.standard_normal((30, 12, model_channels, 3)))).astype(np.float32)
    alpha = 2.0 if softmask else 1.0
    ref = _norbert(v, x, niter, softmask, alpha, residual)
    out = wiener_separate(v, x, niter, softmask, alpha, residual, block=7)
    assert out.shape == ref.shape == (30, 12, channels, 3 + residual)
    assert ser(ref, out) >= 60


def test_wiener_dual_mono_is_stable(rng):
    """Identical channels make the mixture covariance singular up to norbert's tiny
    regularisation: the float64 closed form still gives norbert's result."""
    x = np.repeat(rng.standard_normal((20, 9, 1)) + 1j * rng.standard_normal((20, 9, 1)), 2, axis=2)
    v = np.repeat(np.abs(rng.standard_normal((20, 9, 1, 4))), 2, axis=2).astype(np.float32)
    out = wiener_separate(v, x, 2, block=6)
    assert np.all(np.isfinite(out))
    assert ser(_norbert(v, x, 2, False, 1.0, False), out) >= 60


def test_overlap_add_blocks_equal_istft(rng):
    spec = dsp.stft(rng.standard_normal((2, 1000)), 128, 32)
    ola = dsp.OverlapAdd(2, 128, 32, spec.shape[-1], 1000, np.float32)
    for start in range(0, spec.shape[-1], 5):
        ola.add(start, spec[:, :, start:start + 5].transpose(0, 2, 1))
    ref = dsp.istft(spec, 128, 32, 1000)
    assert ser(ref, ola.result().T) >= 100


# ------------------------------------------------------------------ parity, full size
PARITY_CONFIGS = {
    "default": SeparationConfig(),
    "softmask": SeparationConfig(softmask=True, alpha=2.0, niter=0, residual_model=True),
    "em3": SeparationConfig(niter=3),
}


@pytest.fixture(scope="module")
def parity_separator(parity_model):
    cfg, arrays = load_xumx(parity_model)
    return Separator(cfg, arrays)  # the default backend on a CPU context


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_fast_path_parity(parity_separator, name):
    import soundfile as sf
    audio, rate = sf.read(os.path.join(PARITY, "input.wav"), dtype="float32")
    official = np.load(os.path.join(PARITY, "official_seed0.npz"))
    sep = parity_separator.with_separation(PARITY_CONFIGS[name])
    assert sep.backend == "numpy"
    out = sep.separate(audio)
    keys = [k for k in official.files if k.startswith(name + "/")]
    assert sorted(k.split("/")[1] for k in keys) == sorted(out)
    for key in keys:
        ref = official[key]
        assert ser(ref, out[key.split("/")[1]][:ref.shape[0]]) >= 60, key
