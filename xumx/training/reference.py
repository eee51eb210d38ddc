"""The NNabla graph as a separation backend: the reference every other implementation of the
network is checked against (``Separator.load(..., backend="nnabla")``)."""
import contextlib
import threading
from typing import Dict

import numpy as np

from ..config import ModelConfig
from ..engine import Device
from .backend import extension_context, require_nnabla

#: Stack for nnabla graph work: its CPU LSTM recurses once per frame when a graph is run or
#: freed, and overflows the usual 8 MB stack (a segfault) at a few thousand frames.
GRAPH_STACK_BYTES = 1 << 30


def call_with_large_stack(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a thread with a :data:`GRAPH_STACK_BYTES` stack and return
    its result (or raise its exception). The memory is only reserved, not committed."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread below
            result["error"] = e

    previous = threading.stack_size(GRAPH_STACK_BYTES)
    try:
        worker = threading.Thread(target=target, name="xumx-graph")
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@contextlib.contextmanager
def nnabla_scope(device: Device):
    """Auto-forward on, no gradient graph, and the nnabla context of ``device``; the caller's
    settings come back after."""
    import nnabla as nn
    context = extension_context("cpu" if device.kind == "cpu" else "cudnn", device.index)
    with nn.context_scope(context), nn.auto_forward(True), nn.no_grad():
        yield


class NnablaNet:
    """The network's masks from the NNabla graph (:class:`xumx.training.model.OpenUnmixCrossNet`
    in test mode), with the interface of :class:`xumx.engine.OnnxNet`."""

    def __init__(self, cfg: ModelConfig, arrays: Dict[str, np.ndarray], device: Device = Device()):
        require_nnabla("the NNabla graph (backend='nnabla')")
        from .model import OpenUnmixCrossNet
        self.cfg, self.device = cfg, device
        self.model = OpenUnmixCrossNet(cfg)
        self.model.set_parameters(arrays)

    @classmethod
    def load(cls, files, device: Device = Device()) -> "NnablaNet":
        """The network of a :class:`xumx.modelfiles.ModelFiles`."""
        require_nnabla("the NNabla graph (backend='nnabla')")
        cfg, arrays = files.read()
        return cls(cfg, arrays, device)

    def masks(self, mag: np.ndarray) -> np.ndarray:
        """Shapes: mag (N, C, F) -> masks (S, N, C, F) float32."""
        import nnabla as nn

        def forward():
            with nnabla_scope(self.device):
                x = nn.Variable.from_numpy_array(np.ascontiguousarray(mag, np.float32)[:, None])
                out = self.model.masks(x, test=True)
                return np.stack([m.d[:, 0] for m in out])
        return call_with_large_stack(forward)
