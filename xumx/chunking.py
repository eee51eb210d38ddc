"""Separation of long signals in overlapping chunks, blended with a raised-cosine cross-fade.

The signal is cut into chunks of ``chunk`` samples whose starts are ``chunk - overlap`` apart;
the last chunk ends at the end of the signal and overlaps its neighbour by at least ``overlap``.
Inside each overlap the earlier chunk fades out with cos² and the later one fades in with sin²
(they sum to 1), so an identity separator reconstructs its input exactly and there are no seams.
The separating function is any callable ``audio (t, C) -> {name: (t, C')}``: the chunking does
not know how masks are computed, and the caller builds the network once and reuses it.
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np


def chunk_bounds(nb_samples: int, chunk: int, overlap: int) -> List[Tuple[int, int]]:
    """[start, end) of each chunk. ``chunk <= 0`` or ``chunk >= nb_samples``: one chunk.

    >>> chunk_bounds(10, 4, 1)
    [(0, 4), (3, 7), (6, 10)]
    """
    if nb_samples <= 0:
        raise ValueError(f"nothing to chunk: {nb_samples} samples")
    if chunk <= 0 or chunk >= nb_samples:
        return [(0, nb_samples)]
    if not 0 <= 2 * overlap < chunk:
        raise ValueError(f"overlap ({overlap}) must be less than half the chunk ({chunk})")
    hop = chunk - overlap
    bounds = [(0, chunk)]
    while bounds[-1][1] < nb_samples:
        start = bounds[-1][0] + hop
        bounds.append((start, min(start + chunk, nb_samples)))
    return bounds


def fade_in(overlap: int) -> np.ndarray:
    """Raised-cosine ramp of ``overlap`` samples, (overlap,) float64; ``fade_in + fade_in[::-1] == 1``."""
    return np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2


def chunk_weights(bounds: List[Tuple[int, int]], index: int) -> np.ndarray:
    """Cross-fade weights of chunk ``index``, shape (end - start,) float64.

    Ramps cover the samples shared with the previous/next chunk; the weights of all chunks
    sum to exactly 1 at every sample (up to rounding).
    """
    start, end = bounds[index]
    w = np.ones(end - start)
    if index > 0:
        shared = bounds[index - 1][1] - start
        w[:shared] *= fade_in(shared)
    if index + 1 < len(bounds):
        shared = end - bounds[index + 1][0]
        w[len(w) - shared:] *= fade_in(shared)[::-1]
    return w


def separate_chunked(separate: Callable[[np.ndarray], Dict[str, np.ndarray]], audio: np.ndarray,
                     chunk: int, overlap: int,
                     progress: Optional[Callable[[int], None]] = None) -> Dict[str, np.ndarray]:
    """Run ``separate`` on overlapping chunks of ``audio`` and cross-fade the results.

    Shapes: audio (T, C) -> {name: (T, C') float32}, exactly T samples per output.
    ``chunk``/``overlap`` are in samples (``chunk <= 0``: the whole signal in one call, whose
    result is returned as is). ``progress(1)`` is called after each chunk.
    """
    nb = audio.shape[0]
    bounds = chunk_bounds(nb, chunk, overlap)
    out: Dict[str, np.ndarray] = {}
    for i, (start, end) in enumerate(bounds):
        est = separate(audio[start:end])
        if len(bounds) == 1:
            out = {k: np.asarray(v, dtype=np.float32) for k, v in est.items()}
        else:
            w = chunk_weights(bounds, i)[:, None]
            for name, y in est.items():
                if y.shape[0] != end - start:
                    raise ValueError(f"separator returned {y.shape[0]} samples for a chunk of "
                                     f"{end - start}")
                if name not in out:
                    out[name] = np.zeros((nb,) + y.shape[1:], dtype=np.float32)
                out[name][start:end] += (w * y).astype(np.float32)
        if progress is not None:
            progress(1)
    return out
