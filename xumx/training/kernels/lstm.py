"""The multi-layer (bidirectional) LSTM of every source of X-UMX as one nnabla function.

It computes what ``nnabla.functions.lstm`` computes for each source (zero initial states;
gates i, f, g, o; parameters in the published layout: ``weight_l0`` (D, 4, h, I + h),
``weight`` (L - 1, D, 4, h, D h + h), ``bias`` (L, D, 4, h)), with the work batched:

- the input projections of all frames are one matrix product per source and layer;
- the recurrence advances every source and both directions of a layer together, one batched
  product ``h @ W_h`` per time step (the backward directions walk the frames from the end);
- backward through time is batched the same way; the weight gradients are again one product
  per source over all frames.

It keeps per layer the gate activations, cell states and outputs for the backward: memory
linear in frames x hidden (nnabla's CPU LSTM keeps a graph of per-frame functions).

Dropout between layers has cuDNN's (and PyTorch's) semantics: in a training graph, the outputs
of every layer but the last are multiplied, element by element (every frame, batch item and
unit of every source), by a mask that keeps each with probability 1 - p and scales it by
1 / (1 - p). The masks come from the graph's :class:`~xumx.training.model.LstmDropout`
generator, one per layer in layer order, drawn at each forward; a test-mode graph applies none.
(nnabla's own CPU LSTM ignores its ``dropout`` argument.)

Shapes use: frames (N), batch (B), sources (S), directions (D), layers (L), LSTM hidden
size (h), cells K = S * D, input size (I).
"""
from typing import List

import numpy as np

from ...params import LSTM_GATES, gate_permutation
from .base import (NumpyFunction, data, for_cell_groups, parallel_cells_worth, put_grad,
                   single_thread_blas)

GATES = LSTM_GATES
#: The internal gate order i, f, o, g (the three sigmoid gates side by side) as indices into
#: nnabla's order (:mod:`xumx.params`); the permutation is its own inverse.
PERM = list(gate_permutation("ifog"))
#: Recurrent products smaller than this (multiply-adds per step) run on one BLAS thread.
SMALL_STEP = 1 << 21


