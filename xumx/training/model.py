"""The CrossNet-Open-Unmix network in NNabla.

Parameters live in the model's own parameter dictionary (never nnabla's global one) under the
names of the published ``x-umx.h5`` (see :func:`parameter_spec`), so the published file loads
with no conversion and several models can coexist in one process.
"""
from collections import OrderedDict
from typing import Dict

import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.initializer import ConstantInitializer, UniformInitializer, calc_uniform_lim_glorot
from nnabla.parameter import get_parameter, get_parameter_or_create

from ..config import ModelConfig
from ..params import LSTM_GATES, parameter_spec


class LstmDropout:
    """The dropout between LSTM layers of a training graph: its ``rate`` and the generator its
    masks come from.

    ``keep(shape)`` draws a boolean mask that keeps each element with probability 1 - rate.
    :meth:`reseed` restarts the generator from a key (the trainer's is (seed, epoch, rank + 1,
    :data:`STREAM`), so a resumed epoch draws the masks of the original run). Where nnabla's
    own functions build the graph, only ``rate`` is used (cuDNN draws its own masks; nnabla's
    CPU LSTM applies none).
    """
    #: The last entry of the trainer's key: the dropout's stream, apart from the data's.
    STREAM = 1

    def __init__(self, rate: float, key=(0,)):
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), not {rate}")
        self.rate = float(rate)
        self.reseed(key)

    def reseed(self, key):
        """Restart the generator from ``key`` (an int or a sequence of ints)."""
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))

    def keep(self, shape) -> np.ndarray:
        """A boolean mask of ``shape``: True where an element is kept."""
        return self.rng.random(shape, dtype=np.float32) >= np.float32(self.rate)


