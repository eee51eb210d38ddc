"""xumx.onnxproto, the protobuf writer of the ONNX model: its bytes are onnx.helper's, byte for
byte (the oracle: tests/onnx_oracle.py), pass onnx's full check, and onnxruntime computes on
them what onnx's reference evaluator computes. The onnx package is a test dependency only."""
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import tiny_config
from onnx_oracle import HelperGraph
from xumx import onnxproto
from xumx.config import ModelConfig
from xumx.onnxnet import INPUT, folded_layers, graph_model, model_bytes
from seeded import random_arrays


# ------------------------------------------------------------------ the wire format's pieces
@pytest.mark.parametrize("value,encoded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (2 ** 63 - 1, b"\xff" * 8 + b"\x7f"), (-1, b"\xff" * 9 + b"\x01"),
    (-2 ** 63, b"\x80" * 9 + b"\x01"),
])
def test_varint(value, encoded):
    """Base-128 groups, least significant first; negative numbers as 64-bit two's complement."""
    assert onnxproto.varint(value) == encoded


def test_varint_refuses_what_does_not_fit():
    for value in (2 ** 64, -2 ** 63 - 1 - 2 ** 64):
        with pytest.raises(ValueError, match="does not fit in 64 bits"):
            onnxproto.varint(value)


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.asarray(3, np.int64),                         # a scalar: no dims
    np.asarray([-1, 0, 2 ** 40], np.int64),          # negative and large int64 data
    np.zeros((2, 0, 3), np.float32),                 # empty
    np.linspace(-1, 1, 10).reshape(2, 5),            # float64
    np.asarray([[1, -2], [3, 4]], np.int32),
    np.asarray([True, False, True]),
    np.asarray([1.5, -2.25], np.float16),
    np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1),   # not C-contiguous
], ids=lambda a: f"{a.dtype}{a.shape}")
def test_tensor_is_numpy_helpers(array):
    ours = onnxproto.tensor("w", array).tobytes()
    assert ours == numpy_helper.from_array(array, "w").SerializeToString()
    back = numpy_helper.to_array(TensorProto.FromString(ours))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_tensor_of_a_big_endian_array_stores_little_endian_data():
    a = np.arange(6, dtype=np.float32) / 3
    assert onnxproto.tensor("w", a.astype(">f4")).tobytes() == onnxproto.tensor("w", a).tobytes()


def test_tensor_refers_to_the_array_instead_of_copying():
    a = np.arange(1000, dtype=np.float32)
    msg = onnxproto.tensor("w", a)
    views = [p for p in msg.parts if isinstance(p, memoryview)]
    assert len(views) == 1 and np.shares_memory(np.asarray(views[0]), a)


def test_tensor_refuses_an_unknown_type_in_one_line():
    with pytest.raises(ValueError) as e:
        onnxproto.tensor("w", np.asarray(["a"]))
    assert str(e.value).count("\n") == 0 and "no ONNX tensor type for numpy dtype <U1" in str(e.value)


@pytest.mark.parametrize("value", [0, 1, -1, 2 ** 40, True, 1.5, -0.1, "forward", b"raw",
                                   [0, 2, 1, 3], [-1], [0.5, -2.0], [1, 2.5]],
                         ids=repr)
def test_attribute_is_helpers(value):
    assert onnxproto.attribute("a", value).tobytes() == \
        helper.make_attribute("a", value).SerializeToString()


@pytest.mark.parametrize("value", [[], ["x", "y"], None, {"k": 1}])
def test_attribute_refuses_what_it_cannot_write_in_one_line(value):
    with pytest.raises(ValueError) as e:
        onnxproto.attribute("a", value)
    assert str(e.value).count("\n") == 0 and str(e.value).startswith("attribute 'a': cannot write")


