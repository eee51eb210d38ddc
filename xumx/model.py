"""The CrossNet-Open-Unmix network in NNabla.

Parameters live in the model's own parameter dictionary (never nnabla's global one) under the
names of the published ``x-umx.h5`` (see :func:`parameter_spec`), so the published file loads
with no conversion and several models can coexist in one process.
"""
from collections import OrderedDict
from typing import Dict, List, Tuple

import numpy as np

from .config import ModelConfig

#: LSTM gates per cell, in nnabla's order: input, forget, cell candidate, output.
LSTM_GATES = 4


def parameter_spec(cfg: ModelConfig) -> List[Tuple[str, Tuple[int, ...], bool]]:
    """(name, shape, need_grad) of every parameter, in the published creation order.

    For the default configuration this is exactly the layout of ``x-umx.h5``: 88 arrays,
    35,548,816 trainable values.
    """
    spec = []
    for kind, width in (("input_mean", cfg.max_bin), ("input_scale", cfg.max_bin),
                        ("output_scale", cfg.nb_bins), ("output_mean", cfg.nb_bins)):
        spec += [(f"{kind}_{s}", (width,), True) for s in cfg.sources]

    def fc_bn(name, n_in, n_out):
        return [(f"{name}/affine/W", (n_in, n_out), True)] + [
            (f"{name}/bn/{p}", (1, 1, n_out), p in ("beta", "gamma"))
            for p in ("beta", "gamma", "mean", "var")]

    for s in cfg.sources:
        spec += fc_bn(f"fc1_{s}", cfg.nb_channels * cfg.max_bin, cfg.hidden_size)
    h, d = cfg.lstm_hidden, cfg.nb_directions
    for s in cfg.sources:
        spec.append((f"lstm_{s}/lstm/weight_l0", (d, LSTM_GATES, h, cfg.hidden_size + h), True))
        if cfg.nb_layers > 1:
            spec.append((f"lstm_{s}/lstm/weight", (cfg.nb_layers - 1, d, LSTM_GATES, h, d * h + h), True))
        spec.append((f"lstm_{s}/lstm/bias", (cfg.nb_layers, d, LSTM_GATES, h), True))
    lstm_out = h * d
    for s in cfg.sources:
        spec += fc_bn(f"fc2_{s}", cfg.hidden_size + lstm_out, cfg.hidden_size)
    for s in cfg.sources:
        spec += fc_bn(f"fc3_{s}", cfg.hidden_size, cfg.nb_channels * cfg.nb_bins)
    return spec


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
        from nnabla.parameter import get_parameter_or_create
        with self.scope():
            for kind, values in self._init.items():
                for s in cfg.sources:
                    get_parameter_or_create(f"{kind}_{s}", values.shape,
                                            initializer=values.astype(np.float32))

    # ----------------------------------------------------------------- parameters
    def scope(self):
        """Context manager making this model's dictionary the current parameter scope."""
        import nnabla as nn
        return nn.parameter_scope("", self.params)

    def get_parameters(self, grad_only: bool = False) -> "OrderedDict":
        """Flat {name: nn.Variable} of the parameters created so far, in creation order."""
        import nnabla as nn
        with self.scope():
            return nn.get_parameters(grad_only=grad_only)

    def set_parameters(self, arrays: Dict[str, np.ndarray]):
        """Create every parameter of :func:`parameter_spec` from ``arrays`` (name -> array)."""
        from nnabla.parameter import get_parameter_or_create
        with self.scope():
            for name, shape, need_grad in parameter_spec(self.cfg):
                value = np.asarray(arrays[name], dtype=np.float32).reshape(shape)
                var = get_parameter_or_create(name, shape, need_grad=need_grad)
                var.d = value

    def _vector(self, kind, source, width):
        from nnabla.parameter import get_parameter_or_create
        import nnabla.functions as F
        return F.reshape(get_parameter_or_create(f"{kind}_{source}", (width,)),
                         (1, 1, 1, width), inplace=False)

    def _fc_bn(self, x, n_out, name, test, activation=None):
        import nnabla.functions as F
        import nnabla.parametric_functions as PF
        from nnabla.initializer import UniformInitializer, calc_uniform_lim_glorot
        n_in = int(np.prod(x.shape[2:]))
        w_init = UniformInitializer(calc_uniform_lim_glorot(n_in, n_out), rng=self.rng)
        y = PF.affine(x, n_out, base_axis=2, with_bias=False, w_init=w_init, name=name)
        y = PF.batch_normalization(y, axes=[2], batch_stat=not test, name=name)
        if activation == "tanh":
            return F.tanh(y)
        if activation == "relu":
            return F.relu(y)
        return y

    def _lstm(self, x, name, test):
        import nnabla as nn
        import nnabla.parametric_functions as PF
        cfg = self.cfg
        state = (cfg.nb_layers, cfg.nb_directions, x.shape[1], cfg.lstm_hidden)
        h = nn.Variable.from_numpy_array(np.zeros(state, np.float32), need_grad=False)
        c = nn.Variable.from_numpy_array(np.zeros(state, np.float32), need_grad=False)
        y, _, _ = PF.lstm(x, h, c, num_layers=cfg.nb_layers, bidirectional=not cfg.unidirectional,
                          training=not test, dropout=0.4 if cfg.nb_layers > 1 else 0.0,
                          rng=self.rng, name=name)
        return y

    # ----------------------------------------------------------------- forward
    def masks(self, mix_spec, test: bool = True):
        """Masks from the mixture magnitude.

        Shapes: mix_spec Variable (N, B, C, F) with C = cfg.nb_channels, F = cfg.nb_bins
        -> list over ``cfg.sources`` of non-negative masks (N, B, C, F).
        """
        import nnabla.functions as F
        cfg = self.cfg
        frames, batch, channels, bins = mix_spec.shape
        if channels != cfg.nb_channels or bins != cfg.nb_bins:
            raise ValueError(f"model expects (frames, batch, {cfg.nb_channels}, {cfg.nb_bins}) "
                             f"spectrograms, got {mix_spec.shape}")

        def mean(xs):
            return xs[0] if len(xs) == 1 else F.add_n(*xs) / float(len(xs))

        with self.scope():
            x = mix_spec[..., :cfg.max_bin]
            enc = [self._fc_bn((x + self._vector("input_mean", s, cfg.max_bin))
                               * self._vector("input_scale", s, cfg.max_bin),
                               cfg.hidden_size, f"fc1_{s}", test, "tanh") for s in cfg.sources]
            lstm_in = [mean(enc)] * len(enc) if cfg.crossing else enc
            skip = [F.concatenate(e, self._lstm(i, f"lstm_{s}", test), axis=2)
                    for s, e, i in zip(cfg.sources, enc, lstm_in)]
            dec_in = [mean(skip)] * len(skip) if cfg.crossing else skip
            hid = [self._fc_bn(d, cfg.hidden_size, f"fc2_{s}", test, "relu")
                   for s, d in zip(cfg.sources, dec_in)]
            dec = [self._fc_bn(h, channels * bins, f"fc3_{s}", test) for s, h in zip(cfg.sources, hid)]
            return [F.relu(F.reshape(y, (frames, batch, channels, bins))
                           * self._vector("output_scale", s, bins) + self._vector("output_mean", s, bins))
                    for s, y in zip(cfg.sources, dec)]

    def __call__(self, audio, test: bool = True):
        """The published forward pass from audio: STFT front end, then :meth:`masks`.

        Shapes: audio Variable (B, C_in, T) -> (mix_spec (N, B, C, F), masks list of
        (N, B, C, F), (real, imag) of the mixture STFT, each (B, C_in, F, N)). With a mono
        model (C = 1) the magnitude is averaged over the input channels.
        """
        import nnabla.functions as F
        from .dsp import graph_stft
        real, imag = graph_stft(audio, self.cfg.nfft, self.cfg.nhop)
        mag = F.pow_scalar(real ** 2 + imag ** 2, 0.5)
        if self.cfg.nb_channels == 1:
            mag = F.mean(mag, axis=1, keepdims=True)
        mix_spec = F.transpose(mag, (3, 0, 1, 2))
        return mix_spec, self.masks(mix_spec, test), (real, imag)
