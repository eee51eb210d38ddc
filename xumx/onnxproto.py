"""The protobuf wire format of the ONNX messages that :mod:`xumx.onnxnet` writes, with numpy only.

An ONNX model file is one serialised ``ModelProto`` (onnx.proto, a proto2 file). Serving and
exporting need no ``onnx`` package (nor protobuf or ml_dtypes through it): this module writes
the bytes itself. It covers what the X-UMX graph uses and nothing else:

* ``ModelProto``: ir_version, producer_name, doc_string, graph, opset_import, metadata_props;
* ``GraphProto``: node, name, initializer, doc_string, input, output;
* ``NodeProto``: input, output, name, op_type, attribute, domain;
* ``AttributeProto`` of one int, float, string, or list of ints or floats;
* ``TensorProto`` with dims, data_type, name and the data as raw_data (little-endian);
* ``ValueInfoProto`` of a tensor type (``TypeProto.Tensor``) whose shape's dimensions are
  numbers (dim_value), names (dim_param) or unknown (None);
* ``OperatorSetIdProto`` and ``StringStringEntryProto`` (metadata).

Contract: the bytes are what protobuf itself serialises for the same message built with
``onnx.helper`` (fields in ascending field number, proto2 semantics: a field that is set is
written even when it holds its default, repeated scalars unpacked unless onnx.proto declares
them packed), so they parse with any protobuf and onnxruntime. ``tests/test_onnxproto.py``
compares them byte for byte with onnx.helper's and runs onnx.checker on them.

Memory: a :class:`Message` keeps its parts as a list; a tensor's data is a view of its array's
buffer, not a copy, until :meth:`Message.tobytes` joins everything once.
"""
import struct
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

# ------------------------------------------------------------------ wire types (protobuf encoding)
VARINT = 0   # int32, int64, enums, bools: base-128, least significant group first
I64 = 1      # fixed 8 bytes (double)
LEN = 2      # a varint length, then that many bytes: strings, bytes, messages
I32 = 5      # fixed 4 bytes (float)


# ------------------------------------------------------------------ field numbers (onnx.proto)
class ModelProto:
    IR_VERSION = 1
    PRODUCER_NAME = 2
    DOC_STRING = 6
    GRAPH = 7
    OPSET_IMPORT = 8
    METADATA_PROPS = 14


class GraphProto:
    NODE = 1
    NAME = 2
    INITIALIZER = 5
    DOC_STRING = 10
    INPUT = 11
    OUTPUT = 12


class NodeProto:
    INPUT = 1
    OUTPUT = 2
    NAME = 3
    OP_TYPE = 4
    ATTRIBUTE = 5
    DOMAIN = 7


class AttributeProto:
    NAME = 1
    F = 2
    I = 3   # noqa: E741 (onnx.proto's name)
    S = 4
    FLOATS = 7
    INTS = 8
    TYPE = 20


class AttributeType:
    """Values of ``AttributeProto.type``."""
    FLOAT = 1
    INT = 2
    STRING = 3
    FLOATS = 6
    INTS = 7


class TensorProto:
    DIMS = 1
    DATA_TYPE = 2
    NAME = 8
    RAW_DATA = 9


class DataType:
    """Values of ``TensorProto.data_type`` (``TensorProto.DataType``)."""
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    INT32 = 6
    INT64 = 7
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11


class ValueInfoProto:
    NAME = 1
    TYPE = 2


class TypeProto:
    TENSOR_TYPE = 1


class TypeProtoTensor:
    """``TypeProto.Tensor``"""
    ELEM_TYPE = 1
    SHAPE = 2


class TensorShapeProto:
    DIM = 1


class Dimension:
    """``TensorShapeProto.Dimension``"""
    DIM_VALUE = 1
    DIM_PARAM = 2


class OperatorSetIdProto:
    DOMAIN = 1
    VERSION = 2


class StringStringEntryProto:
    KEY = 1
    VALUE = 2


#: numpy dtype -> ONNX data type of the tensors this module writes
DATA_TYPES = {np.dtype(np.float32): DataType.FLOAT, np.dtype(np.float64): DataType.DOUBLE,
              np.dtype(np.float16): DataType.FLOAT16, np.dtype(np.int64): DataType.INT64,
              np.dtype(np.int32): DataType.INT32, np.dtype(np.int8): DataType.INT8,
              np.dtype(np.uint8): DataType.UINT8, np.dtype(np.bool_): DataType.BOOL}