def small_model_pair():
    """The same model (a Gemm with attributes and an initializer, a Relu with a domain, a
    dimension of unknown size) written by onnxproto and by onnx.helper."""
    w = np.arange(6, dtype=np.float32).reshape(3, 2) - 2
    ours = onnxproto.model(
        onnxproto.graph(
            [onnxproto.node("Gemm", ["x", "w"], ["y"], name="g", alpha=2.0, transB=0),
             onnxproto.node("Relu", ["y"], ["z"], domain="")],
            "small",
            [onnxproto.tensor_value_info("x", onnxproto.DataType.FLOAT, ["n", 3])],
            [onnxproto.tensor_value_info("z", onnxproto.DataType.FLOAT, [None, 2])],
            initializers=[onnxproto.tensor("w", w)], doc_string="a doc"),
        7, [onnxproto.opset("", 13)], producer_name="p", doc_string="model doc",
        metadata={"k": "v", "ü": "é"})
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="g", alpha=2.0, transB=0),
         helper.make_node("Relu", ["y"], ["z"], domain="")],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 2])],
        initializer=[numpy_helper.from_array(w, "w")], doc_string="a doc")
    ref = helper.make_model(graph, producer_name="p", opset_imports=[helper.make_opsetid("", 13)])
    ref.ir_version, ref.doc_string = 7, "model doc"
    helper.set_model_props(ref, {"k": "v", "ü": "é"})
    return ours.tobytes(), ref, w


def test_small_model_is_helpers_and_runs():
    import onnxruntime as ort
    ours, ref, w = small_model_pair()
    assert ours == ref.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(ours), full_check=True)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = ort.InferenceSession(ours, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(out, np.maximum(2 * x @ w, 0))


# ------------------------------------------------------------------ the X-UMX graph
CONFIGS = {
    "x-umx": tiny_config(),
    "umx, unidirectional, all bins": tiny_config(crossing=False, sources=("bass", "vocals"),
                                                 unidirectional=True, max_bin=129),
    "one source, one layer": tiny_config(sources=("vocals",), nb_layers=1),
}


def oracle_and_ours(cfg, seed=1):
    arrays = random_arrays(cfg, seed=seed)
    ref = graph_model(cfg, folded_layers(cfg, arrays), HelperGraph())
    return ref, model_bytes(cfg, arrays)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_bytes_are_onnx_helpers(name):
    """model_bytes writes exactly what onnx.helper serialises for the same graph, and onnx's
    checker (full check: shape inference included) accepts it."""
    ref, ours = oracle_and_ours(CONFIGS[name])
    assert ours == ref.SerializeToString()
    model = onnx.load_from_string(ours)
    onnx.checker.check_model(model, full_check=True)
    assert model == ref
    assert {p.key for p in model.metadata_props} == {"xumx.config", "xumx.sources"}


def test_published_size_model_bytes_are_onnx_helpers_in_bounded_memory():
    """The full-size network (2049 bins, 1487 used, bidirectional, three layers): the same
    bytes as onnx.helper's, and writing them allocates one copy of the weights (the bytes)
    beside the folded arrays, not two (the arrays' buffers are joined, not copied first)."""
    import hashlib
    cfg = ModelConfig()
    arrays = random_arrays(cfg, seed=0)
    ref = hashlib.sha256(graph_model(cfg, folded_layers(cfg, arrays), HelperGraph())
                         .SerializeToString()).hexdigest()
    layers = folded_layers(cfg, arrays)
    del arrays
    tracemalloc.start()
    try:
        data = graph_model(cfg, layers).tobytes()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) > 140e6 and hashlib.sha256(data).hexdigest() == ref
    assert peak < 1.4 * len(data), (peak, len(data))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnxruntime_computes_what_onnx_reference_evaluator_does(name):
    """Two runtimes on our bytes: onnxruntime and onnx's reference evaluator (plain numpy)
    agree to >= 100 dB. (The NNabla graph's masks: tests/test_export.py.)"""
    reference = pytest.importorskip("onnx.reference", reason="this onnx has no reference evaluator")
    import onnxruntime as ort
    cfg = CONFIGS[name]
    _, ours = oracle_and_ours(cfg, seed=4)
    mag = (3 * np.abs(np.random.RandomState(0).standard_normal(
        (23, 2, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)
    try:
        want = reference.ReferenceEvaluator(onnx.load_from_string(ours)).run(None, {INPUT: mag})[0]
    except NotImplementedError as e:   # onnx 1.17's LSTM: one direction only (1.23: both)
        pytest.skip(f"onnx {onnx.__version__}'s reference evaluator cannot: {e}")
    got = ort.InferenceSession(ours, providers=["CPUExecutionProvider"]).run(None, {INPUT: mag})[0]
    assert got.shape == want.shape == (len(cfg.sources), 23, 2, cfg.nb_channels, cfg.nb_bins)
    assert (got >= 0).all() and np.abs(got).max() > 0
    err = np.sum((got.astype(np.float64) - want) ** 2)
    assert 10 * np.log10(np.sum(want.astype(np.float64) ** 2) / err) >= 100
