"""The multi-layer (bidirectional) LSTM of every source of X-UMX as one nnabla function.

It computes what ``nnabla.functions.lstm`` computes for each source (zero initial states;
gates i, f, g, o; parameters in the published layout: ``weight_l0`` (D, 4, h, I + h),
``weight`` (L - 1, D, 4, h, D h + h), ``bias`` (L, D, 4, h)), with the work batched and in
nnabla's gate order throughout (the weights are read as views, the gradients written in
their layout: no permuted copies):

- the input projections of all frames are one matrix product per source and layer;
- the recurrence advances every source and both directions of a layer together (the backward
  directions walk the frames from the end); states are kept transposed, (4h, B) per cell, so
  each step's product is ``W_h h^T`` with the 4h rows as BLAS's long side: one ``np.matmul``
  over a thread's cells, then subtracted from the pre-activations (numpy releases the GIL for
  the product, so the cells' threads multiply at once; scipy's ``sgemm`` would hold it);
- the gates are sigmoids ``1 / (1 + exp(-a))`` (numpy's exp is vectorised, its tanh is not:
  tanh(a) = 2 sigmoid(2 a) - 1);
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

from ...params import LSTM_GATES
from .base import (NumpyFunction, data, for_cell_groups, for_sources, output, parallel_cells_worth,
                   put_grad, single_thread_blas)

GATES = LSTM_GATES
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

    def _input_weights(self, params, layer) -> List[np.ndarray]:
        """Per source the input weights of one layer as a view (D 4h, I) of the parameter
        (nnabla's layout and gate order: no copy)."""
        out = []
        for p in params:
            w = data(p[0]) if layer == 0 else data(p[1])[layer - 1]
            out.append(w.reshape(self.D * GATES * self.h, -1)[:, :-self.h])
        return out

    def _recurrent_weights(self, params, layer, transposed: bool) -> np.ndarray:
        """The recurrent weights W_h of every cell of one layer, C-contiguous: (K, 4h, h), or
        with ``transposed`` (K, h, 4h) (the backward's W_h^T; each cell's block is the Fortran
        operand of a step's product, which BLAS reads without transposing)."""
        D, h = self.D, self.h
        G = GATES * h
        wh = np.empty((self.S * D,) + ((h, G) if transposed else (G, h)), np.float32)
        for s, p in enumerate(params):
            w = (data(p[0]) if layer == 0 else data(p[1])[layer - 1]).reshape(D, G, -1)[:, :, -h:]
            wh[s * D:(s + 1) * D] = w.transpose(0, 2, 1) if transposed else w
        return wh

    def _layer_weights(self, params, layer):
        """(wx, wh, -bias) of one layer: the input weights (:meth:`_input_weights`), the
        recurrent weights (K, 4h, h) (:meth:`_recurrent_weights`), the biases negated
        (S, D 4h, 1)."""
        neg_bias = np.empty((self.S, self.D * GATES * self.h, 1), np.float32)
        for s, p in enumerate(params):
            np.negative(data(p[-1])[layer].reshape(-1), out=neg_bias[s, :, 0])
        return self._input_weights(params, layer), self._recurrent_weights(params, layer, False), neg_bias

    # ------------------------------------------------------------------ forward
    def forward_impl(self, inputs, outputs):
        xs, params = self._split(inputs)
        self._masks = self._draw_masks(xs[0].shape[:2]) if self.dropout else None
        y = self._forward([data(x) for x in xs], params, keep=self.training)
        for s, out in enumerate(outputs):
            output(out)[...] = y[s]

    def _draw_masks(self, frames_batch) -> List[np.ndarray]:
        """The scaled dropout masks (S, N, B, D h) of the outputs of layers 0..L-2, drawn in
        layer order from the dropout's generator."""
        shape = (self.S,) + tuple(frames_batch) + (self.D * self.h,)
        scale = np.float32(1.0 / (1.0 - self.dropout.rate))
        return [np.multiply(self.dropout.keep(shape), scale, dtype=np.float32)
                for _ in range(self.L - 1)]

    def _forward(self, xs: List[np.ndarray], params, keep: bool) -> np.ndarray:
        """Run every layer; returns the last layer's outputs (S, N, B, D h). With ``keep``,
        per layer (A, C, TC, Y, the next layer's input) are kept in ``self._cache`` for
        the backward. The masks of ``self._masks`` apply to the outputs of every layer but the
        last (Y stays unmasked: the recurrence's states; the next layer's input is masked)."""
        cache = []
        x = xs
        for layer in range(self.L):
            w = self._layer_weights(params, layer)
            a, c, tc, y = self._layer_forward(x, w)
            nxt = y
            if self._masks is not None and layer < self.L - 1:
                nxt = y * self._masks[layer]
            if keep:
                cache.append((a, c, tc, y, nxt))
            x = list(nxt)
        self._cache = cache if keep else None
        return y

    def _layer_forward(self, xs, w):
        """One layer. xs: 1 shared or S inputs (N, B, I) -> (A, C, TC, Y): the gate
        activations (N, K, 4h, B) (sigmoid for i, f, o, tanh for g), cell states and their tanh
        (N, K, h, B), all indexed by step (the backward directions' step t is frame N - 1 - t),
        and the outputs Y (S, N, B, D h). The pre-activations are formed negated (the
        recurrence's ``exp`` takes them as they are)."""
        wx, wh, neg_bias = w
        S, D, h = self.S, self.D, self.h
        K, G = S * D, GATES * h
        n, b, n_in = xs[0].shape
        a = np.empty((n, K, G, b), np.float32)

        def sources(group):   # each source's input projections, into its cells' pre-activations
            for s in range(group.start, group.stop):
                x = xs[0] if len(xs) == 1 else xs[s]
                p = (wx[s] @ x.reshape(n * b, -1).T).reshape(D, G, n, b)   # (D 4h, N B)
                for d in range(D):
                    src = p[d].transpose(1, 0, 2)
                    np.subtract(neg_bias[s, d * G:(d + 1) * G], src if d == 0 else src[::-1],
                                out=a[:, s * D + d])
        for_sources(S, S * n * b * n_in * D * G, sources)
        c = np.empty((n, K, h, b), np.float32)
        tc = np.empty_like(c)
        hs = np.empty_like(c)
        y = np.empty((S, n, b, D * h), np.float32)

        def cells(ks):   # the recurrence, then each cell's outputs into the layer's
            self._recur_forward(a[:, ks], wh[ks], c[:, ks], tc[:, ks], hs[:, ks])
            for k in range(ks.start, ks.stop):
                s, d = divmod(k, D)
                src = hs[:, k].transpose(0, 2, 1)
                y[s, :, :, d * h:(d + 1) * h] = src if d == 0 else src[::-1]
        with single_thread_blas(K * b * h * G < SMALL_STEP or parallel_cells_worth(K, b * h * G)):
            for_cell_groups(K, b * h * G, cells)
        return a, c, tc, y

    def _recur_forward(self, a, wh, c, tc, hs):
        """The time loop of :meth:`_layer_forward` for a group of cells (views along the cell
        axis): ``a`` (N, k, 4h, B) negated pre-activations -z in, activations out; c, tc, hs
        written. Each step subtracts ``W_h h`` (one product for the group's cells); with
        e = exp(-z), the gates i, f, o are 1 / (1 + e) and g = tanh(z) = 2 / (1 + e^2) - 1."""
        h = self.h
        k, b = a.shape[1], a.shape[3]
        tmp = np.empty((k, h, b), np.float32)
        prod = np.empty(a.shape[1:], np.float32)
        with np.errstate(over="ignore"):   # exp(large) = inf: its gate is then exactly 0 (or -1)
            for t in range(a.shape[0]):
                at = a[t]
                if t:   # at (k, 4h, B) -= W_h (k, 4h, h) @ h_prev (k, h, B)
                    np.matmul(wh, hs[t - 1], out=prod)
                    at -= prod
                np.exp(at, out=at)
                g = at[:, 2 * h:3 * h]
                g *= g
                at += 1.0
                np.divide(1.0, at, out=at)
                g *= 2.0
                g -= 1.0
                ct, tct = c[t], tc[t]
                np.multiply(at[:, :h], g, out=ct)
                if t:
                    np.multiply(at[:, h:2 * h], c[t - 1], out=tmp)
                    ct += tmp
                np.multiply(ct, -2.0, out=tct)      # tanh(c) = 2 / (1 + exp(-2 c)) - 1
                np.exp(tct, out=tct)
                tct += 1.0
                np.divide(2.0, tct, out=tct)
                tct -= 1.0
                np.multiply(at[:, 3 * h:], tct, out=hs[t])

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
            a, c, tc, y, _ = cache[layer]
            x = x_in if layer == 0 else list(cache[layer - 1][-1])
            need_dx = layer > 0 or any(propagate_down[:len(xs)])
            dw, db, dx = self._layer_backward(x, self._input_weights(params, layer),
                                              self._recurrent_weights(params, layer, True),
                                              a, c, tc, y, dy, need_dx)
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

    def _layer_backward(self, xs, wx, wh_t, a, c, tc, y, dy, need_dx):
        """Backward through one layer. dy (S, N, B, D h) -> per source the weight gradient
        (D, 4, h, I + h) and bias gradient (D, 4, h) (nnabla's layout), and the input
        gradient (1 or S, N, B, I) (None without ``need_dx``). ``a`` is overwritten."""
        S, D, h = self.S, self.D, self.h
        K, G = S * D, GATES * h
        n, b = a.shape[0], a.shape[3]
        dh_all = np.empty((n, K, h, b), np.float32)

        def cells(ks):   # each cell's output gradients, then the recurrence
            for k in range(ks.start, ks.stop):
                s, d = divmod(k, D)
                src = dy[s, :, :, d * h:(d + 1) * h].transpose(0, 2, 1)
                dh_all[:, k] = src if d == 0 else src[::-1]
            self._recur_backward(a[:, ks], c[:, ks], tc[:, ks], dh_all[:, ks], wh_t[ks])
        with single_thread_blas(K * b * h * G < SMALL_STEP or parallel_cells_worth(K, b * h * G)):
            for_cell_groups(K, b * h * G, cells)
        del dh_all
        n_in = xs[0].shape[-1]
        dws, dbs, dx = [None] * S, [None] * S, None
        shared = len(xs) == 1
        if need_dx:
            dx = np.empty((len(xs), n, b, n_in), np.float32)
        dxs = [None] * S   # a shared input's gradient per source, summed below in source order

        def sources(group):   # each source's weight, bias and input gradients
            for s in range(group.start, group.stop):
                x = (xs[0] if shared else xs[s]).reshape(n * b, n_in)
                da = np.empty((D, G, n, b), np.float32)   # gate gradients by frame
                for d in range(D):
                    src = a[:, s * D + d].transpose(1, 0, 2)
                    da[d] = src if d == 0 else src[:, ::-1]
                dw = np.empty((D, G, n_in + h), np.float32)
                dw[:, :, :n_in] = (da.reshape(D * G, n * b) @ x).reshape(D, G, n_in)
                ys = y[s]   # this layer's states by frame: h_{t-1} of a step is the frame before (after)
                for d in range(D):
                    early, late = da[d, :, :-1].reshape(G, -1), da[d, :, 1:].reshape(G, -1)
                    cols = slice(d * h, (d + 1) * h)
                    dw[d, :, n_in:] = late @ ys[:-1, :, cols].reshape(-1, h) if d == 0 \
                        else early @ ys[1:, :, cols].reshape(-1, h)
                dws[s] = dw.reshape(D, GATES, h, n_in + h)
                dbs[s] = da.sum(axis=(2, 3)).reshape(D, GATES, h)
                if need_dx:
                    dxs[s] = np.matmul(da.reshape(D * G, n * b).T, wx[s],
                                       out=None if shared else dx[s].reshape(n * b, n_in))
        for_sources(S, 2 * S * n * b * n_in * D * G, sources)
        if need_dx and shared:
            total = dx[0].reshape(n * b, n_in)
            np.copyto(total, dxs[0])
            for part in dxs[1:]:
                total += part
        return dws, dbs, dx

    def _recur_backward(self, a, c, tc, dh_all, wh_t):
        """The backward time loop of :meth:`_layer_backward` for a group of cells (views along
        the cell axis); ``a`` ends holding the gate gradients; each step adds ``W_h^T da`` to
        the previous step's ``dh_all`` (one product for the group's cells)."""
        h = self.h
        k, b = a.shape[1], a.shape[3]
        dc = np.zeros((k, h, b), np.float32)
        t1 = np.empty((k, h, b), np.float32)
        t2 = np.empty((k, h, b), np.float32)
        prod = np.empty((k, h, b), np.float32)
        for t in reversed(range(a.shape[0])):
            at = a[t]
            i, f, g, o = (at[:, j * h:(j + 1) * h] for j in range(GATES))
            dh, tct = dh_all[t], tc[t]
            np.multiply(tct, tct, out=t1)          # dc += dh * o * (1 - tanh(c)^2)
            np.subtract(1.0, t1, out=t1)
            t1 *= o
            t1 *= dh
            dc += t1
            np.multiply(dh, tct, out=t1)           # o: dh tanh(c) o (1 - o)
            np.subtract(1.0, o, out=t2)
            t2 *= o
            np.multiply(t1, t2, out=o)
            np.multiply(dc, g, out=t1)             # d i
            np.multiply(g, g, out=t2)              # g: dc i (1 - g^2)
            np.subtract(1.0, t2, out=t2)
            t2 *= dc
            np.multiply(t2, i, out=g)
            np.subtract(1.0, i, out=t2)            # i: dc g i (1 - i)
            t2 *= i
            np.multiply(t2, t1, out=i)
            np.subtract(1.0, f, out=t2)            # f: dc c_{t-1} f (1 - f)
            t2 *= f
            t2 *= dc
            dc *= f                                # the cell gradient of step t - 1
            if t:
                np.multiply(t2, c[t - 1], out=f)
                np.matmul(wh_t, at, out=prod)   # dh_prev (k, h, B) += W_h^T (k, h, 4h) @ at (k, 4h, B)
                dh_all[t - 1] += prod
            else:
                f[...] = 0.0


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