class OpenUnmixCrossNet:
    """X-UMX: per-source Open-Unmix networks bridged by two averages.

    Per source s, on the magnitude spectrogram cropped to ``max_bin`` bins: input mean and
    scale, fc1 + BN + tanh; **crossing 1**, the mean of the fc1 outputs, feeds every
    source's LSTM; the skip concatenation [own fc1 output, LSTM output]; **crossing 2**,
    the mean of those concatenations, feeds every source's fc2 + BN + ReLU; then
    fc3 + BN, output scale and mean, and a ReLU mask over all ``nb_bins`` bins.
    With ``cfg.crossing`` False both averages are skipped (plain UMX).

    Args:
        cfg: the network's shapes.
        input_mean, input_scale: dataset mean and standard deviation of the mixture
            magnitude, (>= max_bin,), used only to initialise new parameters (stored
            negated and inverted, as the published code).
        rng: numpy RandomState for the initialisation of new parameters.
    """

    def __init__(self, cfg: ModelConfig, input_mean=None, input_scale=None, rng=None):
        self.cfg = cfg
        self.params: "OrderedDict" = OrderedDict()
        self.rng = rng if rng is not None else np.random.RandomState(0)
        mean = np.zeros(cfg.max_bin) if input_mean is None else np.asarray(input_mean)[:cfg.max_bin]
        scale = np.ones(cfg.max_bin) if input_scale is None else np.asarray(input_scale)[:cfg.max_bin]
        self._init = {"input_mean": -mean, "input_scale": 1.0 / scale,
                      "output_scale": np.ones(cfg.nb_bins), "output_mean": np.ones(cfg.nb_bins)}
        # the per-source vectors come first, as in the published creation order
        with self.scope():
            for kind, values in self._init.items():
                for s in cfg.sources:
                    get_parameter_or_create(f"{kind}_{s}", values.shape,
                                            initializer=values.astype(np.float32))

    # ----------------------------------------------------------------- parameters
    def scope(self):
        """Context manager making this model's dictionary the current parameter scope."""
        return nn.parameter_scope("", self.params)

    def get_parameters(self, grad_only: bool = False) -> "OrderedDict":
        """Flat {name: nn.Variable} of the parameters created so far, in creation order."""
        with self.scope():
            return nn.get_parameters(grad_only=grad_only)

    def set_parameters(self, arrays: Dict[str, np.ndarray]):
        """Create every parameter of :func:`parameter_spec` from ``arrays`` (name -> array)."""
        with self.scope():
            for name, shape, need_grad in parameter_spec(self.cfg):
                value = np.asarray(arrays[name], dtype=np.float32).reshape(shape)
                var = get_parameter_or_create(name, shape, need_grad=need_grad)
                var.d = value

    def _vector(self, kind, source, width):
        return get_parameter_or_create(f"{kind}_{source}", (width,))

    def _fc_bn_parameters(self, name, n_in, n_out):
        """[W, beta, gamma, mean, var] of one fc + batch-norm layer, created as ``PF.affine`` and
        ``PF.batch_normalization`` create them (same names, initialisers and random draws)."""
        with nn.parameter_scope(name):
            with nn.parameter_scope("affine"):
                w_init = UniformInitializer(calc_uniform_lim_glorot(n_in, n_out), rng=self.rng)
                params = [get_parameter_or_create("W", (n_in, n_out), w_init, True)]
            with nn.parameter_scope("bn"):
                for p, value, need_grad in (("beta", 0, True), ("gamma", 1, True),
                                            ("mean", 0, False), ("var", 1, False)):
                    params.append(get_parameter_or_create(p, (1, 1, n_out), ConstantInitializer(value),
                                                          need_grad))
        return params

    def _fc_bn_layer(self, xs, n_out, name, test, activation=None, pre=None, post=None,
                     out_shape=None):
        """The fc + batch-norm layer ``name`` of every source: per source
        ``activation(post(BN(pre(x) @ W)))``, x (N, B, ...) -> (N, B, n_out) or ``out_shape``.

        ``xs``: one input shared by the sources or one per source; ``pre(source)``: its
        (shift, scale) vectors: the affine sees (x[..., :w] + shift) * scale; ``post(source)``:
        its (scale, shift) vectors: the output reshaped to ``out_shape`` times scale plus shift.
        Parameters are created source by source, its vectors then its layer's (the published
        order). On CPU contexts the layer is one function (:mod:`xumx.training.kernels.layers`).
        """
        from . import kernels
        params, pres, posts = [], [], []
        for k, source in enumerate(self.cfg.sources):
            x = xs[0] if len(xs) == 1 else xs[k]
            pres.append(pre(source) if pre else None)
            posts.append(post(source) if post else None)
            width = pres[-1][0].shape[0] if pre else x.shape[-1]
            params.append(self._fc_bn_parameters(f"{name}_{source}", int(np.prod(x.shape[2:-1])) * width,
                                                 n_out))
        if kernels.enabled():
            from .kernels.layers import sources_affine_batch_norm
            return sources_affine_batch_norm(xs, params, not test, activation, pre and pres,
                                             post and posts, out_shape)
        return [self._graph_fc_bn(xs[0] if len(xs) == 1 else xs[k], params[k], test, activation,
                                  pres[k], posts[k], out_shape) for k in range(len(params))]

    @staticmethod
    def _graph_fc_bn(x, params, test, activation, pre, post, out_shape):
        """One source's layer of :meth:`_fc_bn_layer` from nnabla's functions."""
        def along_last(v, ndim):
            return F.reshape(v, (1,) * (ndim - 1) + v.shape, inplace=False)
        if pre:
            width = pre[0].shape[0]
            if x.shape[-1] != width:
                x = x[..., :width]
            x = (x + along_last(pre[0], x.ndim)) * along_last(pre[1], x.ndim)
        y = F.affine(x, params[0], base_axis=2)
        y = F.batch_normalization(y, *params[1:], axes=[2], batch_stat=not test)
        if post:
            y = F.reshape(y, out_shape)
            y = y * along_last(post[0], y.ndim) + along_last(post[1], y.ndim)
        if activation == "tanh":
            return F.tanh(y)
        if activation == "relu":
            return F.relu(y)
        return y

    def _lstm_parameters(self, source, input_size):
        """[weight_l0, (weight,) bias] of one source's LSTM, created as ``PF.lstm`` creates them
        (same names, initialisers and random draws)."""
        cfg = self.cfg
        h, d, layers = cfg.lstm_hidden, cfg.nb_directions, cfg.nb_layers

        def glorot(n_in, shape):
            return UniformInitializer(calc_uniform_lim_glorot(n_in, h), rng=self.rng)(shape)

        def create(name, shape, n_in):  # input weights, then recurrent ones
            if get_parameter(name) is None:
                init = np.concatenate([glorot(n_in, shape[:-1] + (shape[-1] - h,)),
                                       glorot(h, shape[:-1] + (h,))], axis=-1)
                return get_parameter_or_create(name, shape, init, True)
            return get_parameter_or_create(name, shape)

        with nn.parameter_scope(f"lstm_{source}"), nn.parameter_scope("lstm"):
            params = [create("weight_l0", (d, LSTM_GATES, h, input_size + h), input_size)]
            if layers > 1:
                params.append(create("weight", (layers - 1, d, LSTM_GATES, h, d * h + h), d * h))
            params.append(get_parameter_or_create("bias", (layers, d, LSTM_GATES, h),
                                                  np.zeros((layers, d, LSTM_GATES, h), np.float32), True))
        return params

    def _lstms(self, inputs, test, dropout=None):
        """The LSTM outputs (N, B, D h) of every source; ``inputs``: one (N, B, hidden) Variable
        shared by all sources (crossing) or one per source; ``dropout``: a :class:`LstmDropout`
        between layers in training (None: none). On CPU contexts all sources run in one fused
        function (:mod:`xumx.training.kernels.lstm`), elsewhere in nnabla's ``F.lstm``."""
        from . import kernels
        cfg = self.cfg
        params = [self._lstm_parameters(s, inputs[0].shape[2]) for s in cfg.sources]
        if kernels.enabled():
            from .kernels.lstm import sources_lstm
            return sources_lstm(inputs, params, cfg.nb_layers, not cfg.unidirectional,
                                training=not test, dropout=dropout)
        state = (cfg.nb_layers, cfg.nb_directions, inputs[0].shape[1], cfg.lstm_hidden)
        zero = nn.Variable.from_numpy_array(np.zeros(state, np.float32), need_grad=False)
        out = []
        for k, p in enumerate(params):
            x = inputs[0] if len(inputs) == 1 else inputs[k]
            w = dict(zip(("weight_l0", "weight", "bias") if len(p) == 3 else ("weight_l0", "bias"), p))
            y, _, _ = F.lstm(x, zero, zero, num_layers=cfg.nb_layers, bidirectional=not cfg.unidirectional,
                             training=not test, dropout=dropout.rate if dropout else 0.0, **w)
            out.append(y)
        return out

    # ----------------------------------------------------------------- forward
    def masks(self, mix_spec, test: bool = True, dropout: "LstmDropout" = None):
        """Masks from the mixture magnitude; ``dropout`` between the LSTM layers when not
        ``test`` (None: none).

        Shapes: mix_spec Variable (N, B, C, F) with C = cfg.nb_channels, F = cfg.nb_bins
        -> list over ``cfg.sources`` of non-negative masks (N, B, C, F).
        """
        cfg = self.cfg
        frames, batch, channels, bins = mix_spec.shape
        if channels != cfg.nb_channels or bins != cfg.nb_bins:
            raise ValueError(f"model expects (frames, batch, {cfg.nb_channels}, {cfg.nb_bins}) "
                             f"spectrograms, got {mix_spec.shape}")

        def mean(xs):
            return xs[0] if len(xs) == 1 else F.add_n(*xs) / float(len(xs))

        with self.scope():
            vec = self._vector
            enc = self._fc_bn_layer([mix_spec], cfg.hidden_size, "fc1", test, "tanh",
                                    pre=lambda s: (vec("input_mean", s, cfg.max_bin),
                                                   vec("input_scale", s, cfg.max_bin)))
            lstm_out = self._lstms([mean(enc)] if cfg.crossing else enc, test, dropout)
            skip = [F.concatenate(e, y, axis=2) for e, y in zip(enc, lstm_out)]
            hid = self._fc_bn_layer([mean(skip)] if cfg.crossing else skip, cfg.hidden_size, "fc2",
                                    test, "relu")
            return self._fc_bn_layer(hid, channels * bins, "fc3", test, "relu",
                                     post=lambda s: (vec("output_scale", s, bins),
                                                     vec("output_mean", s, bins)),
                                     out_shape=(frames, batch, channels, bins))

    def __call__(self, audio, test: bool = True):
        """The published forward pass from audio: STFT front end, then :meth:`masks`.

        Shapes: audio Variable (B, C_in, T) -> (mix_spec (N, B, C, F), masks list of
        (N, B, C, F), (real, imag) of the mixture STFT, each (N, B, C_in, F)). With a mono
        model (C = 1) the magnitude is averaged over the input channels.
        """
        from .stft import graph_spectrogram
        mix_spec, real, imag = graph_spectrogram(audio, self.cfg.nfft, self.cfg.nhop)
        if self.cfg.nb_channels == 1:
            mix_spec = F.mean(mix_spec, axis=2, keepdims=True)
        return mix_spec, self.masks(mix_spec, test), (real, imag)
