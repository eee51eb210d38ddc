"""STFT/ISTFT: round trip, agreement with scipy and nnabla, a known answer."""
import numpy as np
import pytest
import scipy.signal

import oracles
from xumx import dsp


@pytest.mark.parametrize("n_fft,n_hop", [(256, 64), (512, 128), (256, 128)])
@pytest.mark.parametrize("length", [1000, 1024, 3001])
def test_round_trip_restores_every_sample(n_fft, n_hop, length, rng):
    x = rng.standard_normal((2, length))
    spec = oracles.stft(x, n_fft, n_hop)
    assert spec.shape == (2, n_fft // 2 + 1, 1 + length // n_hop)
    y = oracles.istft(spec, n_fft, n_hop, length)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-10)


@pytest.mark.parametrize("length", [1, 5, 63, 200])
def test_round_trip_shorter_than_a_window(length, rng):
    x = rng.standard_normal((1, length))
    y = oracles.istft(oracles.stft(x, 256, 64), 256, 64, length)
    np.testing.assert_allclose(y, x, atol=1e-10)


def test_stft_matches_scipy(rng):
    n_fft, n_hop, length = 256, 64, 2000
    x = rng.standard_normal((2, length))
    ours = oracles.stft(x, n_fft, n_hop)
    # scipy's 'even' extension is numpy's reflect padding; 'spectrum' scaling divides by sum(w)
    _, _, ref = scipy.signal.stft(x, nperseg=n_fft, noverlap=n_fft - n_hop, window="hann",
                                  boundary="even", padded=True)
    ref = ref[..., :ours.shape[-1]] * dsp.hann(n_fft).sum()
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_istft_matches_scipy_where_scipy_has_samples(rng):
    n_fft, n_hop, length = 256, 64, 2000
    spec = oracles.stft(rng.standard_normal((2, length)), n_fft, n_hop)
    _, ref = scipy.signal.istft(spec / dsp.hann(n_fft).sum(), nperseg=n_fft,
                                noverlap=n_fft - n_hop, window="hann", boundary=True)
    ours = oracles.istft(spec, n_fft, n_hop, length)
    assert ref.shape[-1] == (length // n_hop) * n_hop < length  # scipy drops the tail
    np.testing.assert_allclose(ours[:, :ref.shape[-1]], ref, atol=1e-9)


@pytest.mark.nnabla
def test_stft_matches_nnabla_graph(rng):
    import nnabla as nn
    x = rng.standard_normal((1, 2, 1500)).astype(np.float32)
    with nn.auto_forward():
        from xumx.training.stft import graph_stft
        real, imag = graph_stft(nn.Variable.from_numpy_array(x), 256, 64)
    ours = oracles.stft(x[0], 256, 64)
    np.testing.assert_allclose(real.d[0], ours.real, atol=2e-4)
    np.testing.assert_allclose(imag.d[0], ours.imag, atol=2e-4)


def test_sine_peaks_at_its_bin():
    n_fft, n_hop, k, amp = 256, 64, 20, 0.7
    t = np.arange(4096)
    x = amp * np.cos(2 * np.pi * k * t / n_fft)[None]
    mag = np.abs(oracles.stft(x, n_fft, n_hop))[0]
    interior = mag[:, 4:-4]
    assert np.all(interior.argmax(axis=0) == k)
    # a centred cosine gives amp * sum(window) / 2 at its bin
    np.testing.assert_allclose(interior[k], amp * dsp.hann(n_fft).sum() / 2, rtol=1e-6)


def test_istft_rejects_wrong_bins():
    with pytest.raises(ValueError, match="bins"):
        oracles.istft(np.zeros((1, 10, 5), complex), 256, 64, 100)
