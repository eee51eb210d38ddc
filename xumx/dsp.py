"""Short-time Fourier transforms, as pure functions.

All transforms use a periodic Hann window of ``n_fft`` samples, ``center=True`` with
reflection padding of ``n_fft // 2`` on each side and no normalisation: the convention of
nnabla's ``F.stft(..., window_type='hanning', center=True, pad_mode='reflect')`` that the
published X-UMX uses. A signal of T samples gives ``1 + T // n_hop`` frames.

Shapes use these names: ``nb_channels`` (C), ``nb_timesteps`` (T), ``nb_bins`` (F =
n_fft // 2 + 1), ``nb_frames`` (N).
"""
import numpy as np
import scipy.fft


STFT_BLOCK = 512  # frames windowed and transformed at once


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
    return np.ascontiguousarray(stft_frames(audio, n_fft, n_hop, dtype).transpose(0, 2, 1))


def stft_frames(audio: np.ndarray, n_fft: int, n_hop: int, dtype=np.complex128) -> np.ndarray:
    """:func:`stft` in frame-major layout. Shapes: audio (C, T) -> (C, N, F) complex."""
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ValueError(f"stft expects (nb_channels, nb_timesteps), got shape {audio.shape}")
    real = np.float32 if dtype == np.complex64 else np.float64
    pad = n_fft // 2
    n = nb_frames(audio.shape[1], n_hop)
    padded = np.pad(audio.astype(real, copy=False), ((0, 0), (pad, pad)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::n_hop][:, :n]
    window = hann(n_fft, real)
    out = np.empty((audio.shape[0], n, n_fft // 2 + 1), dtype)
    for start in range(0, n, STFT_BLOCK):  # windowed frames made a block at a time
        block = frames[:, start:start + STFT_BLOCK] * window
        out[:, start:start + STFT_BLOCK] = scipy.fft.rfft(block, axis=-1)
    return out


def istft(spec: np.ndarray, n_fft: int, n_hop: int, length: int) -> np.ndarray:
    """Inverse of :func:`stft` by windowed overlap-add, for a signal of ``length`` samples.

    Shapes: spec (C, F, N) complex -> (C, length) float64.
    Every sample of the original signal is restored, including the last ``length % n_hop``
    (the published code used ``scipy.signal.istft``, which drops them).
    """
    spec = np.asarray(spec)
    channels, bins, n = spec.shape
    ola = OverlapAdd(channels, n_fft, n_hop, n, length)
    ola.add(0, spec.transpose(0, 2, 1))
    return np.ascontiguousarray(ola.result().T)


class OverlapAdd:
    """The inverse STFT built incrementally from blocks of frames (bounded extra memory).

    Args: nb_channels (C), n_fft, n_hop, nb_frames (N) of the whole spectrogram, length of
    the signal to restore, dtype of the accumulated signal. The signal is accumulated
    sample-major, so :meth:`result` is a (length, C) view, not a copy.
    """

    def __init__(self, nb_channels: int, n_fft: int, n_hop: int, nb_frames: int, length: int,
                 dtype=np.float64):
        if n_fft + n_hop * (nb_frames - 1) < n_fft // 2 + length:
            raise ValueError(f"istft: {nb_frames} frames cannot give {length} samples")
        self.n_fft, self.n_hop, self.nb_frames, self.length = n_fft, n_hop, nb_frames, length
        self.window = hann(n_fft)
        self.out = np.zeros((n_fft + n_hop * (nb_frames - 1), nb_channels), dtype)

    def add(self, start: int, frames: np.ndarray):
        """Add frames start, start + 1, ... Shapes: frames (C, n, F) complex."""
        if frames.shape[-1] != self.n_fft // 2 + 1:
            raise ValueError(f"istft: {frames.shape[-1]} bins do not match n_fft={self.n_fft}")
        if self.out.dtype == np.float32:
            frames = frames.astype(np.complex64, copy=False)
        wav = scipy.fft.irfft(frames, n=self.n_fft, axis=-1)  # (C, n, n_fft)
        wav *= self.window.astype(wav.dtype)
        n, hop = wav.shape[1], self.n_hop
        if self.n_fft % hop:
            for k in range(n):
                pos = (start + k) * hop
                self.out[pos:pos + self.n_fft] += wav[:, k].T
            return
        hops = self.out.reshape(-1, hop, self.out.shape[1])[start:]  # (frames + R - 1, hop, C)
        for r in range(self.n_fft // hop):  # the r-th hop of every frame, all frames at once
            hops[r:r + n] += wav[:, :, r * hop:(r + 1) * hop].transpose(1, 2, 0)

    def result(self) -> np.ndarray:
        """The restored signal, (length, C), normalised by the summed squared window."""
        norm = np.zeros(self.out.shape[0])
        sq = self.window ** 2
        for k in range(self.nb_frames):
            norm[k * self.n_hop:k * self.n_hop + self.n_fft] += sq
        pad = self.n_fft // 2
        out, norm = self.out[pad:pad + self.length], norm[pad:pad + self.length]
        out /= np.where(norm > 1e-10, norm, 1.0).astype(out.dtype)[:, None]
        return out


def graph_spectrogram(x, n_fft: int, n_hop: int, with_complex: bool = True):
    """The STFT of audio as a differentiable nnabla graph, frame-major (the model's layout).

    Shapes: x Variable (B, C, T) -> mag (N, B, C, F), or (mag, real, imag) each (N, B, C, F)
    with ``with_complex``. On CPU contexts one FFT function (:mod:`xumx.kernels.spectral`),
    otherwise nnabla's ``F.stft`` and elementwise functions.
    """
    from . import kernels
    if kernels.enabled():
        from .kernels.spectral import spectrogram
        out = spectrogram(x, n_fft, n_hop, with_complex)
        return tuple(out) if with_complex else out
    import nnabla.functions as F
    real, imag = (F.transpose(v, (3, 0, 1, 2)) for v in graph_stft(x, n_fft, n_hop))
    mag = F.pow_scalar(real ** 2 + imag ** 2, 0.5)
    return (mag, real, imag) if with_complex else mag


def graph_masked_istft(mask, real, imag, n_fft: int, n_hop: int):
    """The inverse STFT of a masked spectrogram as a differentiable nnabla graph.

    Shapes: mask (N, B, C or 1, F), real and imag (N, B, C, F) -> (B, C, (N - 1) * n_hop).
    On CPU contexts one FFT function (:mod:`xumx.kernels.spectral`), otherwise nnabla's
    ``F.istft`` of the masked parts.
    """
    from . import kernels
    if kernels.enabled():
        from .kernels.spectral import masked_istft
        return masked_istft(mask, real, imag, n_fft, n_hop)
    import nnabla.functions as F
    to_bcfn = (1, 2, 3, 0)
    return graph_istft(F.transpose(real * mask, to_bcfn), F.transpose(imag * mask, to_bcfn), n_fft, n_hop)


def graph_stft(x, n_fft: int, n_hop: int):
    """The same STFT as :func:`stft` with nnabla's ``F.stft`` (the reference of the kernels).

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