class SourcesLSTM(NumpyFunction):
    """Inputs: the LSTM input, one (N, B, I) shared by all sources or S of them, then per
    source ``weight_l0``, ``weight`` (only when L > 1) and ``bias``. Outputs: S arrays
    (N, B, D h), as ``F.lstm``'s first output per source.

    Args: ctx, nb_sources, nb_layers, bidirectional, shared_input (one input for all
    sources), training (keep the states for a backward, apply the dropout; without it a
    backward recomputes), dropout (an object with ``rate`` and ``keep(shape)``, a boolean mask
    of kept elements, e.g. :class:`~xumx.training.model.LstmDropout`; None or rate 0: none).
    """

    def __init__(self, ctx, nb_sources: int, nb_layers: int, bidirectional: bool,
                 shared_input: bool, training: bool = True, dropout=None):
        super().__init__(ctx)
        self.S, self.L = nb_sources, nb_layers
        self.D = 2 if bidirectional else 1
        self.shared, self.training = shared_input, training
        self.dropout = dropout if training and nb_layers > 1 and dropout is not None \
            and dropout.rate > 0 else None
        self._cache = None
        self._masks = None   # per layer but the last: the scaled mask (S, N, B, D h) of its outputs

    @property
    def args(self):
        return dict(nb_sources=self.S, nb_layers=self.L, bidirectional=self.D == 2,
                    shared_input=self.shared, training=self.training,
                    dropout=self.dropout.rate if self.dropout else 0.0)

    def min_inputs(self):
        return (1 if self.shared else self.S) + self.S * (3 if self.L > 1 else 2)

    def min_outputs(self):
        return self.S

    # ------------------------------------------------------------------ layout
    def _split(self, inputs):
        nx = 1 if self.shared else self.S
        per = 3 if self.L > 1 else 2
        xs = inputs[:nx]
        params = [inputs[nx + s * per: nx + (s + 1) * per] for s in range(self.S)]
        return xs, params

    def setup_impl(self, inputs, outputs):
        xs, params = self._split(inputs)
        n, b, i = xs[0].shape
        w0 = params[0][0].shape
        if len(w0) != 4 or w0[0] != self.D or w0[1] != GATES or w0[3] != i + w0[2]:
            raise ValueError(f"weight_l0 {w0} does not fit input {xs[0].shape}, D={self.D}")
        h = w0[2]
        for x in xs:
            if tuple(x.shape) != (n, b, i):
                raise ValueError(f"LSTM inputs differ in shape: {x.shape} vs {(n, b, i)}")
        for p in params:
            shapes = [tuple(v.shape) for v in p]
            want = [(self.D, GATES, h, i + h)]
            if self.L > 1:
                want.append((self.L - 1, self.D, GATES, h, self.D * h + h))
            want.append((self.L, self.D, GATES, h))
            if shapes != want:
                raise ValueError(f"LSTM parameters {shapes}, expected {want}")
        self.h = h
        for out in outputs:
            out.reset_shape((n, b, self.D * h), True)

    def _layer_weights(self, params, layer):
        """(wx (S, I, D 4h), wh_t (S, D, 4h, h), bias (S, D, 4h)) of one layer, internal gate
        order, float32: the input weights as the right operand of ``x @ wx[s]`` (both
        directions side by side), the recurrent weights as ``W_h`` (``h @ W_h`` is ``h @
        wh_t[s, d].T``)."""
        S, D, h = self.S, self.D, self.h
        G = GATES * h
        wx = wh_t = None
        bias = np.empty((S, D, G), np.float32)
        for s, p in enumerate(params):
            w = data(p[0]) if layer == 0 else data(p[1])[layer - 1]
            w = w[:, PERM].reshape(D, G, -1)
            n_in = w.shape[-1] - h
            if wx is None:
                wx = np.empty((S, n_in, D * G), np.float32)
                wh_t = np.empty((S, D, G, h), np.float32)
            wx[s].reshape(n_in, D, G)[...] = w[..., :n_in].transpose(2, 0, 1)
            wh_t[s] = w[..., n_in:]
            bias[s] = data(p[-1])[layer][:, PERM].reshape(D, G)
        return wx, wh_t, bias

    # ------------------------------------------------------------------ forward
    def forward_impl(self, inputs, outputs):
        xs, params = self._split(inputs)
        self._masks = self._draw_masks(xs[0].shape[:2]) if self.dropout else None
        y = self._forward([data(x) for x in xs], params, keep=self.training)
        for s, out in enumerate(outputs):
            data(out)[...] = y[s]

    def _draw_masks(self, frames_batch) -> List[np.ndarray]:
        """The scaled dropout masks (S, N, B, D h) of the outputs of layers 0..L-2, drawn in
        layer order from the dropout's generator."""
        shape = (self.S,) + tuple(frames_batch) + (self.D * self.h,)
        scale = np.float32(1.0 / (1.0 - self.dropout.rate))
        return [np.multiply(self.dropout.keep(shape), scale, dtype=np.float32)
                for _ in range(self.L - 1)]

    def _forward(self, xs: List[np.ndarray], params, keep: bool) -> np.ndarray:
        """Run every layer; returns the last layer's outputs (S, N, B, D h). With ``keep``,
        the states are kept in ``self._cache`` for the backward. The masks of ``self._masks``
        apply to the outputs of every layer but the last (the cached outputs are the masked
        ones: the next layer's inputs)."""
        cache = []
        x = xs
        for layer in range(self.L):
            w = self._layer_weights(params, layer)
            states = self._layer_forward(x, w)
            y = states[-1]
            if self._masks is not None and layer < self.L - 1:
                y *= self._masks[layer]
            if keep:
                cache.append((states, w))   # the weights' layout serves the backward too
            x = list(y)
        self._cache = cache if keep else None
        return y

    def _layer_forward(self, xs, w):
        """One layer. xs: 1 shared or S inputs (N, B, I) -> (A, C, TC, H, Y): the gate
        activations (N, K, B, 4h) (i, f, o sigmoid, g tanh), cell states and their tanh
        (N, K, B, h), hidden states (N, K, B, h), all indexed by step (the backward
        directions' step t is frame N - 1 - t), and the outputs Y (S, N, B, D h)."""
        wx, wh_t, bias = w
        S, D, h = self.S, self.D, self.h
        K, G = S * D, GATES * h
        n, b, _ = xs[0].shape
        half = np.ones(G, np.float32)  # sigmoid(a) = (1 + tanh(a / 2)) / 2: one tanh for all gates
        half[:3 * h] = 0.5
        a = np.empty((n, S, D, b, G), np.float32)
        for s in range(S):
            x = xs[0] if len(xs) == 1 else xs[s]
            p = x.reshape(n * b, -1) @ wx[s]
            p = p.reshape(n, b, D, G)
            p += bias[s]
            p *= half
            for d in range(D):
                a[:, s, d] = p[:, :, d] if d == 0 else p[::-1, :, d]
        a = a.reshape(n, K, b, G)
        wh_half = np.ascontiguousarray(wh_t.reshape(K, G, h).transpose(0, 2, 1))  # (K, h, 4h)
        wh_half *= half
        c = np.empty((n, K, b, h), np.float32)
        tc = np.empty_like(c)
        hs = np.empty_like(c)
        with single_thread_blas(K * b * h * G < SMALL_STEP or parallel_cells_worth(K, b * h * G)):
            for_cell_groups(K, b * h * G, lambda ks: self._recur_forward(a[:, ks], wh_half[ks], c[:, ks],
                                                                        tc[:, ks], hs[:, ks]))
        y = np.empty((S, n, b, D * h), np.float32)
        for s in range(S):
            for d in range(D):
                k = s * D + d
                y[s, :, :, d * h:(d + 1) * h] = hs[:, k] if d == 0 else hs[::-1, k]
        return a, c, tc, hs, y

    def _recur_forward(self, a, wh_half, c, tc, hs):
        """The time loop of :meth:`_layer_forward` for a group of cells (views along the cell
        axis): ``a`` (N, k, B, 4h) pre-activations in, activations out; c, tc, hs written."""
        h = self.h
        k, b = a.shape[1], a.shape[2]
        zero = np.zeros((k, b, h), np.float32)
        rec = np.empty((k, b, GATES * h), np.float32)
        tmp = np.empty((k, b, h), np.float32)
        h_prev, c_prev = zero, zero
        for t in range(a.shape[0]):
            at = a[t]
            np.matmul(h_prev, wh_half, out=rec)
            at += rec
            np.tanh(at, out=at)
            sig = at[..., :3 * h]
            sig *= 0.5
            sig += 0.5
            np.multiply(at[..., h:2 * h], c_prev, out=c[t])
            np.multiply(at[..., :h], at[..., 3 * h:], out=tmp)
            c[t] += tmp
            np.tanh(c[t], out=tc[t])
            np.multiply(at[..., 2 * h:3 * h], tc[t], out=hs[t])
            h_prev, c_prev = hs[t], c[t]

    # ------------------------------------------------------------------ backward
    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        xs, params = self._split(inputs)
        x_in = [data(x) for x in xs]
        if self._cache is None:  # a test-mode graph, or a second backward: recompute
            self._forward(x_in, params, keep=True)
        cache, self._cache = self._cache, None
        dy = np.stack([o.grad.data for o in outputs])  # (S, N, B, D h)
        grads_w = [[] for _ in range(self.S)]
        grads_b = [[] for _ in range(self.S)]
        for layer in reversed(range(self.L)):
            (a, c, tc, hs, _), w = cache[layer]
            x = x_in if layer == 0 else list(cache[layer - 1][0][-1])
            need_dx = layer > 0 or any(propagate_down[:len(xs)])
            dw, db, dx = self._layer_backward(x, w,
                                              a, c, tc, hs, dy, need_dx)
            cache[layer] = None  # free this layer's states
            for s in range(self.S):
                grads_w[s].append(dw[s])
                grads_b[s].append(db[s])
            dy = dx
            if self._masks is not None and layer > 0:   # through the previous layer's dropout
                dy *= self._masks[layer - 1]
        nx = len(xs)
        if any(propagate_down[:nx]):
            for j, x in enumerate(xs):
                if propagate_down[j]:
                    put_grad(x, dy[j], accum[j])
        per = 3 if self.L > 1 else 2
        for s in range(self.S):
            wl = grads_w[s][::-1]  # layer order
            bl = np.stack(grads_b[s][::-1])
            arrays = [wl[0]] + ([np.stack(wl[1:])] if self.L > 1 else []) + [bl]
            for j, g in enumerate(arrays):
                idx = nx + s * per + j
                if propagate_down[idx]:
                    put_grad(inputs[idx], g, accum[idx])

    def _layer_backward(self, xs, w, a, c, tc, hs, dy, need_dx):
        """Backward through one layer. dy (S, N, B, D h) -> per source the weight gradient
        (D, 4, h, I + h) and bias gradient (D, 4, h) in nnabla's layout, and the input
        gradient (1 or S, N, B, I) (None without ``need_dx``). ``a`` is overwritten."""
        wx, wh_t, _ = w
        S, D, h = self.S, self.D, self.h
        K, G = S * D, GATES * h
        n, b = a.shape[0], a.shape[2]
        dh_all = np.empty((n, K, b, h), np.float32)
        for s in range(S):
            for d in range(D):
                src = dy[s, :, :, d * h:(d + 1) * h]
                dh_all[:, s * D + d] = src if d == 0 else src[::-1]
        wh_t = wh_t.reshape(K, G, h)
        with single_thread_blas(K * b * h * G < SMALL_STEP or parallel_cells_worth(K, b * h * G)):
            for_cell_groups(K, b * h * G, lambda ks: self._recur_backward(a[:, ks], c[:, ks], tc[:, ks],
                                                                         dh_all[:, ks], wh_t[ks]))
        # weight gradients over all frames at once, (D, 4h, I + h) per source, internal gate order
        n_in = xs[0].shape[-1]
        dw = np.empty((S, D, G, n_in + h), np.float32)
        for k in range(K):
            dw[k // D, k % D, :, n_in:] = np.tensordot(a[1:, k], hs[:-1, k], axes=([0, 1], [0, 1]))
        db = a.sum(axis=(0, 2)).reshape(S, D, G)
        dws, dx = [], None
        if need_dx:
            dx = np.zeros((len(xs), n, b, n_in), np.float32)
        for s in range(S):
            x = xs[0] if len(xs) == 1 else xs[s]
            dp = np.empty((n, b, D, G), np.float32)  # gate gradients by frame
            for d in range(D):
                k = s * D + d
                dp[:, :, d] = a[:, k] if d == 0 else a[::-1, k]
            dp = dp.reshape(n * b, D * G)
            dw[s, :, :, :n_in] = (dp.T @ x.reshape(n * b, n_in)).reshape(D, G, n_in)
            if need_dx:
                dx[0 if len(xs) == 1 else s] += (dp @ wx[s].T).reshape(n, b, n_in)
            dws.append(dw[s].reshape(D, GATES, h, n_in + h)[:, PERM])
        return dws, db.reshape(S, D, GATES, h)[:, :, PERM], dx

    def _recur_backward(self, a, c, tc, dh_all, wh_t):
        """The backward time loop of :meth:`_layer_backward` for a group of cells (views along
        the cell axis); ``a`` ends holding the gate gradients, ``dh_all`` is overwritten."""
        h = self.h
        k, b = a.shape[1], a.shape[2]
        dh_rec = np.zeros((k, b, h), np.float32)
        dc = np.zeros((k, b, h), np.float32)
        zero = np.zeros((k, b, h), np.float32)
        t1 = np.empty((k, b, h), np.float32)
        q = np.empty((k, b, 3 * h), np.float32)
        dgate = np.empty((k, b, GATES * h), np.float32)
        for t in reversed(range(a.shape[0])):
            at = a[t]
            i, f, o, g = (at[..., j * h:(j + 1) * h] for j in range(GATES))
            dh = dh_all[t]
            dh += dh_rec
            np.multiply(tc[t], tc[t], out=t1)          # dc += dh * o * (1 - tanh(c)^2)
            np.subtract(1.0, t1, out=t1)
            t1 *= o
            t1 *= dh
            dc += t1
            np.multiply(dc, g, out=dgate[..., :h])                         # di
            np.multiply(dc, c[t - 1] if t else zero, out=dgate[..., h:2 * h])  # df
            np.multiply(dh, tc[t], out=dgate[..., 2 * h:3 * h])            # do
            np.multiply(dc, i, out=dgate[..., 3 * h:])                     # dg
            dc *= f
            sig = at[..., :3 * h]
            np.subtract(1.0, sig, out=q)               # sigmoid' = s (1 - s)
            q *= sig
            np.multiply(dgate[..., :3 * h], q, out=sig)
            np.multiply(g, g, out=t1)                  # tanh' = 1 - g^2
            np.subtract(1.0, t1, out=t1)
            np.multiply(dgate[..., 3 * h:], t1, out=g)  # a[t] now holds the gate gradient
            np.matmul(at, wh_t, out=dh_rec)

def sources_lstm(xs, params, nb_layers: int, bidirectional: bool, training: bool, dropout=None):
    """The LSTM outputs (N, B, D h) of every source.

    Args:
        xs: one input Variable (N, B, I) shared by the sources, or one per source.
        params: per source the list [weight_l0, (weight,) bias] of parameter Variables.
        dropout: between layers in training, see :class:`SourcesLSTM` (None: none).
    """
    import nnabla as nn
    fn = SourcesLSTM(nn.get_current_context(), len(params), nb_layers, bidirectional,
                     shared_input=len(xs) == 1, training=training, dropout=dropout)
    out = fn(*xs, *[v for p in params for v in p])
    return list(out) if isinstance(out, (list, tuple)) else [out]
