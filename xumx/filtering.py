"""Multichannel Wiener post-filtering of source spectrogram estimates (norbert 0.2.1 semantics).

A blockwise re-implementation of ``norbert.wiener`` (and ``norbert.residual_model``) that
gives norbert's results (to rounding) in bounded memory. norbert's EM estimates each source's
spatial covariance R_j from *all* frames, its residual model scales the estimates by gains
summed over all frames, and it rescales the mixture by its global maximum; all three are
whole-input statistics. Here they are accumulated in passes over blocks of frames: the
estimate y^(k) of a frame depends only on that frame's mixture and model and on the global
R^(k), so each pass recomputes a block's estimates from the stored (small) R's instead of
keeping a (frames, bins, channels, sources) complex array alive. With ``niter`` EM iterations
this costs niter (niter + 1) / 2 block EM steps instead of niter (the default niter = 1: the
same work), and the extra memory is a few block-sized arrays.

Stereo and mono use closed-form inverses of the (Hermitian) mixture covariances, and the
filter is applied as ``y_j = v_j R_j (Cxx^-1 x)`` without forming the gain matrices. The EM
runs in float64 as norbert does with a complex128 mixture: on dual-mono input the mixture
covariance is singular up to norbert's regularisation, and float32 cannot resolve that.

Shapes: ``nb_frames`` (N), ``nb_bins`` (F), ``nb_channels`` (C), ``nb_sources`` (S).
"""
import os
from typing import Iterator, Tuple

import numpy as np

BLOCK_FRAMES = 64  # frames per block: with F = 2049, C = 2, S = 5, ~10 MB per complex array
WORKERS = min(2, os.cpu_count() or 1)  # blocks computed at once, on threads
STEREO = 2  # channels for which the closed-form 2x2 inverse is used


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


def wiener_blocks(v: np.ndarray, x: np.ndarray, niter: int = 1, softmask: bool = False,
                  alpha: float = 1.0, residual: bool = False, block: int = BLOCK_FRAMES
                  ) -> Iterator[Tuple[int, int, np.ndarray]]:
    """:func:`wiener_separate` on source-major arrays, block by block, in frame order.

    Shapes: v (S, N, {1, C}, F), x (N, C, F) complex -> yields (start, stop, y) with
    y (S [+ 1], stop - start, C, F) complex128, the estimates of frames start:stop.
    """
    if v.ndim != 4 or x.ndim != 3 or v.shape[1] != x.shape[0] or v.shape[3] != x.shape[2] \
            or v.shape[2] not in (1, x.shape[1]):
        raise ValueError(f"wiener: v must be (S, N, {{1, C}}, F) and x (N, C, F), "
                         f"got {v.shape} and {x.shape}")
    n = x.shape[0]
    block = max(1, int(block))
    blocks = [(s, min(n, s + block)) for s in range(0, n, block)]
    power = alpha if softmask else 1.0
    eps = np.finfo(np.float64).eps  # norbert's, from the complex128 mixture

    def source_model(a, b):
        vb = np.ascontiguousarray(v[:, a:b])
        return vb ** alpha if softmask else vb

    def model(a, b):
        """Source model of frames a:b: (S [+ 1], b - a, C or 1, F)."""
        vb = source_model(a, b)
        return _residual(vb, x[a:b], power, gain) if residual else vb

    gain = None
    if residual:  # norbert.residual_model's gain: sums over all frames
        num = den = 0.0
        for a, b in blocks:
            vb = source_model(a, b)
            r_eps = np.finfo(vb.dtype).eps
            total = vb.sum(axis=0)
            num = num + np.sum(np.maximum(r_eps, np.abs(x[a:b]) ** power) * total, axis=0)
            den = den + np.sum(total.astype(np.float64) ** 2, axis=0)
        gain = num / (r_eps + den)  # (C, F)

    def initial(a, b, scale):
        """norbert's initial estimates of frames a:b, divided by ``scale``, and the mixture."""
        vb = model(a, b)
        xb = x[a:b].astype(np.complex128)
        if scale != 1:
            xb /= scale
        if softmask:
            y = (vb / (eps + vb.sum(axis=0))) * xb
        else:  # mixture phase: exp(1j * angle(x)), 1 where x = 0
            mag = np.abs(xb)
            nz = mag > 0
            phase = np.where(nz, xb / np.where(nz, mag, 1.0), 1.0)
            y = vb * (phase / scale if scale != 1 else phase)
        return y, xb

    if not niter:
        for a, b in blocks:
            yield a, b, initial(a, b, 1.0)[0]
        return

    scale = 1.0
    for a, b in blocks:
        scale = max(scale, float(np.abs(x[a:b]).max(initial=0.0)) / 10.0)

    covs = []  # R^(k), each (S, C, C, F)

    def estimate(ab):
        y, xb = initial(ab[0], ab[1], scale)
        for cov in covs:
            y = _em_step(y, xb, cov, eps)
        return y

    for _ in range(int(niter)):
        num = den = 0.0
        for stats in _ordered_map(lambda ab: _covariance_sums(estimate(ab)), blocks):
            num = num + stats[0]
            den = den + stats[1]
        covs.append(num / (eps + den)[:, None, None, :])
    for (a, b), y in zip(blocks, _ordered_map(estimate, blocks)):
        if scale != 1:
            y *= scale
        yield a, b, y


