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
from typing import Callable, Iterator, Optional, Tuple

import numpy as np

BLOCK_FRAMES = 32  # frames per block: with F = 2049, C = 2, S = 5, ~5 MB per complex array
WORKERS = min(2, os.cpu_count() or 1)  # blocks computed at once, on threads
STEREO = 2  # channels for which the closed-form 2x2 inverse is used


def wiener_blocks(v: np.ndarray, x: np.ndarray, niter: int = 1, softmask: bool = False,
                  alpha: float = 1.0, residual: bool = False, block: int = BLOCK_FRAMES,
                  post: Optional[Callable[[np.ndarray], object]] = None,
                  dtype=np.complex128, peak: Optional[float] = None
                  ) -> Iterator[Tuple[int, int, object]]:
    """The Wiener filter on source-major arrays, block by block, in frame order.

    Shapes: v (S, N, {1, C}, F), x (N, C, F) complex -> yields (start, stop, y) with
    y (S [+ 1], stop - start, C, F) of ``dtype`` (complex), the estimates of frames
    start:stop, or ``post(y)`` (computed on the worker threads with the estimates).
    ``x`` may be any object with ``shape`` whose slices ``x[a:b]`` of frames are arrays (e.g.
    :class:`xumx.dsp.StftFrames`, which makes them when asked); ``peak``: the largest |x|
    when the caller knows it, else a pass over x finds it.

    norbert's initial estimates are y_j = a_j u with real a_j and a complex u shared by the
    sources (a_j = v_j, u = the mixture's phase; with softmask a_j = v_j / sum v, u = x), so
    the first iteration's statistics (sum_n y y^H, |y|^2) are formed from a_j a_j' and u u^H
    without making the complex y_j.
    """
    if v.ndim != 4 or len(x.shape) != 3 or v.shape[1] != x.shape[0] \
            or v.shape[3] != x.shape[2] or v.shape[2] not in (1, x.shape[1]):
        raise ValueError(f"wiener: v must be (S, N, {{1, C}}, F) and x (N, C, F), "
                         f"got {v.shape} and {x.shape}")
    n = x.shape[0]
    block = max(1, int(block))
    blocks = [(s, min(n, s + block)) for s in range(0, n, block)]
    power = alpha if softmask else 1.0
    eps = np.finfo(np.float64).eps  # norbert's, from the complex128 mixture
    post = post or (lambda y: y)

    def source_model(a, b):
        vb = np.ascontiguousarray(v[:, a:b])
        return vb ** alpha if softmask else vb

    def model(a, b, xb):
        """Source model of frames a:b (xb: their mixture): (S [+ 1], b - a, C or 1, F)."""
        vb = source_model(a, b)
        return _residual(vb, xb, power, gain) if residual else vb

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

    def mixture(a, b, scale):
        """The mixture of frames a:b / scale, (n, C, F) complex128."""
        xb = x[a:b].astype(np.complex128)
        if scale != 1:
            xb /= scale
        return xb

    def factors(a, b, scale, phase=True):
        """norbert's initial estimates of frames a:b divided by ``scale`` as y = f u:
        (f (S', n, {1, C}, F) float64, u (n, C, F) complex128, or with a mixture phase and
        not ``phase`` the number |u|, which is all the E-step needs), and the mixture / scale."""
        vb = model(a, b, x[a:b]).astype(np.float64)
        xb = mixture(a, b, scale)
        if softmask:
            return vb / (eps + vb.sum(axis=0)), xb, xb
        if not phase:
            return vb, 1.0 / scale, xb
        mag = np.abs(xb)   # mixture phase: exp(1j * angle(x)), 1 where x = 0
        u = np.ones_like(xb)
        np.divide(xb, mag, out=u, where=mag > 0)
        return vb, (u / scale if scale != 1 else u), xb

    if not niter:
        for a, b in blocks:
            f, u, _ = factors(a, b, 1.0)
            yield a, b, post((f * u[None]).astype(dtype, copy=False))
        return

    if peak is None:
        peak = max(float(np.abs(x[a:b]).max(initial=0.0)) for a, b in blocks)
    scale = max(1.0, peak / 10.0)

    covs = []  # R^(k), each (S, C, C, F)
    # with the mixture's phase, every pass after the first needs of the initial estimates
    # only each frame's power, mean_c v^2: kept from the first pass (float32, half of v's
    # size) rather than made from v again (which may be computed when sliced, as the
    # network's source magnitudes are: :class:`xumx.engine.SourceMagnitudes`)
    kept = None if softmask or residual else np.empty((v.shape[0], n, v.shape[3]), np.float32)

    def statistics(ab):
        if covs:
            return _covariance_sums(estimate(*first_power(*ab)))
        f, u, xb = factors(ab[0], ab[1], scale)
        if kept is not None:
            kept[:, ab[0]:ab[1]] = (f ** 2).mean(axis=2)
        return _factor_sums(f, u, None if softmask else scale ** -2)   # |u| = 1 / scale

    def first_power(a, b):
        """(mean_c |y^(0)|^2 of frames a:b (S', n, F) float64, the mixture / scale)."""
        if kept is not None:
            return kept[:, a:b] * (1.0 / scale) ** 2, mixture(a, b, scale)
        f, u, xb = factors(a, b, scale, phase=False)
        return _factor_power(f, u), xb

    def estimate(vj0, xb, dtype=np.complex128):
        y = None
        for k, cov in enumerate(covs):
            vj = vj0 if k == 0 else _power(y).mean(axis=2)
            y = _em_step(vj, xb, cov, eps, dtype if k == len(covs) - 1 else np.complex128)
        return y

    for _ in range(int(niter)):
        num = den = 0.0
        for stats in _ordered_map(statistics, blocks):
            num = num + stats[0]
            den = den + stats[1]
        covs.append(num / (eps + den)[:, None, None, :])

    def final(ab):
        y = estimate(*first_power(*ab), dtype=dtype)
        if scale != 1:
            y *= scale
        return post(y)

    for (a, b), y in zip(blocks, _ordered_map(final, blocks)):
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


