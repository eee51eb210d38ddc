"""The X-UMX network (magnitude to masks, test mode) as an ONNX graph, written with numpy only.

:func:`build_model` turns a configuration and its parameter arrays (the names of
:func:`xumx.params.parameter_spec`) into an ONNX ``ModelProto`` that computes
:meth:`xumx.training.model.OpenUnmixCrossNet.masks` in test mode. nnabla's own converter cannot: it has
no mapping for LSTM and fixes the frame count. The constant parts are folded when the graph is
written (in float64, then stored as float32):

* input mean and scale, and fc1's batch normalisation (running statistics), into fc1;
* fc2's batch normalisation into fc2; fc3's, and the output scale and mean, into fc3; fc3's
  bias into its matrix through one more fc2 unit per source that is constant 1;
* the fc1 layers of all sources into one matrix product, and with crossing the fc2 layers too
  (their input, the second crossing average, is shared);
* each source's multi-layer (bi)LSTM as one ONNX ``LSTM`` node per layer: nnabla's gate order
  i, f, g, o becomes ONNX's i, o, f, c; the weights of ``[x, h]`` are split into W (inputs)
  and R (recurrence); the one nnabla bias goes into Wb with zeros in Rb.

Graph input ``magnitude``: float32 (frames, batch, channels, bins), frames and batch dynamic;
output ``masks``: float32 (sources, frames, batch, channels, bins), non-negative. The serving
graph (:func:`serving_model`) stops before fc3: its output ``fc3_input`` is fc3's input, and
fc3 (the *head*, one matrix per source) is applied by :class:`xumx.engine.OnnxNet` a block of
frames at a time, so the whole masks never exist (docs/onnx-engine.md, "Memory"). The model's
configuration is stored as JSON in the metadata property ``xumx.config``; the source names in
``xumx.sources``.

Reduced precision (opt-in, ``precision="int8"``; the float32 graph is not changed by it): each
LSTM layer becomes onnxruntime's ``com.microsoft`` ``DynamicQuantizeLSTM`` (the dense layers
stay float32: fc2/fc3 as DynamicQuantizeMatMul saved at most 0.15 s of 1.7 per 30 s chunk and
cost 25 dB of mask SER; fc1's input, the raw magnitude, has a dynamic range one uint8 scale per
run would crush). The LSTMs' W and R are quantised here, in numpy
(:func:`quantize_symmetric`): symmetric, per output channel (one scale per gate unit of each
direction), zero point 0, levels -:data:`INT8_LEVEL`..:data:`INT8_LEVEL`. onnxruntime quantises
the activations itself (uint8, per tensor, the inputs per run and the hidden state at every
step) and accumulates in int32. The metadata property ``xumx.precision`` says "int8" (absent:
float32). SER and speed: docs/onnx-engine.md, "Reduced precision".

The bytes are written by :mod:`xumx.onnxproto` (the protobuf wire format of the few ONNX
messages used), so neither building nor running the model needs the ``onnx`` package (nor
protobuf or ml_dtypes): numpy builds it, onnxruntime runs it.
"""
import json
import os
from typing import Dict, Tuple

import numpy as np

from . import onnxproto
from .config import PRECISIONS, ModelConfig
from .params import gate_permutation