def _ordered_map(fn, items, workers: int = WORKERS):
    """``map(fn, items)`` on a few threads (numpy releases the GIL in its array loops), in
    order, with at most ``workers`` results pending, so memory stays a few blocks."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _residual(vb, xb, power, gain):
    """norbert.residual_model on a block, with the whole-input gain (C, F).

    Shapes: vb (S, n, {1, C}, F), xb (n, C, F) -> (S + 1, n, C, F). As norbert 0.2.1, the
    residual subtracts the *unscaled* model.
    """
    r_eps = np.finfo(vb.dtype).eps
    vx = np.maximum(r_eps, np.abs(xb) ** power)
    vr = np.maximum(0, vx - vb.sum(axis=0))
    scaled = vb * gain
    return np.concatenate((scaled, vr[None].astype(scaled.dtype)), axis=0)


def _power(y):
    """Shapes: complex (...) -> |y|^2 (...) float64."""
    return y.real ** 2 + y.imag ** 2


def _covariance_sums(y):
    """Frame sums of each source's empirical covariance and power.

    Shapes: y (S, n, C, F) -> (sum_n y y^H (S, C, C, F), sum_n mean_c |y|^2 (S, F)).
    """
    ns, _, c, bins = y.shape
    out = np.empty((ns, c, c, bins), np.complex128)
    for i in range(c):
        out[:, i, i] = _power(y[:, :, i]).sum(axis=1)
        for j in range(i + 1, c):
            out[:, i, j] = (y[:, :, i] * y[:, :, j].conj()).sum(axis=1)
            out[:, j, i] = out[:, i, j].conj()
    return out, sum(out[:, i, i].real for i in range(c)) / c


def _em_step(y, x, cov, eps):
    """One E-step of norbert's EM with fixed spatial covariances: y_j = v_j R_j Cxx^-1 x.

    Shapes: y (S, n, C, F) current estimates, x (n, C, F), cov (S, C, C, F)
    -> new estimates (S, n, C, F) complex128.
    """
    ns, _, c, _ = y.shape
    vj = _power(y).mean(axis=2)  # (S, n, F)
    reg = np.float32(np.sqrt(eps))  # norbert adds sqrt(eps) as complex64
    out = np.empty(y.shape, np.complex128)
    if c == 1:
        cxx = sum(vj[s] * cov[s, 0, 0].real for s in range(ns)) + reg
        z = x[:, 0] / (cxx + eps)
        for s in range(ns):
            np.multiply(vj[s] * cov[s, 0, 0], z, out=out[s, :, 0])
        return out
    if c == STEREO:
        r00, r01, r11 = cov[:, 0, 0].real, cov[:, 0, 1], cov[:, 1, 1].real
        c00 = sum(vj[s] * r00[s] for s in range(ns)) + reg
        c11 = sum(vj[s] * r11[s] for s in range(ns)) + reg
        c01 = sum(vj[s] * r01[s] for s in range(ns))
        det = c00 * c11 - _power(c01)
        z0 = (c11 * x[:, 0] - c01 * x[:, 1]) / det  # Cxx^-1 x, closed form
        z1 = (c00 * x[:, 1] - c01.conj() * x[:, 0]) / det
        for s in range(ns):
            np.multiply(vj[s], r00[s] * z0 + r01[s] * z1, out=out[s, :, 0])
            np.multiply(vj[s], r01[s].conj() * z0 + r11[s] * z1, out=out[s, :, 1])
        return out
    cxx = np.einsum("snf,sijf->nfij", vj, cov) + reg * np.eye(c)
    z = np.einsum("nfij,njf->nif", np.linalg.pinv(cxx, eps), x)
    return vj[:, :, None] * np.einsum("sijf,njf->snif", cov, z)