# ------------------------------------------------------------------ encoding
def varint(value: int) -> bytes:
    """``value`` as a protobuf varint. A negative value (int64, int32, enum) is written as its
    64-bit two's complement (ten bytes), as protobuf does."""
    if value < 0:
        value += 1 << 64
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} does not fit in 64 bits")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    """The key that precedes a field: its number and wire type."""
    return varint(field << 3 | wire_type)


class Message:
    """A message being written: its encoded fields in the order they are added, as a list of
    bytes-like parts (held, not copied) and their total length in bytes.

    Add fields in ascending field number to get protobuf's own byte order.
    """
    __slots__ = ("parts", "size")

    def __init__(self):
        self.parts = []
        self.size = 0

    def _add(self, part):
        self.parts.append(part)
        self.size += len(part)
        return self

    def varint_field(self, field: int, value: int) -> "Message":
        """An int32/int64/enum field (wire type VARINT)."""
        return self._add(key(field, VARINT) + varint(int(value)))

    def float_field(self, field: int, value: float) -> "Message":
        """A float (32-bit) field."""
        return self._add(key(field, I32) + struct.pack("<f", value))

    def bytes_field(self, field: int, data) -> "Message":
        """A bytes field; ``data`` is any bytes-like object with one byte per item (a
        memoryview cast to "B" keeps an array's buffer without copying it)."""
        self._add(key(field, LEN) + varint(len(data)))
        return self._add(data)

    def string_field(self, field: int, text: str) -> "Message":
        """A string field (UTF-8)."""
        return self.bytes_field(field, text.encode("utf-8"))

    def message_field(self, field: int, msg: "Message") -> "Message":
        """An embedded message field."""
        self._add(key(field, LEN) + varint(msg.size))
        self.parts.extend(msg.parts)
        self.size += msg.size
        return self

    def tobytes(self) -> bytes:
        """The serialised message (the one copy of the parts)."""
        data = b"".join(self.parts)
        assert len(data) == self.size
        return data


# ------------------------------------------------------------------ ONNX messages
def data_type(dtype: np.dtype) -> int:
    """The ONNX data type (:class:`DataType`) of a numpy dtype of either byte order."""
    found = DATA_TYPES.get(np.dtype(dtype).newbyteorder("="))
    if found is None:
        raise ValueError(f"no ONNX tensor type for numpy dtype {dtype}")
    return found


def little_endian_buffer(array: np.ndarray) -> memoryview:
    """The bytes of ``array`` as ONNX's raw_data stores them (C order, little-endian), without a
    copy where the array already is so."""
    a = np.asarray(array)
    data_type(a.dtype)
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    return memoryview(a.reshape(-1)).cast("B")


def tensor(name: str, array: np.ndarray) -> Message:
    """A ``TensorProto`` named ``name`` holding ``array`` (its shape, type and data as raw_data),
    as ``onnx.numpy_helper.from_array`` makes it. The message refers to the array's buffer."""
    a = np.asarray(array)
    data = little_endian_buffer(a)
    m = Message()
    for d in a.shape:
        m.varint_field(TensorProto.DIMS, d)
    m.varint_field(TensorProto.DATA_TYPE, data_type(a.dtype))
    m.string_field(TensorProto.NAME, name)
    return m.bytes_field(TensorProto.RAW_DATA, data)


AttributeValue = Union[int, float, str, bytes, Sequence[int], Sequence[float]]


def attribute(name: str, value: AttributeValue) -> Message:
    """An ``AttributeProto`` as ``onnx.helper.make_attribute`` makes it for an int (bools
    included), a float, a string, or a non-empty list of ints or of floats."""
    m = Message().string_field(AttributeProto.NAME, name)
    if isinstance(value, (bool, int, np.integer)):
        m.varint_field(AttributeProto.I, value)
        return m.varint_field(AttributeProto.TYPE, AttributeType.INT)
    if isinstance(value, (float, np.floating)):
        m.float_field(AttributeProto.F, value)
        return m.varint_field(AttributeProto.TYPE, AttributeType.FLOAT)
    if isinstance(value, (str, bytes)):
        m.bytes_field(AttributeProto.S, value.encode("utf-8") if isinstance(value, str) else value)
        return m.varint_field(AttributeProto.TYPE, AttributeType.STRING)
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else []
    if values and all(isinstance(v, (bool, int, np.integer)) for v in values):
        for v in values:   # repeated int64 in proto2: one key per value (not packed)
            m.varint_field(AttributeProto.INTS, v)
        return m.varint_field(AttributeProto.TYPE, AttributeType.INTS)
    if values and all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        for v in values:
            m.float_field(AttributeProto.FLOATS, v)
        return m.varint_field(AttributeProto.TYPE, AttributeType.FLOATS)
    raise ValueError(f"attribute {name!r}: cannot write {value!r} (an int, float, string, or "
                     "a non-empty list of ints or floats)")


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: Optional[str] = None,
         domain: Optional[str] = None, **attributes: AttributeValue) -> Message:
    """A ``NodeProto`` as ``onnx.helper.make_node`` makes it: attributes in the order of their
    names, those that are None left out."""
    m = Message()
    for i in inputs:
        m.string_field(NodeProto.INPUT, i)
    for o in outputs:
        m.string_field(NodeProto.OUTPUT, o)
    if name is not None:
        m.string_field(NodeProto.NAME, name)
    m.string_field(NodeProto.OP_TYPE, op_type)
    for k in sorted(attributes):
        if attributes[k] is not None:
            m.message_field(NodeProto.ATTRIBUTE, attribute(k, attributes[k]))
    if domain is not None:
        m.string_field(NodeProto.DOMAIN, domain)
    return m


