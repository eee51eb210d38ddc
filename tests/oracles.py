"""Oracles: simple whole-signal versions of what the package does in blocks, for tests to check
the blocked code against (not part of the package).

- :func:`stft` / :func:`istft`: the STFT pair of :mod:`xumx.dsp` on whole signals;
- :func:`wiener_separate`: :func:`xumx.filtering.wiener_blocks` gathered into one array
  (norbert's layout, checked against norbert itself);
- :func:`load`, :func:`resample`, :func:`write`: decoding, resampling and writing whole signals.
"""
from fractions import Fraction
from typing import Optional

import numpy as np

from xumx.decode import AudioInfo, probe, stream
from xumx.dsp import OverlapAdd, stft_frames
from xumx.encode import write_stems
from xumx.filtering import BLOCK_FRAMES, wiener_blocks
from xumx.config import OutputConfig


def stft(audio: np.ndarray, n_fft: int, n_hop: int, dtype=np.complex128) -> np.ndarray:
    """Centred, reflect-padded STFT of a multichannel signal.

    Shapes: audio (C, T) -> (C, F, N) complex.
    Signals shorter than n_fft // 2 + 1 samples are reflected as often as needed
    (numpy's ``reflect`` mode repeats the reflection), where nnabla would refuse them.
    """
    return np.ascontiguousarray(stft_frames(audio, n_fft, n_hop, dtype).transpose(0, 2, 1))



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



def wiener_separate(v: np.ndarray, x: np.ndarray, niter: int = 1, softmask: bool = False,
                    alpha: float = 1.0, residual: bool = False, block: int = BLOCK_FRAMES,
                    dtype=np.complex128) -> np.ndarray:
    """Complex source estimates from magnitude estimates and the mixture STFT.

    As the published X-UMX: with ``softmask`` the estimates are first raised to ``alpha``;
    with ``residual`` a residual source (spectral subtraction, norbert's
    ``residual_model``) is appended; then norbert's ``wiener`` with ``niter`` EM iterations,
    starting from the mixture phase (or from soft masks with ``softmask``).

    Shapes: v (N, F, {1, C}, S) non-negative, x (N, F, C) complex
    -> (N, F, C, S [+ 1 with residual]) of ``dtype``.
    """
    v, x = np.asarray(v), np.asarray(x)
    if v.ndim != 4 or x.ndim != 3:
        raise ValueError(f"wiener: v must be (N, F, {{1, C}}, S) and x (N, F, C), "
                         f"got {v.shape} and {x.shape}")
    out = None
    for start, stop, y in wiener_blocks(v.transpose(3, 0, 2, 1), x.transpose(0, 2, 1), niter,
                                        softmask, alpha, residual, block):
        if out is None:
            out = np.empty(x.shape + (y.shape[0],), dtype)
        out[start:stop] = y.transpose(1, 3, 2, 0)
    return out



def load(path: str, start: float = 0.0, duration: float = -1.0, info: Optional[AudioInfo] = None):
    """Decode ``path`` (or its span ``start``/``duration``) whole; see :func:`stream`.

    Returns (audio (T, C) float32 with C = 1 or 2, rate, info).
    """
    info = info or probe(path)
    audio = np.concatenate(list(stream(path, start, duration, info, block=1 << 18)), axis=0)
    return audio, info.rate, info


def resample(audio: np.ndarray, rate_in: int, rate_out: int, length: Optional[int] = None):
    """Polyphase resampling (scipy ``resample_poly`` with the exact rational ratio).

    Shapes: audio (T, C) -> (T', C) float32 with T' = ``length`` when given, else
    ceil(T * rate_out / rate_in). Equal rates return the input (trimmed/padded to ``length``).
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, not {rate_in} -> {rate_out}")
    if rate_in != rate_out:
        from scipy.signal import resample_poly
        ratio = Fraction(int(rate_out), int(rate_in))
        audio = resample_poly(audio, ratio.numerator, ratio.denominator, axis=0)
    if length is not None:
        if audio.shape[0] >= length:
            audio = audio[:length]
        else:
            audio = np.pad(audio, ((0, length - audio.shape[0]), (0, 0)))
    return np.ascontiguousarray(audio, dtype=np.float32)


def write(path: str, audio: np.ndarray, rate: int, fmt: str = OutputConfig.out_format,
          bits: Optional[str] = OutputConfig.bits, bitrate: Optional[int] = OutputConfig.bitrate):
    """Write one file atomically (:func:`write_stems`). Shapes: audio (T, C)."""
    write_stems({path: audio}, rate, fmt, bits, bitrate)