#: ONNX operator set of the graph: every operator used (MatMul, Gemm, Add, Tanh, Relu, LSTM,
#: Mean, ReduceMean, Gather, Concat, Slice, Reshape, Transpose, Shape, Unsqueeze) is in opset 13,
#: which every onnxruntime from 1.6 on runs (the oldest that installs beside nnabla on Python
#: 3.10 is 1.12; the newest on 3.13 still runs it).
OPSET = 13
#: ONNX IR version of opset 13 (onnx 1.8): newer onnx packages write newer IR versions by
#: default, which older onnxruntimes refuse.
IR_VERSION = 7
GRAPH_NAME = PRODUCER = "xumx"
INPUT = "magnitude"
OUTPUT = "masks"
SERVING_OUTPUT = "fc3_input"
#: The file beside a serving graph's ``<name>.onnx`` that holds its head (:func:`head_path`)
HEAD_SUFFIX = ".head.npy"
BN_EPS = 1e-5  # nnabla's batch_normalization default
#: ONNX's gate order i, o, f, c as indices into nnabla's (:mod:`xumx.params`)
ONNX_GATE_ORDER = gate_permutation("iofc")
#: The operator set of onnxruntime's contrib operators (DynamicQuantizeLSTM) and its version
MS_DOMAIN, MS_OPSET = "com.microsoft", 1
#: Largest int8 level of a quantised weight. 7 bits, not 127: onnxruntime's u8 x s8 kernels on
#: x86 CPUs without VNNI (AVX2: vpmaddubsw) add two products in int16, which saturates for
#: 255 x 127 x 2; at 63 it cannot (what onnxruntime's own quantiser calls reduce_range).
INT8_LEVEL = 63
#: The metadata property of a graph's precision (absent: float32, the graphs written before)
PRECISION_KEY = "xumx.precision"


def _affine_bn(arrays, name: str, scale_in=None, shift_in=None) -> Tuple[np.ndarray, np.ndarray]:
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


