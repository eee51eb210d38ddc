"""The oracle of xumx's ONNX bytes: the graph writer of :mod:`xumx.onnxnet` with ``onnx.helper``.

``HelperGraph`` has the four methods of ``xumx.onnxnet._Graph`` (const, ints, op, model) and
builds the same graph with ``onnx.helper``/``onnx.numpy_helper`` into an ``onnx.ModelProto``:
``onnxnet.graph_model(cfg, layers, HelperGraph())`` is what xumx wrote with the onnx package
before it wrote the protobuf wire format itself (:mod:`xumx.onnxproto`). Tests only.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from xumx.onnxnet import GRAPH_NAME, IR_VERSION, OPSET, PRODUCER


class HelperGraph:
    def __init__(self):
        self.nodes, self.inits, self._n = [], {}, 0

    def const(self, name, value):
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def ints(self, name, values):
        return self.const(name, np.asarray(values, np.int64))

    def op(self, op_type, *inputs, outputs=1, name=None, **attrs):
        self._n += 1
        base = name or f"{op_type.lower()}_{self._n}"
        outs = [base] if outputs == 1 else [f"{base}:{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, inputs, outputs, doc_string, metadata):
        graph = helper.make_graph(
            self.nodes, GRAPH_NAME,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=list(self.inits.values()))
        model = helper.make_model(graph, producer_name=PRODUCER,
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        model.doc_string = doc_string
        helper.set_model_props(model, metadata)
        return model
