"""The two combination losses of X-UMX, each as one nnabla function.

Both are sums over every subset K of sources of a quadratic expression in the per-source
signals, so neither forms the subset sums. The frequency-domain loss needs the Gram matrix
of the per-source errors ``e_k = mask_k * mix - target_k`` (one pass over the spectrograms);
the time-domain weighted-SDR loss needs, per row, the Gram matrix of the basis
[r, y_1..y_S, d_1..d_S] with r = mixture - sum_k y_k and d_k = estimate_k - y_k (one pass over
the waveforms). Every energy and inner product of every subset is a quadratic form of that
matrix; the basis keeps each of them free of cancellation between large terms (the true
noise of a subset is r + the other targets, not mixture minus the subset's targets).
The backward is one more pass: the gradient of each input is a small matrix times the basis.
Partial sums are accumulated in float64. Blocks of frames (samples) are independent: large
inputs split them over the kernels' threads (:func:`~.base.for_parts`); the blocks' Gram
matrices are then added in block order, so the sums do not depend on the threads.

Shapes use: frames (N), batch (B), channels (C), bins (F), samples (T, L), sources (S),
rows R = B * C, subsets (K).
"""
from typing import Sequence, Tuple

import numpy as np

from .base import NumpyFunction, data, for_parts, grad_buffer, put_grad

#: Elements per source processed at once (bounds temporaries; float32 partial sums stay short).
CHUNK = 1 << 16


def _membership(combos: Sequence[Tuple[int, ...]], nb_sources: int) -> np.ndarray:
    """(K, S) 0/1 matrix: source k belongs to subset c."""
    m = np.zeros((len(combos), nb_sources))
    for c, combo in enumerate(combos):
        m[c, list(combo)] = 1.0
    return m


def _split_sources(arr: np.ndarray, nb_sources: int, axis: int):
    """Views of the S source slices of an array whose ``axis`` stacks S equal blocks."""
    size = arr.shape[axis] // nb_sources
    index = [slice(None)] * arr.ndim
    out = []
    for s in range(nb_sources):
        index[axis] = slice(s * size, (s + 1) * size)
        out.append(arr[tuple(index)])
    return out


class _SourcesLoss(NumpyFunction):
    """Inputs: a mixture, S per-source estimates (masks or waveforms), then the targets as S
    arrays or one with the sources stacked on axis ``STACK_AXIS``. Output: a scalar."""
    STACK_AXIS = 2

    def __init__(self, ctx, combos, nb_sources: int):
        super().__init__(ctx)
        self.S = nb_sources
        self.combos = [tuple(c) for c in combos]
        self.member = _membership(self.combos, nb_sources)

    @property
    def args(self):
        return dict(combos=self.combos)

    def min_inputs(self):
        return 1 + self.S + 1

    def setup_impl(self, inputs, outputs):
        if len(inputs) not in (1 + self.S + 1, 1 + 2 * self.S):
            raise ValueError(f"{self.name}: {len(inputs)} inputs for {self.S} sources")
        outputs[0].reset_shape((), True)

    def _targets(self, inputs):
        t = [data(v) for v in inputs[1 + self.S:]]
        return _split_sources(t[0], self.S, self.STACK_AXIS) if len(t) == 1 else t

    def _put_target_grads(self, inputs, grads, propagate_down, accum):
        idx = list(range(1 + self.S, len(inputs)))
        if len(idx) == 1:  # one stacked array
            if propagate_down[idx[0]]:
                put_grad(inputs[idx[0]], np.concatenate(grads, axis=self.STACK_AXIS), accum[idx[0]])
            return
        for j, g in zip(idx, grads):
            if propagate_down[j]:
                put_grad(inputs[j], g, accum[j])


