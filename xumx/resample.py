"""Resampling a signal that arrives in blocks, with the result of scipy's ``resample_poly`` on
the whole signal (:class:`StreamResampler`). The filter and the polyphase products are written
here with numpy (:func:`kaiser_lowpass`, :func:`upfirdn_part`): importing scipy.signal for
them would load scipy.stats, optimize, sparse and more into every separation (about 40 MB;
docs/onnx-engine.md, "Memory")."""
import math
from fractions import Fraction
from typing import Optional

import numpy as np

from .threads import single_thread_blas


def resampled_length(nb_samples: int, rate_in: int, rate_out: int) -> int:
    """Samples that span the same duration at ``rate_out`` (rounded to the nearest, at least 1
    for a non-empty signal)."""
    n = int(math.floor(nb_samples * rate_out / rate_in + 0.5))
    return max(n, 1) if nb_samples > 0 else 0


#: The largest term of a resampling ratio up/down: the filter has ``20 * max(up, down) + 1``
#: taps, so an odd rate in a header (767,999 Hz to 8 kHz: down = 767,999, 15 M taps) would
#: cost memory and time out of all proportion to the audio.
MAX_TERM = 1 << 16


def ratio(rate_in: int, rate_out: int) -> Fraction:
    """up/down = ``rate_out / rate_in``, in lowest terms; ValueError when a term exceeds
    :data:`MAX_TERM` (never between common rates: 44,100 -> 48,000 is 160/147, 44,056 ->
    44,100 is 11,025/11,014; any rate up to 65,536 Hz to any other)."""
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, not {rate_in} -> {rate_out}")
    exact = Fraction(int(rate_out), int(rate_in))
    if max(exact.numerator, exact.denominator) > MAX_TERM:
        raise ValueError(f"resampling {rate_in} Hz to {rate_out} Hz needs the ratio "
                         f"{exact.numerator}/{exact.denominator}, beyond the terms up to "
                         f"{MAX_TERM} resampled here (resample it to a common rate first)")
    return exact


def kaiser_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """A linear-phase low-pass FIR filter: the ideal filter of ``cutoff`` (a fraction of the
    Nyquist frequency) under a Kaiser window of ``beta``, scaled to unit gain at 0 Hz
    (``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta))``). Shape: (numtaps,)
    float64."""
    m = np.arange(numtaps) - (numtaps - 1) / 2.0
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


#: Output rows (of ``up`` samples each) per matrix product in :func:`upfirdn_part`, at least;
#: more for small ``up``, so that a product gives :data:`BLOCK` outputs per channel (bounds its
#: temporaries; products of this size run faster on one BLAS thread).
ROWS = 64
BLOCK = 16384
#: The largest polyphase matrix (window x up entries) :func:`upfirdn_part` builds; beyond it
#: (ratios with terms in the thousands) it sums tap by tap.
MATRIX_ENTRIES = 1 << 20


