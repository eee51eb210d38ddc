"""The STFT and inverse STFT as differentiable nnabla graphs (training's front and back end).

The same transform as :mod:`xumx.dsp` (periodic Hann window, centred, reflect padding, no
normalisation): on CPU contexts one FFT function each (:mod:`xumx.training.kernels.spectral`),
elsewhere nnabla's ``F.stft``/``F.istft`` (also the kernels' reference).
"""
import numpy as np


def graph_spectrogram(x, n_fft: int, n_hop: int, with_complex: bool = True):
    """The STFT of audio as a differentiable nnabla graph, frame-major (the model's layout).

    Shapes: x Variable (B, C, T) -> mag (N, B, C, F), or (mag, real, imag) each (N, B, C, F)
    with ``with_complex``. On CPU contexts one FFT function (:mod:`xumx.training.kernels.spectral`),
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
    On CPU contexts one FFT function (:mod:`xumx.training.kernels.spectral`), otherwise nnabla's
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
    """The same STFT as :func:`xumx.dsp.stft_frames` with nnabla's ``F.stft`` (the reference of the kernels).

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