def tensor_value_info(name: str, elem_type: int,
                      shape: Sequence[Union[int, str, None]]) -> Message:
    """A ``ValueInfoProto`` of a tensor of ``elem_type`` (:class:`DataType`) and ``shape``: each
    dimension a number, a name, or None (unknown), as ``onnx.helper.make_tensor_value_info``
    makes it."""
    shp = Message()
    for d in shape:
        dim = Message()
        if isinstance(d, str):
            dim.string_field(Dimension.DIM_PARAM, d)
        elif d is not None:
            dim.varint_field(Dimension.DIM_VALUE, d)
        shp.message_field(TensorShapeProto.DIM, dim)
    tensor_type = Message().varint_field(TypeProtoTensor.ELEM_TYPE, elem_type)
    tensor_type.message_field(TypeProtoTensor.SHAPE, shp)
    typ = Message().message_field(TypeProto.TENSOR_TYPE, tensor_type)
    info = Message().string_field(ValueInfoProto.NAME, name)
    return info.message_field(ValueInfoProto.TYPE, typ)


def graph(nodes: Iterable[Message], name: str, inputs: Iterable[Message],
          outputs: Iterable[Message], initializers: Iterable[Message] = (),
          doc_string: Optional[str] = None) -> Message:
    """A ``GraphProto`` as ``onnx.helper.make_graph`` makes it."""
    m = Message()
    for n in nodes:
        m.message_field(GraphProto.NODE, n)
    m.string_field(GraphProto.NAME, name)
    for t in initializers:
        m.message_field(GraphProto.INITIALIZER, t)
    if doc_string is not None:
        m.string_field(GraphProto.DOC_STRING, doc_string)
    for v in inputs:
        m.message_field(GraphProto.INPUT, v)
    for v in outputs:
        m.message_field(GraphProto.OUTPUT, v)
    return m


def opset(domain: str, version: int) -> Message:
    """An ``OperatorSetIdProto`` as ``onnx.helper.make_opsetid`` makes it ("" is ONNX's own)."""
    m = Message().string_field(OperatorSetIdProto.DOMAIN, domain)
    return m.varint_field(OperatorSetIdProto.VERSION, version)


def model(graph_: Message, ir_version: int, opsets: Sequence[Message],
          producer_name: Optional[str] = None, doc_string: Optional[str] = None,
          metadata: Optional[Dict[str, str]] = None) -> Message:
    """A ``ModelProto`` as ``onnx.helper.make_model(graph, producer_name=..., opset_imports=...)``
    makes it, with ``ir_version``, ``doc_string`` and ``onnx.helper.set_model_props(model,
    metadata)`` set (metadata in the dict's order)."""
    m = Message().varint_field(ModelProto.IR_VERSION, ir_version)
    if producer_name is not None:
        m.string_field(ModelProto.PRODUCER_NAME, producer_name)
    if doc_string is not None:
        m.string_field(ModelProto.DOC_STRING, doc_string)
    m.message_field(ModelProto.GRAPH, graph_)
    for o in opsets:
        m.message_field(ModelProto.OPSET_IMPORT, o)
    for k, v in (metadata or {}).items():
        entry = Message().string_field(StringStringEntryProto.KEY, k)
        entry.string_field(StringStringEntryProto.VALUE, v)
        m.message_field(ModelProto.METADATA_PROPS, entry)
    return m

