"""A numpy (BLAS) implementation of the X-UMX network's inference, for CPUs.

It computes :meth:`xumx.model.OpenUnmixCrossNet.masks` (test mode) from the same parameter
arrays, about 30x faster than nnabla's CPU kernels. The constant parts are folded once, when
the weights are loaded: input mean and scale into fc1, batch normalisation (running
statistics) into every affine layer, output scale and mean into fc3, and the sigmoid's 1/2
into the LSTM gates (sigmoid(a) = (1 + tanh(a / 2)) / 2, so one ``tanh`` evaluates all four
gates). The affine layers of all sources run as one matrix product each where the inputs are
shared (the crossing averages); the LSTMs project the inputs of all frames in one product per
layer, and only the recurrent product ``h @ W_h`` stays in the time loop, for all sources and
both directions at once.

Shapes use: frames (N), channels (C), bins (F), sources (S), hidden size (H),
LSTM hidden size (h = H / 2 when bidirectional), directions (D).
"""
import contextlib
from typing import Dict

import numpy as np

from .config import ModelConfig
from .model import LSTM_GATES

BN_EPS = 1e-5  # nnabla's batch_normalization default
LSTM_BLOCK = 256  # frames whose LSTM input projections are made at once
GATES = LSTM_GATES  # i, f, g, o


def _affine_bn(arrays, name, scale_in=None, shift_in=None):
    """Fold ``BN(((x + shift_in) * scale_in) @ W)`` into ``x @ W' + b'`` (float64).

    Shapes: W (in, out); scale_in, shift_in (in,) or None -> (W' (in, out), b' (out,)).
    """
    w = np.asarray(arrays[f"{name}/affine/W"], np.float64)
    gamma, beta, mean, var = (np.asarray(arrays[f"{name}/bn/{p}"], np.float64).ravel()
                              for p in ("gamma", "beta", "mean", "var"))
    g = gamma / np.sqrt(var + BN_EPS)
    b = beta - mean * g
    if scale_in is not None:
        b = b + (shift_in * scale_in) @ w * g
        w = w * scale_in[:, None]
    return w * g, b


