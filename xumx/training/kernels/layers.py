"""X-UMX's dense layers as one nnabla function each: affine + batch normalisation with the
elementwise chains around them.

Each fc layer of the network is ``act(BN(pre(x) @ W))``, and around fc1 and fc3 sit
per-bin vectors: fc1 sees ``(x[..., :max_bin] + input_mean) * input_scale`` and fc3's output
becomes ``relu(y * output_scale + output_mean)``. nnabla's CPU backend runs each of those as its
own elementwise function at 10-15 ns per element (and its affine at a third of BLAS's speed);
here the whole chain is one function: one BLAS product forward, two backward, and a few
numpy passes. Batch normalisation follows ``F.batch_normalization`` (axes: the last;
statistics over the first two axes; decay 0.9, eps 1e-5; in training the running mean and
variance are updated, the variance unbiased, as nnabla's).

One function holds a layer of every source (fc1, fc2 or fc3 of each): the sources' chains are
independent, so large layers run them on worker threads (``base.for_sources``), each source's
products on one BLAS thread and its elementwise passes beside the other's; a shared input's
gradient is the sum of the sources' in source order.

Shapes use: frames (N), batch (B), rows M = N * B.
"""
import numpy as np

from .base import NumpyFunction, column_sums, data, for_sources, grad_buffer, output, put_grad

BN_DECAY, BN_EPS = 0.9, 1e-5