class FreqCombinationLoss(_SourcesLoss):
    """Mean over subsets K of mean((sum_K mask_k * mix - sum_K target_k)^2).

    Inputs: mix (N, B, C, F); S masks (N, B, C, F); targets, S (N, B, C, F) or one
    (N, B, S C, F). Output: scalar.
    """

    def _errors(self, mix, masks, targets, block: slice) -> np.ndarray:
        """(S, n) errors mask_k * mix - target_k of frames ``block``, flattened."""
        x = mix[block]
        e = np.empty((self.S,) + x.shape, np.float32)
        for k in range(self.S):
            np.multiply(masks[k][block], x, out=e[k])
            e[k] -= targets[k][block]
        return e.reshape(self.S, -1)

    def _blocks(self, mix):
        step = max(1, CHUNK // max(1, mix[0].size))
        return [slice(a, a + step) for a in range(0, mix.shape[0], step)]

    def _coefficients(self, size: int) -> np.ndarray:
        """(S, S): d loss / d Gram = (number of subsets holding k and l) / (size * K)."""
        return (self.member.T @ self.member) / (size * len(self.combos))

    def forward_impl(self, inputs, outputs):
        mix = data(inputs[0])
        masks = [data(v) for v in inputs[1:1 + self.S]]
        targets = self._targets(inputs)
        blocks = self._blocks(mix)
        grams = [None] * len(blocks)

        def part(p, threads):
            for i in range(p.start, p.stop):
                e = self._errors(mix, masks, targets, blocks[i])
                grams[i] = e @ e.T
        for_parts(len(blocks), 3 * self.S * mix.size, part)
        gram = np.zeros((self.S, self.S))
        for g in grams:
            gram += g
        data(outputs[0])[...] = np.sum(self._coefficients(mix.size) * gram)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        mix = data(inputs[0])
        masks = [data(v) for v in inputs[1:1 + self.S]]
        targets = self._targets(inputs)
        coef = (2.0 * float(outputs[0].grad.data) * self._coefficients(mix.size)).astype(np.float32)
        dmix = grad_buffer(inputs[0], accum[0]) if propagate_down[0] else None
        dmasks = [grad_buffer(inputs[1 + k], accum[1 + k]) if propagate_down[1 + k] else None
                  for k in range(self.S)]
        need_targets = any(propagate_down[1 + self.S:])
        dtargets = [np.empty(mix.shape, np.float32) for _ in range(self.S)] if need_targets else None
        blocks = self._blocks(mix)

        def part(p, threads):
            for block in blocks[p]:
                e = self._errors(mix, masks, targets, block)
                de = (coef @ e).reshape((self.S,) + mix[block].shape)  # d loss / d e_k
                for k in range(self.S):
                    if dmasks[k] is not None:
                        np.multiply(de[k], mix[block], out=dmasks[k][block])
                    if dmix is not None and k == 0:
                        np.multiply(de[k], masks[k][block], out=dmix[block])
                    elif dmix is not None:
                        dmix[block] += de[k] * masks[k][block]
                    if dtargets is not None:
                        np.negative(de[k], out=dtargets[k][block])
        for_parts(len(blocks), 5 * self.S * mix.size, part)
        if dmix is not None:
            put_grad(inputs[0], dmix, accum[0])
        for k in range(self.S):
            if dmasks[k] is not None:
                put_grad(inputs[1 + k], dmasks[k], accum[1 + k])
        if dtargets is not None:
            self._put_target_grads(inputs, dtargets, propagate_down, accum)


class TimeCombinationLoss(_SourcesLoss):
    """Weighted-SDR loss of every subset's summed estimates and targets against the mixture
    (1 + the mean over subsets and rows), after an edge trim of ``trim`` samples.

    Inputs: mixture (B, C, T); S estimates (B, C, L), L <= T; targets, S (B, C, T) or one
    (B, S C, T). Mixture and targets are cut to the first L samples. Output: scalar.
    """
    STACK_AXIS = 1

    def __init__(self, ctx, combos, nb_sources: int, trim: int, eps: float):
        super().__init__(ctx, combos, nb_sources)
        self.trim, self.eps = trim, eps
        self._kept_gram = None   # the forward's Gram matrices, for the backward after it
        S, m = nb_sources, self.member
        # coefficient vectors over the basis [r, y_1..y_S, d_1..d_S], one row per subset
        zero, one = np.zeros((len(m), S)), np.ones((len(m), 1))
        self.vec = {"y": np.hstack([0 * one, m, zero]),            # the subset's target
                    "n": np.hstack([one, 1 - m, zero]),            # true noise: mixture - target
                    "s": np.hstack([0 * one, m, m]),               # the subset's estimate
                    "nh": np.hstack([one, 1 - m, -m])}             # estimated noise

    @property
    def args(self):
        return dict(combos=self.combos, trim=self.trim, eps=self.eps)

    def setup_impl(self, inputs, outputs):
        super().setup_impl(inputs, outputs)
        length = inputs[1].shape[-1]
        if length <= 2 * self.trim:
            raise ValueError(f"{length} samples are too few for an edge trim of {self.trim}")
        if inputs[0].shape[-1] < length:
            raise ValueError(f"mixture {inputs[0].shape} is shorter than the estimates {inputs[1].shape}")

    def _chunks(self, length):
        lo, hi = self.trim, length - self.trim
        return [slice(a, min(hi, a + CHUNK // 16)) for a in range(lo, hi, CHUNK // 16)]

    def _basis(self, mix, ests, targets, sl) -> np.ndarray:
        """(R, 2S + 1, n) basis [r, y_1..y_S, d_1..d_S] of samples ``sl``."""
        S = self.S
        rows = mix.shape[0] * mix.shape[1]
        v = np.empty((2 * S + 1, rows, sl.stop - sl.start), np.float32)
        v[0] = mix[:, :, sl].reshape(rows, -1)
        for k in range(S):
            v[1 + k] = targets[k][:, :, sl].reshape(rows, -1)
            v[0] -= v[1 + k]
            np.subtract(ests[k][:, :, sl].reshape(rows, -1), v[1 + k], out=v[1 + S + k])
        return v.transpose(1, 0, 2)

    def _inputs(self, inputs):
        return data(inputs[0]), [data(v) for v in inputs[1:1 + self.S]], self._targets(inputs)

    def _gram(self, inputs) -> np.ndarray:
        mix, ests, targets = self._inputs(inputs)
        rows, size = mix.shape[0] * mix.shape[1], 2 * self.S + 1
        chunks = self._chunks(ests[0].shape[-1])
        grams = [None] * len(chunks)

        def part(p, threads):
            for i in range(p.start, p.stop):
                v = self._basis(mix, ests, targets, chunks[i])
                grams[i] = np.matmul(v, v.transpose(0, 2, 1))
        for_parts(len(chunks), 3 * self.S * ests[0].size, part)
        gram = np.zeros((rows, size, size))
        for g in grams:
            gram += g
        return gram

    def _row_losses(self, gram):
        """Per (row, subset) loss and the gradient closure d loss / d Gram."""
        eps = self.eps
        q = {}

        def form(a, b):
            return np.einsum("rpq,cp,cq->rc", gram, self.vec[a], self.vec[b])
        for a, b in (("y", "y"), ("n", "n"), ("s", "s"), ("nh", "nh"), ("s", "y"), ("nh", "n")):
            q[a, b] = form(a, b)
        ey, en = np.maximum(q["y", "y"], 0), np.maximum(q["n", "n"], 0)
        es, enh = np.maximum(q["s", "s"], 0), np.maximum(q["nh", "nh"], 0)
        root = {k: np.sqrt(v + eps) for k, v in (("y", ey), ("n", en), ("s", es), ("nh", enh))}
        den1 = root["s"] * root["y"] + eps
        den2 = root["nh"] * root["n"] + eps
        cos1, cos2 = q["s", "y"] / den1, q["nh", "n"] / den2
        tot = ey + en + eps
        alpha = ey / tot
        loss = -alpha * cos1 - (1.0 - alpha) * cos2

        def grad(scale):
            """d (scale * sum of row losses) / d Gram, (R, P, P)."""
            dalpha = (cos2 - cos1) * scale
            dcos1, dcos2 = -alpha * scale, -(1.0 - alpha) * scale
            dden1, dden2 = -dcos1 * cos1 / den1, -dcos2 * cos2 / den2
            d = {("s", "y"): dcos1 / den1, ("nh", "n"): dcos2 / den2,
                 ("s", "s"): dden1 * root["y"] / (2 * root["s"]) * (q["s", "s"] > 0),
                 ("y", "y"): (dden1 * root["s"] / (2 * root["y"]) + dalpha * (en + eps) / tot ** 2)
                 * (q["y", "y"] > 0),
                 ("nh", "nh"): dden2 * root["n"] / (2 * root["nh"]) * (q["nh", "nh"] > 0),
                 ("n", "n"): (dden2 * root["nh"] / (2 * root["n"]) - dalpha * ey / tot ** 2)
                 * (q["n", "n"] > 0)}
            dg = np.zeros_like(gram)
            for (a, b), dq in d.items():
                dg += np.einsum("rc,cp,cq->rpq", dq, self.vec[a], self.vec[b])
            return dg
        return loss, grad

    def forward_impl(self, inputs, outputs):
        gram = self._gram(inputs)
        self._kept_gram = gram
        loss, _ = self._row_losses(gram)
        data(outputs[0])[...] = 1.0 + loss.mean()

    def _edges_zeroed(self, grad):
        """``grad`` (..., L) with the trimmed edges (no gradient) set to 0."""
        grad[..., :self.trim] = 0
        grad[..., grad.shape[-1] - self.trim:] = 0
        return grad

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        S = self.S
        mix, ests, targets = self._inputs(inputs)
        gram, self._kept_gram = self._kept_gram, None   # none kept: a second backward
        loss, grad = self._row_losses(self._gram(inputs) if gram is None else gram)
        dg = grad(float(outputs[0].grad.data) / loss.size)
        sym = (dg + dg.transpose(0, 2, 1)).astype(np.float32)  # d / d basis = sym @ basis
        need_mix, need_t = propagate_down[0], any(propagate_down[1 + S:])
        dmix = np.zeros(mix.shape, np.float32) if need_mix else None
        dests = [self._edges_zeroed(grad_buffer(inputs[1 + k], accum[1 + k]))
                 if propagate_down[1 + k] else None for k in range(S)]
        dtargets = [np.zeros(mix.shape, np.float32) for _ in range(S)] if need_t else None
        b, c = mix.shape[:2]
        chunks = self._chunks(ests[0].shape[-1])

        def part(p, threads):
            for sl in chunks[p]:
                dv = np.matmul(sym, self._basis(mix, ests, targets, sl))  # (R, P, n)
                dv = dv.transpose(1, 0, 2).reshape(2 * S + 1, b, c, -1)
                if dmix is not None:
                    dmix[:, :, sl] = dv[0]
                for k in range(S):
                    if dests[k] is not None:
                        dests[k][:, :, sl] = dv[1 + S + k]
                    if dtargets is not None:
                        dtargets[k][:, :, sl] = dv[1 + k] - dv[0] - dv[1 + S + k]
        for_parts(len(chunks), 5 * self.S * ests[0].size, part)
        if dmix is not None:
            put_grad(inputs[0], dmix, accum[0])
        for k in range(S):
            if dests[k] is not None:
                put_grad(inputs[1 + k], dests[k], accum[1 + k])
        if dtargets is not None:
            self._put_target_grads(inputs, dtargets, propagate_down, accum)


def freq_combination_loss(combos, mix_spec, masks, target_mags):
    """Frequency-domain combination loss (see :class:`FreqCombinationLoss`)."""
    import nnabla as nn
    targets = list(target_mags) if isinstance(target_mags, (list, tuple)) else [target_mags]
    return FreqCombinationLoss(nn.get_current_context(), combos, len(masks))(mix_spec, *masks, *targets)


def time_combination_loss(combos, mixture, estimates, targets, trim: int, eps: float):
    """Time-domain combination loss (see :class:`TimeCombinationLoss`)."""
    import nnabla as nn
    length = estimates[0].shape[-1]
    if length <= 2 * trim:  # (also checked in setup, where nnabla would wrap the error)
        raise ValueError(f"{length} samples are too few for an edge trim of {trim}")
    targets = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    return TimeCombinationLoss(nn.get_current_context(), combos, len(estimates), trim, eps)(
        mixture, *estimates, *targets)
