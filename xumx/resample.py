"""Resampling a signal that arrives in blocks, with the result of scipy's ``resample_poly`` on
the whole signal (:class:`StreamResampler`)."""
import math
from fractions import Fraction
from typing import Optional

import numpy as np


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
            from scipy.signal import firwin
            half = 10 * max(self.up, self.down)
            h = firwin(2 * half + 1, 1.0 / max(self.up, self.down),
                       window=("kaiser", 5.0)).astype(dtype)
            h *= self.up
            pre = self.down - half % self.down
            self._skip = (half + pre) // self.down   # resample_poly's n_pre_remove
            self._h = np.concatenate([np.zeros(pre, h.dtype), h, np.zeros(2 * self.down, h.dtype)])
        return self._h

    def _emit(self, end: int) -> np.ndarray:
        """Output samples [self._next, end) from the buffered input."""
        from scipy.signal import upfirdn
        up, down, h = self.up, self.down, self._h
        count = max(end - self._next, 0)
        # the earliest input sample output self._next depends on, rounded down to a multiple
        # of ``down`` so that the phase matches the whole-signal computation
        lo = max(-((len(h) - 1 - (self._next + self._skip) * down) // up), 0)
        lo = min(lo, self._seen) // down * down
        assert lo >= self._first
        seg = self._buf[lo - self._first:]
        shift = self._next + self._skip - lo * up // down
        if count and len(seg):
            y = upfirdn(h, seg, up, down, axis=0)[shift:shift + count]
        else:
            y = np.zeros((0,) + self._buf.shape[1:])
        if y.shape[0] < count:   # only at the end, when padding the output to ``length``
            y = np.concatenate([y, np.zeros((count - y.shape[0],) + y.shape[1:], y.dtype)])
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