class NumpyNet:
    """The network's masks with numpy, from the published parameter arrays.

    Args:
        cfg: the network's shapes.
        arrays: {parameter name: array} (see :func:`xumx.model.parameter_spec`).
        dtype: compute type (float32, as nnabla; float64 for checks).
    """

    def __init__(self, cfg: ModelConfig, arrays: Dict[str, np.ndarray], dtype=np.float32):
        self.cfg = cfg
        self.dtype = dtype
        sources, c = cfg.sources, cfg.nb_channels
        h, d = cfg.lstm_hidden, cfg.nb_directions
        cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731

        def vec(kind, s):
            return np.asarray(arrays[f"{kind}_{s}"], np.float64).ravel()

        # fc1 of every source side by side: (C * max_bin, S * H), inputs channel-major.
        # Each folded array is cast as soon as it is made: the float64 copies stay small.
        fc1 = [tuple(map(cast, _affine_bn(arrays, f"fc1_{s}", np.tile(vec("input_scale", s), c),
                                          np.tile(vec("input_mean", s), c)))) for s in sources]
        self.fc1_w = np.concatenate([w for w, _ in fc1], axis=1)
        self.fc1_b = np.concatenate([b for _, b in fc1])
        del fc1

        # LSTM per layer: input weights (S, D, in, 4h), recurrent weights (S * D, h, 4h),
        # biases (S, D * 4h); gate columns i, f, g, o with i, f, o halved (sigmoid via tanh).
        half = np.ones(GATES * h)
        half[:2 * h] = 0.5
        half[3 * h:] = 0.5
        self.lstm = []
        for layer in range(cfg.nb_layers):
            wx, wh, bias = [], [], []
            for s in sources:
                if layer == 0:
                    w = np.asarray(arrays[f"lstm_{s}/lstm/weight_l0"])
                else:
                    w = np.asarray(arrays[f"lstm_{s}/lstm/weight"])[layer - 1]
                b = np.asarray(arrays[f"lstm_{s}/lstm/bias"], np.float64)[layer]
                w = w.reshape(d, GATES * h, -1) * half[:, None]  # (D, 4h, in + h)
                n_in = w.shape[-1] - h
                wx.append(cast(np.stack([w[k, :, :n_in].T for k in range(d)])))
                wh += [cast(w[k, :, n_in:].T) for k in range(d)]
                bias.append(cast((b.reshape(d, GATES * h) * half).ravel()))
            self.lstm.append((np.stack(wx), np.stack(wh), np.stack(bias)))
            del wx, wh

        fc2 = [tuple(map(cast, _affine_bn(arrays, f"fc2_{s}"))) for s in sources]
        self.fc2_w = np.stack([w for w, _ in fc2])  # (S, H + D h, H)
        self.fc2_b = np.stack([b for _, b in fc2])
        fc3 = []
        for s in sources:  # output scale and mean folded in: (S, H, C * F)
            w, b = _affine_bn(arrays, f"fc3_{s}")
            scale, mean = np.tile(vec("output_scale", s), c), np.tile(vec("output_mean", s), c)
            fc3.append((cast(w * scale), cast(b * scale + mean)))
        self.fc3_w = np.stack([w for w, _ in fc3])
        self.fc3_b = np.stack([b for _, b in fc3])

    # ------------------------------------------------------------------ layers
    def _lstm_layer(self, x, layer):
        """One (bi)directional LSTM layer for all sources, time-major.

        The input projections are made block by block as the time loop reaches them (the
        backward directions read the frames from the end), so no (N, S, D, 4h) array exists.
        Shapes: x (N, in) shared by all sources, or (N, S, in) -> (N, S, D h).
        """
        cfg = self.cfg
        h, d, ns = cfg.lstm_hidden, cfg.nb_directions, len(cfg.sources)
        wx, wh, bias = self.lstm[layer]
        n = x.shape[0]
        if x.ndim == 2:  # one product per direction for every source
            shared = [np.ascontiguousarray(wx[:, k].transpose(1, 0, 2).reshape(x.shape[1], -1))
                      for k in range(d)]

        def project(a, b):
            """Gate inputs of steps a:b (backward directions at frames n-1-a, ...): (b-a, S D, 4h)."""
            g = np.empty((b - a, ns, d, GATES * h), self.dtype)
            for k in range(d):
                # (a reversed view would make numpy skip BLAS: copy it)
                xs = x[a:b] if k == 0 else np.ascontiguousarray(x[n - b:n - a][::-1])
                if x.ndim == 2:
                    g[:, :, k] = (xs @ shared[k]).reshape(b - a, ns, GATES * h)
                else:
                    for j in range(ns):
                        g[:, j, k] = xs[:, j] @ wx[j, k]
            g += bias.reshape(ns, d, GATES * h)
            return g.reshape(b - a, ns * d, GATES * h)

        out = _recurrence(project, n, wh, h).reshape(n, ns, d, h)
        if d > 1:  # the backward directions ran from the last frame
            out[:, :, 1] = out[::-1, :, 1].copy()
        return out.reshape(n, ns, d * h)

    def masks(self, mag: np.ndarray) -> np.ndarray:
        """Shapes: mag (N, C, F) -> masks (S, N, C, F) of ``dtype``, non-negative."""
        cfg = self.cfg
        n = mag.shape[0]
        ns, hid = len(cfg.sources), cfg.hidden_size
        if mag.shape[1:] != (cfg.nb_channels, cfg.nb_bins):
            raise ValueError(f"model expects (frames, {cfg.nb_channels}, {cfg.nb_bins}) "
                             f"magnitudes, got {mag.shape}")
        x = np.ascontiguousarray(mag[..., :cfg.max_bin], dtype=self.dtype).reshape(n, -1)
        enc = x @ self.fc1_w
        del x
        enc += self.fc1_b
        np.tanh(enc, out=enc)
        enc = enc.reshape(n, ns, hid)  # (N, S, H)
        y = enc.mean(axis=1) if cfg.crossing else enc
        for layer in range(cfg.nb_layers):
            y = self._lstm_layer(y, layer)  # (N, S, D h)
        if cfg.crossing:
            skip = np.concatenate([enc.mean(axis=1), y.mean(axis=1)], axis=1)  # (N, H + D h)
            w2 = self.fc2_w.transpose(1, 0, 2).reshape(skip.shape[1], ns * hid)
            z = (skip @ w2).reshape(n, ns, hid).transpose(1, 0, 2)
        else:
            z = np.matmul(np.concatenate([enc, y], axis=2).transpose(1, 0, 2), self.fc2_w)
        z = np.maximum(z + self.fc2_b[:, None], 0)  # (S, N, H)
        out = np.empty((ns, n, cfg.nb_channels * cfg.nb_bins), self.dtype)
        for j in range(ns):
            np.matmul(z[j], self.fc3_w[j], out=out[j])
            out[j] += self.fc3_b[j]
        np.maximum(out, 0, out=out)
        return out.reshape(ns, n, cfg.nb_channels, cfg.nb_bins)


def _recurrence(project, n: int, wh: np.ndarray, h: int) -> np.ndarray:
    """The LSTM time loop for a batch of independent cells.

    ``project(a, b)`` gives the input projections plus bias of steps a:b, (b - a, B, 4h), in
    tanh form (the i, f, o columns already halved); wh (B, h, 4h) -> hidden states (N, B, h).
    """
    batch = wh.shape[0]
    out = np.empty((n, batch, h), wh.dtype)
    hid = np.zeros((batch, 1, h), wh.dtype)
    c = np.zeros((batch, h), wh.dtype)
    rec = np.empty((batch, 1, GATES * h), wh.dtype)
    tmp = np.empty((batch, h), wh.dtype)
    for start in range(0, n, LSTM_BLOCK):
        gx = project(start, min(n, start + LSTM_BLOCK))
        with _single_thread_blas():
            for t in range(gx.shape[0]):
                np.matmul(hid, wh, out=rec)
                g = rec[:, 0]
                g += gx[t]
                np.tanh(g, out=g)
                g[:, :2 * h] += 1.0
                g[:, 3 * h:] += 1.0            # now 2 sigmoid for i, f, o; tanh for g
                np.multiply(g[:, h:2 * h], c, out=c)
                np.multiply(g[:, :h], g[:, 2 * h:3 * h], out=tmp)
                c += tmp
                c *= 0.5
                np.tanh(c, out=tmp)
                tmp *= g[:, 3 * h:]
                tmp *= 0.5
                out[start + t] = tmp
                hid[:, 0] = tmp
    return out


def _single_thread_blas():
    """Limit BLAS to one thread where threadpoolctl is installed: the small recurrent
    products are several times faster without thread start-up costs."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    if _CONTROLLER is None:  # finding the BLAS libraries once, not at every block
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER = None