def _factor_sums(f, u, power: Optional[float] = None):
    """:func:`_covariance_sums` of y = f u. Shapes: f (S, n, {1, C}, F) real, u (n, C, F);
    ``power``: |u|^2 when it is the same everywhere (a phase over a scale), else None."""
    ns, _, cm, bins = f.shape
    c = u.shape[1]
    out = np.empty((ns, c, c, bins), np.complex128)
    for i in range(c):
        fi = f[:, :, min(i, cm - 1)]
        out[:, i, i] = _weighted_frame_sum(fi * fi, _power(u[:, i])) if power is None \
            else np.einsum("snf,snf->sf", fi, fi) * power
        for j in range(i + 1, c):
            uu = u[:, i] * u[:, j].conj()
            ff = fi * f[:, :, min(j, cm - 1)]
            out[:, i, j].real = _weighted_frame_sum(ff, uu.real)
            out[:, i, j].imag = _weighted_frame_sum(ff, uu.imag)
            out[:, j, i] = out[:, i, j].conj()
    return out, sum(out[:, i, i].real for i in range(c)) / c


def _weighted_frame_sum(w, p):
    """Shapes: w (S, n, F), p (n, F) real -> sum_n w p (S, F)."""
    return np.einsum("snf,nf->sf", w, p)


def _factor_power(f, u):
    """mean_c |y_c|^2 of y = f u. Shapes: f (S, n, {1, C}, F), u (n, C, F) complex or a
    number (|u|, the same everywhere) -> (S, n, F)."""
    if np.isscalar(u):
        return (f ** 2).mean(axis=2) * u ** 2
    pu = _power(u)
    if f.shape[2] == 1:
        return f[:, :, 0] ** 2 * pu.mean(axis=1)
    return (f ** 2 * pu).mean(axis=2)


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


def _em_step(vj, x, cov, eps, dtype=np.complex128):
    """One E-step of norbert's EM with fixed spatial covariances: y_j = v_j R_j Cxx^-1 x.

    Shapes: vj (S, n, F) power of the current estimates (mean over channels of |y|^2),
    x (n, C, F), cov (S, C, C, F) -> new estimates (S, n, C, F) of ``dtype``. The mixture
    covariance and its inverse are float64 (see the module docstring).
    """
    ns, n, bins = vj.shape
    c = x.shape[1]
    reg = np.float32(np.sqrt(eps))  # norbert adds sqrt(eps) as complex64
    out = np.empty((ns, n, c, bins), dtype)
    if c == 1:
        r = cov[:, 0, 0].real
        z = x[:, 0] / (_weighted_source_sum(vj, r) + reg + eps)
        for s in range(ns):
            np.multiply(vj[s] * r[s], z, out=out[s, :, 0])
        return out
    if c == STEREO:
        r00, r01, r11 = cov[:, 0, 0].real, cov[:, 0, 1], cov[:, 1, 1].real
        c00 = _weighted_source_sum(vj, r00) + reg
        c11 = _weighted_source_sum(vj, r11) + reg
        c01 = np.empty((n, bins), np.complex128)
        c01.real = _weighted_source_sum(vj, r01.real)
        c01.imag = _weighted_source_sum(vj, r01.imag)
        det = c00 * c11 - _power(c01)
        z0 = (c11 * x[:, 0] - c01 * x[:, 1]) / det  # Cxx^-1 x, closed form
        z1 = (c00 * x[:, 1] - c01.conj() * x[:, 0]) / det
        for s in range(ns):
            for k, (a, b) in enumerate(((r00[s], r01[s]), (r01[s].conj(), r11[s]))):
                t = a * z0
                t += b * z1
                np.multiply(vj[s], t, out=out[s, :, k])
        return out
    cxx = np.einsum("snf,sijf->nfij", vj, cov) + reg * np.eye(c)
    z = np.einsum("nfij,njf->nif", np.linalg.pinv(cxx, eps), x)
    out[...] = vj[:, :, None] * np.einsum("sijf,njf->snif", cov, z)
    return out


def _weighted_source_sum(vj, r):
    """Shapes: vj (S, n, F), r (S, F) real -> sum_s vj r (n, F)."""
    return np.einsum("snf,sf->nf", vj, r)
