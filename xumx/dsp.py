"""Short-time Fourier transforms, as pure functions.

All transforms use a periodic Hann window of ``n_fft`` samples, ``center=True`` with
reflection padding of ``n_fft // 2`` on each side and no normalisation: the convention of
nnabla's ``F.stft(..., window_type='hanning', center=True, pad_mode='reflect')`` that the
published X-UMX uses. A signal of T samples gives ``1 + T // n_hop`` frames.

Shapes use these names: ``nb_channels`` (C), ``nb_timesteps`` (T), ``nb_bins`` (F =
n_fft // 2 + 1), ``nb_frames`` (N).
"""
import numpy as np


def hann(n_fft: int, dtype=np.float64) -> np.ndarray:
    """Periodic Hann window (numpy's symmetric window of n_fft + 1 points, last dropped)."""
    return np.hanning(n_fft + 1)[:-1].astype(dtype)


def nb_frames(nb_timesteps: int, n_hop: int) -> int:
    """Frames of a centred STFT of ``nb_timesteps`` samples."""
    return 1 + nb_timesteps // n_hop


def stft(audio: np.ndarray, n_fft: int, n_hop: int, dtype=np.complex128) -> np.ndarray:
    """Centred, reflect-padded STFT of a multichannel signal.

    Shapes: audio (C, T) -> (C, F, N) complex.
    Signals shorter than n_fft // 2 + 1 samples are reflected as often as needed
    (numpy's ``reflect`` mode repeats the reflection), where nnabla would refuse them.
    """
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ValueError(f"stft expects (nb_channels, nb_timesteps), got shape {audio.shape}")
    real = np.float32 if dtype == np.complex64 else np.float64
    pad = n_fft // 2
    n = nb_frames(audio.shape[1], n_hop)
    padded = np.pad(audio.astype(real, copy=False), ((0, 0), (pad, pad)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::n_hop][:, :n]
    spec = np.fft.rfft(frames * hann(n_fft, real), axis=-1)  # (C, N, F)
    return np.ascontiguousarray(spec.transpose(0, 2, 1)).astype(dtype, copy=False)


def istft(spec: np.ndarray, n_fft: int, n_hop: int, length: int) -> np.ndarray:
    """Inverse of :func:`stft` by windowed overlap-add, for a signal of ``length`` samples.

    Shapes: spec (C, F, N) complex -> (C, length) float64.
    Every sample of the original signal is restored, including the last ``length % n_hop``
    (the published code used ``scipy.signal.istft``, which drops them).
    """
    spec = np.asarray(spec)
    channels, bins, n = spec.shape
    if bins != n_fft // 2 + 1:
        raise ValueError(f"istft: {bins} bins do not match n_fft={n_fft}")
    window = hann(n_fft)
    frames = np.fft.irfft(spec.transpose(0, 2, 1), n=n_fft, axis=-1) * window  # (C, N, n_fft)
    total = n_fft + n_hop * (n - 1)
    out = np.zeros((channels, total))
    norm = np.zeros(total)
    for k in range(n):
        out[:, k * n_hop:k * n_hop + n_fft] += frames[:, k]
        norm[k * n_hop:k * n_hop + n_fft] += window ** 2
    pad = n_fft // 2
    out, norm = out[:, pad:pad + length], norm[pad:pad + length]
    if out.shape[1] < length:
        raise ValueError(f"istft: {n} frames cannot give {length} samples")
    return out / np.where(norm > 1e-10, norm, 1.0)


def graph_stft(x, n_fft: int, n_hop: int):
    """The same STFT as a differentiable nnabla graph (for training).

    Shapes: x Variable (B, C, T) -> (real, imag), each (B, C, F, N).
    """
    import nnabla.functions as F
    batch, channels, _ = x.shape
    real, imag = F.stft(F.reshape(x, (batch * channels, -1)), n_fft, n_hop, n_fft,
                        window_type="hanning", center=True, pad_mode="reflect")
    shape = (batch, channels, n_fft // 2 + 1, real.shape[-1])
    return F.reshape(real, shape), F.reshape(imag, shape)


def graph_istft(real, imag, n_fft: int, n_hop: int):
    """nnabla inverse STFT of (…, F, N) real/imag parts -> (…, (N - 1) * n_hop) samples."""
    import nnabla.functions as F
    lead = real.shape[:-2]
    shape = (int(np.prod(lead)),) + real.shape[-2:]
    y = F.istft(F.reshape(real, shape), F.reshape(imag, shape), n_fft, n_hop, n_fft,
                window_type="hanning", center=True, pad_mode="constant")
    return F.reshape(y, lead + (y.shape[-1],))
