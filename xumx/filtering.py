"""Multichannel Wiener post-filtering of source spectrogram estimates (norbert 0.2.1 semantics).

Shapes: ``nb_frames`` (N), ``nb_bins`` (F), ``nb_channels`` (C), ``nb_sources`` (S).
"""
import numpy as np


def wiener_separate(v: np.ndarray, x: np.ndarray, niter: int = 1, softmask: bool = False,
                    alpha: float = 1.0, residual: bool = False) -> np.ndarray:
    """Complex source estimates from magnitude estimates and the mixture STFT.

    As the published X-UMX: with ``softmask`` the estimates are first raised to ``alpha``;
    with ``residual`` a residual source (spectral subtraction, norbert's
    ``residual_model``) is appended; then ``norbert.wiener`` with ``niter`` EM iterations,
    starting from the mixture phase (or from soft masks with ``softmask``).

    Shapes: v (N, F, {1, C}, S) non-negative, x (N, F, C) complex
    -> (N, F, C, S [+ 1 with residual]) complex128.
    """
    import norbert
    v = np.asarray(v)
    if softmask:
        v = v ** alpha
    x = np.asarray(x).astype(np.complex128)  # a copy: norbert rescales x in place
    if residual:
        v = norbert.residual_model(v, x, alpha if softmask else 1)
    return norbert.wiener(v, x, int(niter), use_softmask=softmask)