def folded_layers(cfg: ModelConfig, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The folded float32 constants of the network, by name.

    Shapes (S sources, C channels, H hidden, h LSTM hidden, D directions, K = H + D h):
    fc1_W (C max_bin, S H), fc1_b (S H); per source s: fc2_W_s (K, H), fc2_b_s (H,),
    fc3_W_s (H, C F), fc3_b_s (C F,); per source and layer l: lstm_W_s_l (D, 4h, in),
    lstm_R_s_l (D, 4h, h), lstm_B_s_l (D, 8h), gates in ONNX order.
    """
    c, h, d = cfg.nb_channels, cfg.lstm_hidden, cfg.nb_directions
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731

    def vec(kind, s):
        return np.tile(np.asarray(arrays[f"{kind}_{s}"], np.float64).ravel(), c)

    out = {}
    fc1 = [_affine_bn(arrays, f"fc1_{s}", vec("input_scale", s), vec("input_mean", s))
           for s in cfg.sources]
    out["fc1_W"] = f32(np.concatenate([w for w, _ in fc1], axis=1))
    out["fc1_b"] = f32(np.concatenate([b for _, b in fc1]))
    del fc1
    order = list(ONNX_GATE_ORDER)
    for s in cfg.sources:
        for layer in range(cfg.nb_layers):
            if layer == 0:
                w = np.asarray(arrays[f"lstm_{s}/lstm/weight_l0"], np.float32)
            else:
                w = np.asarray(arrays[f"lstm_{s}/lstm/weight"], np.float32)[layer - 1]
            w = w[:, order]  # (D, 4, h, in + h) in ONNX gate order
            n_in = w.shape[-1] - h
            out[f"lstm_W_{s}_{layer}"] = f32(w[..., :n_in].reshape(d, 4 * h, n_in))
            out[f"lstm_R_{s}_{layer}"] = f32(w[..., n_in:].reshape(d, 4 * h, h))
            b = np.asarray(arrays[f"lstm_{s}/lstm/bias"], np.float32)[layer][:, order]
            out[f"lstm_B_{s}_{layer}"] = f32(np.concatenate(
                [b.reshape(d, 4 * h), np.zeros((d, 4 * h), np.float32)], axis=1))
        w, b = _affine_bn(arrays, f"fc2_{s}")
        out[f"fc2_W_{s}"], out[f"fc2_b_{s}"] = f32(w), f32(b)
        w, b = _affine_bn(arrays, f"fc3_{s}")
        scale, mean = vec("output_scale", s), vec("output_mean", s)
        out[f"fc3_W_{s}"], out[f"fc3_b_{s}"] = f32(w * scale), f32(b * scale + mean)
    return out


def quantize_symmetric(w: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation of ``w`` with one scale per index of every axis except
    ``axis`` (the axis a product sums over: per output channel).

    Shapes: w (..., K, ...) float -> (q int8 like w, scale float32 like w without ``axis``);
    ``w`` is about ``q * scale`` (scale expanded at ``axis``), each error at most scale / 2,
    scale = max |w| over ``axis`` / :data:`INT8_LEVEL` (1 for an all-zero channel).
    """
    w = np.asarray(w, np.float32)
    peak = np.max(np.abs(w), axis=axis, keepdims=True)
    scale = np.where(peak > 0, peak / INT8_LEVEL, 1).astype(np.float32)
    q = np.clip(np.rint(w / scale), -INT8_LEVEL, INT8_LEVEL).astype(np.int8)
    return q, np.squeeze(scale, axis=axis)


class _Graph:
    """The graph being written: nodes with generated output names, and initializers, as
    :mod:`xumx.onnxproto` messages. ``tests/onnx_oracle.py`` has the same four methods with
    ``onnx.helper`` (the oracle of the bytes)."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], {}, 0
        self.domains = {}   # operator sets used beyond ONNX's own: {domain: version}

    def const(self, name: str, value) -> str:
        """An initializer (made once per name: later calls reuse it). The message refers to
        the array's buffer."""
        if name not in self.inits:
            self.inits[name] = onnxproto.tensor(name, np.asarray(value))
        return name

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, np.int64))

    def op(self, op_type: str, *inputs, outputs: int = 1, name: str = None,
           domain: str = None, **attrs):
        """A node; its output name(s). ``domain``: its operator set (None: ONNX's own); an
        input "" is one left out."""
        self._n += 1
        base = name or f"{op_type.lower()}_{self._n}"
        outs = [base] if outputs == 1 else [f"{base}:{k}" for k in range(outputs)]
        if domain is not None:
            self.domains[domain] = MS_OPSET
        self.nodes.append(onnxproto.node(op_type, list(inputs), outs, name=base, domain=domain,
                                         **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, inputs, outputs, doc_string: str,
              metadata: Dict[str, str]) -> onnxproto.Message:
        """The ``ModelProto`` of the graph: ``inputs`` and ``outputs`` are (name, shape) of
        float32 tensors (a shape's dimensions numbers or names)."""
        f32 = onnxproto.DataType.FLOAT
        graph = onnxproto.graph(
            self.nodes, GRAPH_NAME, [onnxproto.tensor_value_info(n, f32, s) for n, s in inputs],
            [onnxproto.tensor_value_info(n, f32, s) for n, s in outputs],
            initializers=list(self.inits.values()))
        opsets = [onnxproto.opset("", OPSET)] + [onnxproto.opset(d, v)
                                                 for d, v in self.domains.items()]
        return onnxproto.model(graph, IR_VERSION, opsets,
                               producer_name=PRODUCER, doc_string=doc_string, metadata=metadata)


def build_model(cfg: ModelConfig, arrays: Dict[str, np.ndarray],
                precision: str = PRECISIONS[0]) -> onnxproto.Message:
    """The network of ``cfg`` with the parameters ``arrays`` as an ONNX ``ModelProto``, not yet
    serialised (:meth:`xumx.onnxproto.Message.tobytes` does; :func:`model_bytes` is both).

    See the module docstring for the inputs, outputs and what is folded (the whole network,
    as :func:`export` writes it; :func:`serving_model` is what the separator runs).
    """
    return graph_model(cfg, folded_layers(cfg, arrays), precision=precision)


def serving_model(cfg: ModelConfig, arrays: Dict[str, np.ndarray],
                  precision: str = PRECISIONS[0]) -> Tuple[onnxproto.Message, np.ndarray]:
    """What :class:`xumx.engine.OnnxNet` runs: (the graph up to fc3, fc3's head).

    The graph's output :data:`SERVING_OUTPUT` (sources, frames batch, H + 1) is fc3's input
    (fc2's output after its ReLU, with one more unit per source that is constant 1); the head
    (sources, H + 1, channels bins) float32 is fc3 with its bias as that unit's row, so a
    source's masks are ``ReLU(input @ head[s])`` (mask = 0 where that is negative).
    """
    return _serving(cfg, folded_layers(cfg, arrays), precision)


def _serving(cfg: ModelConfig, layers: Dict[str, np.ndarray],
             precision: str) -> Tuple[onnxproto.Message, np.ndarray]:
    head = fc3_head(cfg, layers)
    return graph_model(cfg, layers, serving=True, precision=precision), head


def fc3_head(cfg: ModelConfig, layers: Dict[str, np.ndarray]) -> np.ndarray:
    """fc3's weights and bias of every source from :func:`folded_layers` (taken out of it):
    (sources, H + 1, channels bins) float32, the bias as the last row."""
    return np.stack([np.concatenate([layers.pop(f"fc3_W_{s}"), layers.pop(f"fc3_b_{s}")[None]])
                     for s in cfg.sources])


def head_path(graph_path: str) -> str:
    """The head file of the serving graph stored at ``graph_path`` (``<name>.onnx``)."""
    return os.path.splitext(graph_path)[0] + HEAD_SUFFIX


def _int8_lstm(g, x, name: str, w: np.ndarray, r: np.ndarray, b: np.ndarray, **attrs) -> str:
    """One LSTM layer (:func:`folded_layers`' W (D, 4h, in), R (D, 4h, h), B of it) as
    DynamicQuantizeLSTM, whose W and R are transposed, (D, in, 4h) and (D, h, 4h), and
    quantised per gate unit. Shapes: x (N, B, in) -> (N, D, B, h)."""
    wq, ws = quantize_symmetric(w.transpose(0, 2, 1), axis=1)   # (D, in, 4h), (D, 4h)
    rq, rs = quantize_symmetric(r.transpose(0, 2, 1), axis=1)
    zero = g.const(f"lstm_zero_{ws.shape[1]}", np.zeros(ws.shape, np.int8))
    return g.op("DynamicQuantizeLSTM", x, g.const(f"{name}_W_int8", wq),
                g.const(f"{name}_R_int8", rq), g.const(f"{name}_B", b), "", "", "", "",
                g.const(f"{name}_W_scale", ws), zero, g.const(f"{name}_R_scale", rs), zero,
                name=name, domain=MS_DOMAIN, **attrs)


def graph_model(cfg: ModelConfig, layers: Dict[str, np.ndarray], graph=None,
                serving: bool = False, precision: str = PRECISIONS[0]):
    """:func:`build_model` from :func:`folded_layers`, which it empties as it goes (the model
    refers to each array's buffer; nothing is copied until it is serialised). ``graph``: the
    writer (default :class:`_Graph`; the tests pass one made with ``onnx.helper``).
    ``serving``: the graph :class:`xumx.engine.OnnxNet` runs, without fc3, whose arrays are
    left in ``layers`` (:func:`serving_model`).
    ``precision``: one of :data:`PRECISIONS` (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    int8 = precision == "int8"
    g = graph if graph is not None else _Graph()
    ns, c, bins, hid = len(cfg.sources), cfg.nb_channels, cfg.nb_bins, cfg.hidden_size
    h, d = cfg.lstm_hidden, cfg.nb_directions
    x = INPUT
    lead = g.op("Slice", g.op("Shape", x), g.ints("zero", [0]), g.ints("two", [2]),
                name="frames_batch")  # [N, B]
    if cfg.max_bin < bins:
        x = g.op("Slice", x, g.ints("zero_bin", [0]), g.ints("max_bin", [cfg.max_bin]),
                 g.ints("bin_axis", [3]), name="crop")
    x = g.op("Reshape", x, g.ints("rows_in", [-1, c * cfg.max_bin]))           # (N B, C max_bin)
    enc = g.op("Gemm", x, g.const("fc1_W", layers.pop("fc1_W")), g.const("fc1_b", layers.pop("fc1_b")),
               name="fc1")
    enc = g.op("Tanh", enc, name="fc1_tanh")                                  # (N B, S H)
    enc = g.op("Reshape", enc, g.op("Concat", lead, g.ints("sources_hidden", [ns, hid]), axis=0),
               name="enc")                                                    # (N, B, S, H)
    enc_s = [g.op("Gather", enc, g.ints(f"index_{s}", j), axis=2, name=f"enc_{s}")
             for j, s in enumerate(cfg.sources)]                              # (N, B, H) each
    shared = g.op("ReduceMean", enc, axes=[2], keepdims=0, name="cross1") if cfg.crossing else None

    direction = "forward" if d == 1 else "bidirectional"
    lstm_out = []
    for j, s in enumerate(cfg.sources):
        y = shared if cfg.crossing else enc_s[j]
        for layer in range(cfg.nb_layers):
            name = f"lstm_{s}_{layer}"
            w, r, b = (layers.pop(f"lstm_{k}_{s}_{layer}") for k in "WRB")
            if int8:
                y = _int8_lstm(g, y, name, w, r, b, direction=direction, hidden_size=h)
            else:
                y = g.op("LSTM", y, *(g.const(f"lstm_{k}_{s}_{layer}", a)
                                      for k, a in zip("WRB", (w, r, b))),
                         hidden_size=h, direction=direction, name=name)      # (N, D, B, h)
            y = g.op("Transpose", y, perm=[0, 2, 1, 3])                       # (N, B, D, h)
            y = g.op("Reshape", y, g.ints("merge_directions", [0, 0, d * h]))  # (N, B, D h)
        lstm_out.append(y)

    # fc2 gets one more unit per source, constant 1 (zero weights, bias 1, unchanged by the
    # ReLU), and fc3 its bias as that unit's weights: fc3 is one MatMul (the head), which the
    # serving graph leaves to OnnxNet
    def unit(s):
        w, b = layers.pop(f"fc2_W_{s}"), layers.pop(f"fc2_b_{s}")
        return (np.concatenate([w, np.zeros((w.shape[0], 1), w.dtype)], axis=1),
                np.concatenate([b, np.ones(1, b.dtype)]))

    rows_k = g.ints("rows_skip", [-1, hid + d * h])
    if cfg.crossing:  # mean of the concatenations = concatenation of the means
        skip = g.op("Concat", shared, g.op("Mean", *lstm_out, name="cross2_lstm"), axis=2)
        w2, b2 = (np.concatenate(parts, axis=-1) for parts in zip(*map(unit, cfg.sources)))
        z = g.op("Gemm", g.op("Reshape", skip, rows_k), g.const("fc2_W", w2), g.const("fc2_b", b2),
                 name="fc2")                                                  # (N B, S (H + 1))
        z = g.op("Transpose", g.op("Reshape", z, g.ints("rows_sources", [-1, ns, hid + 1])),
                 perm=[1, 0, 2])                                              # (S, N B, H + 1)
    else:
        zs = []
        for j, s in enumerate(cfg.sources):
            skip = g.op("Reshape", g.op("Concat", enc_s[j], lstm_out[j], axis=2), rows_k)
            w2, b2 = unit(s)
            zs.append(g.op("Unsqueeze", g.op("Gemm", skip, g.const(f"fc2_W_{s}", w2),
                                             g.const(f"fc2_b_{s}", b2), name=f"fc2_{s}"),
                           g.ints(f"axis0_{s}", [0])))
        z = zs[0] if ns == 1 else g.op("Concat", *zs, axis=0)                # (S, N B, H + 1)
    meta = {"xumx.config": cfg.to_json(), "xumx.sources": json.dumps(list(cfg.sources))}
    if int8:
        meta[PRECISION_KEY] = precision
    if serving:                                                               # (S, N B, H + 1)
        g.op("Relu", z, name=SERVING_OUTPUT)
        assert all(k.startswith("fc3_") for k in layers), sorted(layers)
        doc = ("X-UMX (CrossNet-Open-Unmix) up to fc3 from a mixture magnitude spectrogram: "
               f"input {INPUT} (frames, batch, channels, bins), output {SERVING_OUTPUT} "
               "(sources, frames batch, hidden + 1), fc3's input; fc3 is the head file beside it")
        return g.model([(INPUT, ("frames", "batch", c, bins))],
                       [(SERVING_OUTPUT, (ns, "frames_batch", hid + 1))], doc, meta)
    z = g.op("Relu", z, name="fc2_relu")
    w3 = fc3_head(cfg, layers)                                                # (S, H + 1, C F)
    assert not layers, sorted(layers)
    y = g.op("MatMul", z, g.const("fc3_W", w3), name="fc3")                   # (S, N B, C F)
    y = g.op("Relu", y, name="mask_relu")
    shape = g.op("Concat", g.ints("nb_sources", [ns]), lead, g.ints("channels_bins", [c, bins]),
                 axis=0)
    g.op("Reshape", y, shape, name=OUTPUT)                                    # (S, N, B, C, F)
    doc = ("X-UMX (CrossNet-Open-Unmix) masks from a mixture magnitude spectrogram: "
           f"input {INPUT} (frames, batch, channels, bins), output {OUTPUT} "
           "(sources, frames, batch, channels, bins)")
    return g.model([(INPUT, ("frames", "batch", c, bins))],
                   [(OUTPUT, (ns, "frames", "batch", c, bins))], doc, meta)


def model_bytes(cfg: ModelConfig, arrays: Dict[str, np.ndarray],
                precision: str = PRECISIONS[0]) -> bytes:
    """:func:`build_model` serialised (what onnxruntime's InferenceSession reads)."""
    return build_model(cfg, arrays, precision).tobytes()


def serving_bytes(cfg: ModelConfig, arrays: Dict[str, np.ndarray],
                  precision: str = PRECISIONS[0]) -> Tuple[bytes, np.ndarray]:
    """:func:`serving_model` with the graph serialised."""
    graph, head = serving_model(cfg, arrays, precision)
    return graph.tobytes(), head


def file_model(model, precision: str = PRECISIONS[0]) -> Tuple[ModelConfig, bytes]:
    """(config, serialised model) of a model on disk (a :class:`xumx.modelfiles.ModelFiles`)
    in ``precision``: the whole network, as exported. The parameter arrays are released once
    folded, so memory holds at most the folded arrays and the model's bytes (two copies of the
    weights)."""
    cfg, layers = _file_layers(model)
    return cfg, graph_model(cfg, layers, precision=precision).tobytes()


def file_serving(model, precision: str = PRECISIONS[0]) -> Tuple[bytes, np.ndarray]:
    """:func:`serving_bytes` of a model on disk (as :func:`file_model`)."""
    graph, head = _serving(*_file_layers(model), precision)
    return graph.tobytes(), head


def _file_layers(model) -> Tuple[ModelConfig, Dict[str, np.ndarray]]:
    cfg, arrays = model.read()
    return cfg, folded_layers(cfg, arrays)   # the parameter arrays are released here


def export(model, out: str, precision: str = PRECISIONS[0]) -> ModelConfig:
    """Write the network of ``model`` (a :class:`xumx.modelfiles.ModelFiles`) to the ONNX file
    ``out``, atomically, in ``precision``; its config."""
    from .files import write_bytes
    cfg, data = file_model(model, precision=precision)
    write_bytes(out, data)
    return cfg
