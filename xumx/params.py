"""The parameter contract of the network, without nnabla: every parameter's name, shape and
trainability in the published creation order (the layout of ``x-umx.h5``), and the LSTM gate
layout.

Everything that reads, writes, checks or converts parameters (weights files, checkpoints, the
ONNX graph, the fast training kernels, the NNabla model) takes the layout from here, so it is
written once and separation never needs nnabla to know it.
"""
from typing import TYPE_CHECKING, List, Tuple

if TYPE_CHECKING:
    from .config import ModelConfig


#: The gates of an LSTM cell in the order nnabla's weight and bias arrays hold them: input,
#: forget, cell candidate (``g``, ONNX's ``c``), output.
LSTM_GATE_ORDER = ("i", "f", "g", "o")
LSTM_GATES = len(LSTM_GATE_ORDER)


def gate_permutation(order: str) -> Tuple[int, ...]:
    """Indices into nnabla's gates that give them in ``order`` (letters of
    :data:`LSTM_GATE_ORDER`, ``c`` also naming the cell candidate).

    >>> gate_permutation("iofc")      # ONNX's LSTM
    (0, 3, 1, 2)
    """
    letters = [("g" if x == "c" else x) for x in order]
    if sorted(letters) != sorted(LSTM_GATE_ORDER):
        raise ValueError(f"not an order of the gates {LSTM_GATE_ORDER}: {order!r}")
    return tuple(LSTM_GATE_ORDER.index(x) for x in letters)


def parameter_spec(cfg: "ModelConfig") -> List[Tuple[str, Tuple[int, ...], bool]]:
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