def upfirdn_part(h: np.ndarray, x: np.ndarray, up: int, down: int, first: int,
                 count: int, grid: int = 0) -> np.ndarray:
    """Outputs ``first`` to ``first + count`` of ``x`` upsampled by ``up`` (zeros between
    samples), filtered by ``h`` and downsampled by ``down``: y[m] = sum_i x[i] h[m down - i up]
    over 0 <= m down - i up < len(h) (``scipy.signal.upfirdn(h, x, up, down, axis=0)``, with
    zeros past its end). Shapes: h (K,), x (T, C) -> (count, C) of x's dtype.

    Output m = grid + q up + r (r < up) takes the taps h[p_r + j up] (p_r = (grid + r) down
    mod up) against x[b_r + q down - j] (b_r = floor((grid + r) down / up)), j < ceil(K / up):
    for every row q the same window of x, shifted by q down. So a matrix of windows (rows x
    window) times one matrix of taps (window x up) gives ``up`` outputs per row. The products
    run on blocks of rows fixed on the grid of ``grid`` (whole blocks, zeros where x has no
    samples), so an output is computed by the same product whatever ``first`` and ``count``
    are: a signal resampled in pieces, each piece x starting at a multiple of ``down`` and
    ``grid`` the index of the whole signal's output 0 in the piece's outputs, equals the
    signal resampled whole, bit for bit. For large ``up`` (a matrix over :data:`MATRIX_ENTRIES`)
    the taps are summed one at a time, in the same order for every output.
    """
    t, c = x.shape
    dtype = np.result_type(x.dtype, h.dtype)
    if count <= 0 or t == 0:
        return np.zeros((max(count, 0), c), dtype)
    taps = -(-len(h) // up)
    hp = np.zeros(taps * up, dtype)
    hp[:len(h)] = h
    r = np.arange(up)
    base, phase = divmod((grid + r) * down, up)
    width = int(base[-1] - base[0]) + taps
    if width * up > MATRIX_ENTRIES:
        return _upfirdn_taps(hp, x, up, down, first, count, dtype)
    g = np.zeros((width, up), dtype)   # the tap of window position w for output r
    j = np.arange(taps)[:, None]
    g[(base - base[0])[None, :] + (taps - 1) - j, r[None, :]] = hp[phase[None, :] + j * up]
    rows = max(ROWS, -(-BLOCK // up))
    q_first = (first - grid) // up              # the row of output ``first``
    q_last = (first + count - 1 - grid) // up
    block0 = q_first // rows * rows
    out = np.empty((((q_last - block0) // rows + 1) * rows * up, c), dtype)
    with single_thread_blas():
        for q0 in range(block0, q_last + 1, rows):
            _block(out, x, g, q0, block0, rows, up, down, int(base[0]) - (taps - 1), width)
    skip = first - (grid + block0 * up)
    return out[skip:skip + count]


def _block(out, x, g, q0, block0, rows, up, down, start, width):
    """Rows q0 to q0 + rows of :func:`upfirdn_part` into ``out`` (whose row 0 is ``block0``);
    the window of row 0 starts at x[start]."""
    t, c = x.shape
    lo = start + q0 * down   # the window of row q0 starts at x[lo]
    hi = lo + (rows - 1) * down + width
    seg = np.zeros((c, hi - lo), g.dtype)
    a, b = max(lo, 0), min(hi, t)
    if a < b:
        seg[:, a - lo:b - lo] = x[a:b].T
    windows = np.lib.stride_tricks.sliding_window_view(seg, width, axis=1)[:, ::down]
    y = np.ascontiguousarray(windows).reshape(c * rows, width) @ g   # one BLAS product
    k = (q0 - block0) * up
    out[k:k + rows * up] = y.reshape(c, rows * up).T


def _upfirdn_taps(hp, x, up, down, first, count, dtype) -> np.ndarray:
    """:func:`upfirdn_part` one tap at a time (``hp``: the taps zero-padded to a multiple of
    ``up``), in blocks of outputs."""
    t, c = x.shape
    out = np.zeros((count, c), dtype)
    step = BLOCK
    for m0 in range(0, count, step):
        base, phase = divmod((first + m0 + np.arange(min(step, count - m0))) * down, up)
        for k in range(len(hp) // up):
            i = base - k
            ok = (i >= 0) & (i < t)
            out[m0:m0 + len(i)][ok] += hp[phase[ok] + k * up][:, None] * x[i[ok]]
    return out


class StreamResampler:
    """scipy's ``resample_poly`` of a signal that arrives in blocks, with the same result.

    ``push(block (t, C)) -> (t', C)`` returns every output sample whose filter window is
    complete; ``finish(length)`` returns the rest, trimmed or zero-padded so that the whole
    output has ``length`` samples. The concatenated output equals ``resample`` of the whole
    signal (scipy ``resample_poly``: same Kaiser FIR, same zero padding at both ends; each
    output sample is computed from the same input samples and taps). Memory: the block plus
    the filter's span (``20 * max(up, down) / up`` input samples), up/down being
    :func:`ratio` (terms up to :data:`MAX_TERM`).
    """

    def __init__(self, rate_in: int, rate_out: int):
        r = ratio(rate_in, rate_out)
        self.up, self.down = r.numerator, r.denominator
        self._buf: Optional[np.ndarray] = None   # input from sample self._first on
        self._channels = 1
        self._first = 0          # a multiple of ``down``
        self._seen = 0           # input samples pushed
        self._next = 0           # next output sample to return
        self._done = 0           # output samples returned (after padding/trimming)
        self._h = None

    def _filter(self, dtype) -> np.ndarray:
        """resample_poly's filter, zero-padded in front as it does (and behind, generously)."""
        if self._h is None:
            half = 10 * max(self.up, self.down)
            h = kaiser_lowpass(2 * half + 1, 1.0 / max(self.up, self.down)).astype(dtype)
            h *= self.up
            pre = self.down - half % self.down
            self._skip = (half + pre) // self.down   # resample_poly's n_pre_remove
            self._h = np.concatenate([np.zeros(pre, h.dtype), h, np.zeros(2 * self.down, h.dtype)])
        return self._h

    def _emit(self, end: int) -> np.ndarray:
        """Output samples [self._next, end) from the buffered input."""
        up, down, h = self.up, self.down, self._h
        count = max(end - self._next, 0)
        # the earliest input sample output self._next depends on, rounded down to a multiple
        # of ``down`` so that the phase matches the whole-signal computation
        lo = max(-((len(h) - 1 - (self._next + self._skip) * down) // up), 0)
        lo = min(lo, self._seen) // down * down
        assert lo >= self._first
        seg = self._buf[lo - self._first:]
        shift = self._next + self._skip - lo * up // down
        # the whole signal's output 0 is -lo up / down here: outputs are computed on its grid
        y = upfirdn_part(h, seg, up, down, shift, count, grid=-(lo * up // down))
        self._next += count
        lo = max(-((len(h) - 1 - (self._next + self._skip) * down) // up), 0)
        lo = min(lo, self._seen) // down * down
        if lo > self._first:   # forget input no future output needs (a copy of the rest: a
            self._buf = self._buf[lo - self._first:].copy()   # view would keep the block)
            self._first = lo
        return y

    def push(self, block: np.ndarray) -> np.ndarray:
        """Shapes: block (t, C) -> (t', C) float32 (t' may be 0)."""
        block = np.asarray(block)
        self._seen += block.shape[0]
        self._channels = block.shape[1]
        if self.up == self.down:
            self._next += block.shape[0]
            return np.asarray(block, dtype=np.float32)
        self._filter(block.dtype)
        self._buf = block if self._buf is None else np.concatenate([self._buf, block])
        # output k needs inputs up to floor((k + skip) * down / up)
        end = (self._seen * self.up - 1) // self.down - self._skip + 1
        return np.asarray(self._emit(end), dtype=np.float32)

    def finish(self, length: Optional[int] = None) -> np.ndarray:
        """The remaining output; the whole output then has ``length`` samples (default:
        ceil(T * up / down), as resample_poly; beyond that, zeros). ``length`` cannot be less
        than what was already returned: with different rates ``push`` keeps back the last
        half filter span (at least 10 samples), enough for the rounding of
        :func:`resampled_length`. Shapes: -> (t', C) float32."""
        total = -(-self._seen * self.up // self.down)
        length = total if length is None else int(length)
        if length < self._next:
            raise ValueError(f"{self._next} samples were already returned, more than {length}")
        if self.up == self.down or self._buf is None:
            y = np.zeros((0, self._channels), np.float32)
        else:
            y = self._emit(min(length, total))
        pad = np.zeros((length - self._next, y.shape[1]), np.float32)
        self._next = length
        return np.concatenate([np.asarray(y, dtype=np.float32), pad])