class AffineBatchNorm(NumpyFunction):
    """``act(head(BN(pre(x) @ W)))`` of every source.

    Inputs: x (N, B, ...), one shared by the sources or one per source; then per source W
    (n_in, n_out), beta, gamma, mean, var (1, 1, n_out), with ``pre_scale`` shift and scale
    (w,) (``pre``: x[..., :w] + shift, times scale, on the last axis), with ``post_scale``
    scale and shift (w',) (``head``: the output reshaped to ``out_shape`` times scale plus
    shift, on its last axis). Outputs: per source (N, B, n_out) or ``out_shape``.
    ``activation``: 'tanh', 'relu' or None.

    Within a source the arrays are indexed as the single-source input list: 0 x, 1 W, 2 beta,
    3 gamma, 4 mean, 5 var, then pre's 6, 7 and post's two (:meth:`_local`).
    """

    def __init__(self, ctx, batch_stat: bool, activation=None, pre_scale: bool = False,
                 post_scale: bool = False, out_shape=None, nb_sources: int = 1,
                 shared_input: bool = True):
        super().__init__(ctx)
        if activation not in (None, "tanh", "relu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.batch_stat, self.activation = batch_stat, activation
        self.pre, self.post, self.out_shape = pre_scale, post_scale, out_shape
        self.S, self.shared = nb_sources, shared_input or nb_sources == 1
        self.P = 5 + 2 * pre_scale + 2 * post_scale   # parameters per source
        self._cache = None

    @property
    def args(self):
        return dict(batch_stat=self.batch_stat, activation=self.activation, pre_scale=self.pre,
                    post_scale=self.post, out_shape=self.out_shape, nb_sources=self.S,
                    shared_input=self.shared)

    def min_inputs(self):
        return (1 if self.shared else self.S) + self.S * self.P

    def min_outputs(self):
        return self.S

    def grad_depends_output_data(self, i, o):
        return self.activation is not None

    def _local(self, s):
        """The indices in the function's inputs of source ``s``'s x, W, beta, ... (the
        single-source order)."""
        nx = 1 if self.shared else self.S
        return [0 if self.shared else s] + list(range(nx + s * self.P, nx + (s + 1) * self.P))

    def setup_impl(self, inputs, outputs):
        for s in range(self.S):
            ins = [inputs[i] for i in self._local(s)]
            x, w = ins[0].shape, ins[1].shape
            n_in = int(np.prod(x[2:-1])) * (ins[6].shape[0] if self.pre else x[-1])
            if len(x) < 3 or w[0] != n_in:
                raise ValueError(f"affine input {x} (pre-scaled: {self.pre}) does not fit W {w}")
            for v in ins[2:6]:
                if tuple(v.shape) != (1, 1, w[1]):
                    raise ValueError(f"batch-norm parameter {v.shape}, expected {(1, 1, w[1])}")
            shape = tuple(self.out_shape) if self.out_shape else (x[0], x[1], w[1])
            if int(np.prod(shape)) != x[0] * x[1] * w[1]:
                raise ValueError(f"output shape {shape} does not hold {x[0]} x {x[1]} x {w[1]}")
            outputs[s].reset_shape(shape, True)

    def _arrays(self, inputs, s):
        """Source ``s``'s input arrays in the single-source order."""
        return [data(inputs[i]) for i in self._local(s)]

    def _work(self, inputs):
        """Multiply-adds of the layer's forward product, all sources."""
        x, w = inputs[0].shape, inputs[self._local(0)[1]].shape
        return self.S * x[0] * x[1] * w[0] * w[1]

    def _pre(self, arr):
        """The affine input (M, n_in) and, with pre-scaling, the shifted input x + shift."""
        x = arr[0]
        m = x.shape[0] * x.shape[1]
        if not self.pre:
            return x.reshape(m, -1), None
        shift, scale = arr[6], arr[7]
        shifted = x[..., :shift.shape[0]] + shift
        return (shifted * scale).reshape(m, -1), shifted

    def _columns(self, arr, n_out):
        """(g, k): the batch-norm scale and shift with the head folded in, per output column
        (columns are the output's trailing axes flattened; the head's vectors are along the
        last of them), and the head's scale per column (None without a head)."""
        beta, gamma = (v.reshape(-1) for v in arr[2:4])
        if not self.post:
            return gamma, beta, None
        j = 6 + 2 * self.pre
        scale, shift = arr[j], arr[j + 1]
        reps = n_out // scale.shape[0]
        s_col = np.tile(scale, reps)
        return gamma * s_col, beta * s_col + np.tile(shift, reps), s_col

    def _normalise(self, a, arr, update: bool):
        """a (M, n_out) -> (a - mean) / std in place; returns 1 / std. Batch statistics (the
        running ones updated with ``update``) or, in test mode, the running statistics."""
        r_mean, r_var = (v.reshape(-1) for v in arr[4:6])
        if self.batch_stat:
            mean = column_sums(a) / a.shape[0]
            a -= mean.astype(np.float32)
            var = column_sums(a, a) / a.shape[0]
            if update:
                m = a.shape[0]
                r_mean *= BN_DECAY
                r_mean += (1 - BN_DECAY) * mean
                r_var *= BN_DECAY
                r_var += (1 - BN_DECAY) * var * m / max(m - 1, 1)
        else:
            a -= r_mean
            var = r_var.astype(np.float64)
        inv_std = (1.0 / np.sqrt(var + BN_EPS)).astype(np.float32)
        a *= inv_std
        return inv_std

    # ------------------------------------------------------------------ forward
    def forward_impl(self, inputs, outputs):
        arrays = [self._arrays(inputs, s) for s in range(self.S)]
        outs = [output(o) for o in outputs]
        cache = [None] * self.S

        def sources(group):
            for s in range(group.start, group.stop):
                cache[s] = self._forward_source(arrays[s], outs[s])
        for_sources(self.S, self._work(inputs), sources)
        self._cache = cache if self.batch_stat else None

    def _forward_source(self, arr, out):
        """One source's forward into ``out``; returns (normalised activations, 1 / std)."""
        z, _ = self._pre(arr)
        a = z @ arr[1]
        del z
        inv_std = self._normalise(a, arr, update=True)  # a: the normalised activations
        g, k, _ = self._columns(arr, a.shape[1])
        y = out.reshape(a.shape)
        np.multiply(a, g, out=y)
        y += k
        if self.activation == "tanh":
            np.tanh(out, out=out)
        elif self.activation == "relu":
            np.maximum(out, 0, out=out)
        return a, inv_std

    # ------------------------------------------------------------------ backward
    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        cache, self._cache = self._cache, None
        arrays = [self._arrays(inputs, s) for s in range(self.S)]
        collect = self.shared and self.S > 1   # a shared input's gradient: summed below
        jobs = []
        for s, o in enumerate(outputs):
            idx = self._local(s)
            need = [propagate_down[i] for i in idx]
            bufs = {j: grad_buffer(inputs[i], accum[i]) for j, i in enumerate(idx)
                    if need[j] and j in (0, 1) and not (j == 0 and collect)}
            jobs.append((need, bufs, o.grad.data,
                         data(o) if self.activation is not None else None))
        results = [None] * self.S

        def sources(group):
            for s in range(group.start, group.stop):
                need, bufs, dy, y = jobs[s]
                results[s] = self._backward_source(arrays[s], None if cache is None else cache[s],
                                                   dy, y, need, bufs)
        for_sources(self.S, 2 * self._work(inputs), sources)
        shared_dx = None
        for s, grads in enumerate(results):
            idx = self._local(s)
            for j, g in grads.items():
                if j == 0 and collect:
                    shared_dx = g if shared_dx is None else np.add(shared_dx, g, out=shared_dx)
                else:
                    put_grad(inputs[idx[j]], g, accum[idx[j]])
        if shared_dx is not None:
            put_grad(inputs[0], shared_dx, accum[0])

    def _backward_source(self, arr, cache, dy, y, need, bufs):
        """One source's gradients: {index in the single-source order: array}; W's and, unless
        collected, x's are computed into ``bufs``' arrays (the gradient arrays themselves when
        nnabla does not accumulate)."""
        if cache is None:  # no training forward before: recompute
            z, _ = self._pre(arr)
            a = z @ arr[1]
            cache = (a, self._normalise(a, arr, update=False))
        norm, inv_std = cache
        m = norm.shape[0]
        dy = dy.reshape(norm.shape)
        if self.activation == "tanh":
            y = y.reshape(norm.shape)
            dp = y * y
            np.subtract(1.0, dp, out=dp)
            dp *= dy
        elif self.activation == "relu":
            dp = np.multiply(dy, y.reshape(norm.shape) > 0)
        else:
            dp = dy.copy()
        s0 = column_sums(dp)          # column sums of d output
        s1 = column_sums(dp, norm)    # ... weighted by norm
        g, _, s_col = self._columns(arr, norm.shape[1])
        beta, gamma = (v.reshape(-1) for v in arr[2:4])
        col = 1.0 if s_col is None else s_col  # d output / d (gamma norm + beta)
        grads = {}
        if need[2]:
            grads[2] = (s0 * col).astype(np.float32)
        if need[3]:
            grads[3] = (s1 * col).astype(np.float32)
        if self.post:
            j = 6 + 2 * self.pre
            width = arr[j].shape[0]
            if need[j]:
                grads[j] = (gamma * s1 + beta * s0).reshape(-1, width).sum(axis=0).astype(np.float32)
            if need[j + 1]:
                grads[j + 1] = s0.reshape(-1, width).sum(axis=0).astype(np.float32)
        if self.batch_stat:  # through the batch mean and variance
            tmp = norm * (s1 / m).astype(np.float32)
            dp -= tmp
            del tmp
            dp -= (s0 / m).astype(np.float32)
        dp *= inv_std * g
        da = dp  # d loss / d (pre(x) @ W)
        w = arr[1]
        if self.pre and not need[0]:
            grads.update(self._pre_backward(arr, da, w, need, bufs))
            return grads
        z, shifted = self._pre(arr)
        if need[1]:
            grads[1] = np.matmul(z.T, da, out=bufs[1])
        del z
        need_x = need[0] or (self.pre and (need[6] or need[7]))
        if not need_x:
            return grads
        if not self.pre:
            dx = bufs.get(0)
            grads[0] = np.matmul(da, w.T, out=None if dx is None else dx.reshape(da.shape[0], -1))
            return grads
        dz = da @ w.T
        scale = arr[7]
        dz = dz.reshape(shifted.shape)
        if need[7]:
            grads[7] = np.einsum("ij,ij->j", dz.reshape(-1, scale.shape[0]),
                                 shifted.reshape(-1, scale.shape[0]))
        dz *= scale
        if need[6]:
            grads[6] = dz.reshape(-1, scale.shape[0]).sum(axis=0)
        if need[0]:
            x = arr[0]
            if dz.shape == x.shape:
                grads[0] = dz
            else:  # only the first bins were used
                dx = np.zeros(x.shape, np.float32)
                dx[..., :dz.shape[-1]] = dz
                grads[0] = dx
        return grads

    def _pre_backward(self, arr, da, w, need, bufs):
        """Gradients of W, shift and scale when the input needs none (fc1 on the mixture's
        spectrogram): with P = shifted^T da (n_in, n_out), dW = scale P, d scale = the row sums
        of W * P, d shift = scale (W @ column sums of da), summed over the columns sharing a
        bin; no input gradient (M, n_in) is formed: one product instead of two."""
        shift, scale_v = arr[6], arr[7]
        width = shift.shape[0]
        shifted = arr[0][..., :width] + shift
        p = shifted.reshape(da.shape[0], -1).T @ da
        del shifted
        scale = np.tile(scale_v, p.shape[0] // width)
        grads = {}
        if need[7]:
            grads[7] = np.einsum("ij,ij->i", w, p).reshape(-1, width).sum(axis=0)
        if need[6]:
            col = column_sums(da).astype(np.float32)
            grads[6] = (scale * (w @ col)).reshape(-1, width).sum(axis=0)
        if need[1]:
            grads[1] = np.multiply(p, scale[:, None], out=bufs[1])
        return grads


def affine_batch_norm(x, params, batch_stat: bool, activation=None, pre=None, post=None,
                      out_shape=None):
    """``activation(head(BN(pre(x) @ W)))`` of one source (see :class:`AffineBatchNorm`).

    Args: x (N, B, ...); params [W, beta, gamma, mean, var]; pre (shift, scale) vectors of the
    input's last axis; post (scale, shift) vectors of the output's last axis; out_shape.
    """
    return sources_affine_batch_norm([x], [params], batch_stat, activation,
                                     None if pre is None else [pre],
                                     None if post is None else [post], out_shape)[0]


def sources_affine_batch_norm(xs, params, batch_stat: bool, activation=None, pre=None, post=None,
                              out_shape=None):
    """One layer of every source in one function (see :class:`AffineBatchNorm`): a list of
    outputs, one per source.

    Args: xs one input (N, B, ...) shared by the sources or one per source; params per source
    [W, beta, gamma, mean, var]; pre, post per source (shift, scale) and (scale, shift) vectors
    (or None); out_shape.
    """
    import nnabla as nn
    S = len(params)
    fn = AffineBatchNorm(nn.get_current_context(), batch_stat, activation, pre is not None,
                         post is not None, out_shape, S, shared_input=len(xs) == 1)
    per = [list(params[s]) + list(pre[s] if pre else ()) + list(post[s] if post else ())
           for s in range(S)]
    out = fn(*xs, *[v for p in per for v in p])
    return list(out) if isinstance(out, (list, tuple)) else [out]
