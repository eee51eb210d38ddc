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

Shapes use: frames (N), batch (B), rows M = N * B.
"""
import numpy as np

from .base import NumpyFunction, column_sums, data, grad_buffer, output, put_grad

BN_DECAY, BN_EPS = 0.9, 1e-5


class AffineBatchNorm(NumpyFunction):
    """``act(head(BN(pre(x) @ W)))``.

    Inputs: x (N, B, ...), W (n_in, n_out), beta, gamma, mean, var (1, 1, n_out); then with
    ``pre_scale`` shift and scale (w,) (``pre``: x[..., :w] + shift, times scale, on the last
    axis); then with ``post_scale`` scale and shift (w',) (``head``: the output reshaped to
    ``out_shape`` times scale plus shift, on its last axis). Output: (N, B, n_out) or
    ``out_shape``. ``activation``: 'tanh', 'relu' or None.
    """

    def __init__(self, ctx, batch_stat: bool, activation=None, pre_scale: bool = False,
                 post_scale: bool = False, out_shape=None):
        super().__init__(ctx)
        if activation not in (None, "tanh", "relu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.batch_stat, self.activation = batch_stat, activation
        self.pre, self.post, self.out_shape = pre_scale, post_scale, out_shape
        self._cache = None

    @property
    def args(self):
        return dict(batch_stat=self.batch_stat, activation=self.activation, pre_scale=self.pre,
                    post_scale=self.post, out_shape=self.out_shape)

    def min_inputs(self):
        return 6 + 2 * self.pre + 2 * self.post

    def grad_depends_output_data(self, i, o):
        return self.activation is not None

    def setup_impl(self, inputs, outputs):
        x, w = inputs[0].shape, inputs[1].shape
        n_in = int(np.prod(x[2:-1])) * (inputs[6].shape[0] if self.pre else x[-1])
        if len(x) < 3 or w[0] != n_in:
            raise ValueError(f"affine input {x} (pre-scaled: {self.pre}) does not fit W {w}")
        for v in inputs[2:6]:
            if tuple(v.shape) != (1, 1, w[1]):
                raise ValueError(f"batch-norm parameter {v.shape}, expected {(1, 1, w[1])}")
        shape = tuple(self.out_shape) if self.out_shape else (x[0], x[1], w[1])
        if int(np.prod(shape)) != x[0] * x[1] * w[1]:
            raise ValueError(f"output shape {shape} does not hold {x[0]} x {x[1]} x {w[1]}")
        outputs[0].reset_shape(shape, True)

    def _pre(self, inputs):
        """The affine input (M, n_in) and, with pre-scaling, the shifted input x + shift."""
        x = data(inputs[0])
        m = x.shape[0] * x.shape[1]
        if not self.pre:
            return x.reshape(m, -1), None
        shift, scale = data(inputs[6]), data(inputs[7])
        shifted = x[..., :shift.shape[0]] + shift
        return (shifted * scale).reshape(m, -1), shifted

    def _columns(self, inputs, n_out):
        """(g, k): the batch-norm scale and shift with the head folded in, per output column
        (columns are the output's trailing axes flattened; the head's vectors are along the
        last of them), and the head's scale per column (None without a head)."""
        beta, gamma = (data(v).reshape(-1) for v in inputs[2:4])
        if not self.post:
            return gamma, beta, None
        j = 6 + 2 * self.pre
        scale, shift = data(inputs[j]), data(inputs[j + 1])
        reps = n_out // scale.shape[0]
        s_col = np.tile(scale, reps)
        return gamma * s_col, beta * s_col + np.tile(shift, reps), s_col

    def _normalise(self, a, inputs, update: bool):
        """a (M, n_out) -> (a - mean) / std in place; returns 1 / std. Batch statistics (the
        running ones updated with ``update``) or, in test mode, the running statistics."""
        r_mean, r_var = (data(v).reshape(-1) for v in inputs[4:6])
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
        z, _ = self._pre(inputs)
        a = z @ data(inputs[1])
        del z
        inv_std = self._normalise(a, inputs, update=True)  # a: the normalised activations
        self._cache = (a, inv_std) if self.batch_stat else None
        g, k, _ = self._columns(inputs, a.shape[1])
        out = output(outputs[0])
        y = out.reshape(a.shape)
        np.multiply(a, g, out=y)
        y += k
        if self.activation == "tanh":
            np.tanh(out, out=out)
        elif self.activation == "relu":
            np.maximum(out, 0, out=out)

    # ------------------------------------------------------------------ backward
    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        if self._cache is None:  # no training forward before: recompute
            z, _ = self._pre(inputs)
            a = z @ data(inputs[1])
            self._cache = (a, self._normalise(a, inputs, update=False))
        norm, inv_std = self._cache
        self._cache = None
        m = norm.shape[0]
        dy = outputs[0].grad.data.reshape(norm.shape)
        if self.activation == "tanh":
            y = data(outputs[0]).reshape(norm.shape)
            dp = y * y
            np.subtract(1.0, dp, out=dp)
            dp *= dy
        elif self.activation == "relu":
            dp = np.multiply(dy, data(outputs[0]).reshape(norm.shape) > 0)
        else:
            dp = dy.copy()
        s0 = column_sums(dp)          # column sums of d output
        s1 = column_sums(dp, norm)    # ... weighted by norm
        g, _, s_col = self._columns(inputs, norm.shape[1])
        beta, gamma = (data(v).reshape(-1) for v in inputs[2:4])
        col = 1.0 if s_col is None else s_col  # d output / d (gamma norm + beta)
        if propagate_down[2]:
            put_grad(inputs[2], (s0 * col).astype(np.float32), accum[2])
        if propagate_down[3]:
            put_grad(inputs[3], (s1 * col).astype(np.float32), accum[3])
        if self.post:
            j = 6 + 2 * self.pre
            width = data(inputs[j]).shape[0]
            if propagate_down[j]:
                put_grad(inputs[j], (gamma * s1 + beta * s0).reshape(-1, width).sum(axis=0)
                         .astype(np.float32), accum[j])
            if propagate_down[j + 1]:
                put_grad(inputs[j + 1], s0.reshape(-1, width).sum(axis=0).astype(np.float32), accum[j + 1])
        if self.batch_stat:  # through the batch mean and variance
            tmp = norm * (s1 / m).astype(np.float32)
            dp -= tmp
            del tmp
            dp -= (s0 / m).astype(np.float32)
        dp *= inv_std * g
        da = dp  # d loss / d (pre(x) @ W)
        w = data(inputs[1])
        if self.pre and not propagate_down[0]:
            self._pre_backward(inputs, da, w, propagate_down, accum)
            return
        z, shifted = self._pre(inputs)
        if propagate_down[1]:
            dw = grad_buffer(inputs[1], accum[1])
            put_grad(inputs[1], np.matmul(z.T, da, out=dw), accum[1])
        del z
        need_x = propagate_down[0] or (self.pre and (propagate_down[6] or propagate_down[7]))
        if not need_x:
            return
        if not self.pre:
            dx = grad_buffer(inputs[0], accum[0])
            put_grad(inputs[0], np.matmul(da, w.T, out=dx.reshape(da.shape[0], -1)), accum[0])
            return
        dz = da @ w.T
        scale = data(inputs[7])
        dz = dz.reshape(shifted.shape)
        if propagate_down[7]:
            put_grad(inputs[7], np.einsum("ij,ij->j", dz.reshape(-1, scale.shape[0]),
                                          shifted.reshape(-1, scale.shape[0])), accum[7])
        dz *= scale
        if propagate_down[6]:
            put_grad(inputs[6], dz.reshape(-1, scale.shape[0]).sum(axis=0), accum[6])
        if propagate_down[0]:
            x = data(inputs[0])
            if dz.shape == x.shape:
                put_grad(inputs[0], dz, accum[0])
            else:  # only the first bins were used
                dx = np.zeros(x.shape, np.float32)
                dx[..., :dz.shape[-1]] = dz
                put_grad(inputs[0], dx, accum[0])


    def _pre_backward(self, inputs, da, w, propagate_down, accum):
        """Gradients of W, shift and scale when the input needs none (fc1 on the mixture's
        spectrogram): with P = shifted^T da (n_in, n_out), dW = scale P, d scale = the row sums
        of W * P, d shift = scale (W @ column sums of da), summed over the columns sharing a
        bin; no input gradient (M, n_in) is formed: one product instead of two."""
        shift_v, scale_v = inputs[6], inputs[7]
        width = shift_v.shape[0]
        x = data(inputs[0])
        shifted = x[..., :width] + data(shift_v)
        p = shifted.reshape(da.shape[0], -1).T @ da
        del shifted
        scale = np.tile(data(scale_v), p.shape[0] // width)
        if propagate_down[7]:
            put_grad(scale_v, np.einsum("ij,ij->i", w, p).reshape(-1, width).sum(axis=0), accum[7])
        if propagate_down[6]:
            col = column_sums(da).astype(np.float32)
            put_grad(shift_v, (scale * (w @ col)).reshape(-1, width).sum(axis=0), accum[6])
        if propagate_down[1]:
            put_grad(inputs[1], np.multiply(p, scale[:, None], out=grad_buffer(inputs[1], accum[1])),
                     accum[1])


def affine_batch_norm(x, params, batch_stat: bool, activation=None, pre=None, post=None,
                      out_shape=None):
    """``activation(head(BN(pre(x) @ W)))`` in one function (see :class:`AffineBatchNorm`).

    Args: x (N, B, ...); params [W, beta, gamma, mean, var]; pre (shift, scale) vectors of the
    input's last axis; post (scale, shift) vectors of the output's last axis; out_shape.
    """
    import nnabla as nn
    fn = AffineBatchNorm(nn.get_current_context(), batch_stat, activation, pre is not None,
                         post is not None, out_shape)
    return fn(x, *params, *(pre or ()), *(post or ()))
