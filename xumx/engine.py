"""The separation engine: the network's ONNX graph (:mod:`xumx.onnxnet`) in ONNX Runtime.

Runs on the CPU (``CPUExecutionProvider``) or an NVIDIA GPU (``CUDAExecutionProvider``), on the
device a caller names (:func:`parse_device`): ``"cpu"``, ``"cuda"`` (GPU 0), ``"cuda:1"``; the
command line's and Spleeter Web's ``cudnn`` means ``cuda``. A GPU that is asked for and cannot
be used is an error (:class:`EngineError`, one line saying why and what to install), never a
silent run on the CPU: onnxruntime falls back to the CPU when its CUDA provider fails to load,
so the session's providers are checked.

CPU threads follow the cores other processes leave free (:func:`default_threads`); the
measurement window restarts in a forked child (celery/billiard prefork workers,
``multiprocessing`` with fork), whose own CPU time starts at zero.

The session's model comes from :mod:`xumx.modelcache` (built once per model file); running
needs only onnxruntime and numpy; building one needs numpy only (:mod:`xumx.onnxproto`
writes the bytes; no ``onnx`` package).
"""
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .config import PRECISIONS, ModelConfig
from .threads import physical_cores, rank_threads
from .errors import ConfigError, EngineError
from .onnxnet import PRECISION_KEY, SERVING_OUTPUT, head_path

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_HINT = ("install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime; "
            "pip install onnxruntime-gpu), with the CUDA and cuDNN versions it names, "
            "or use the CPU (--context cpu; API: device='cpu')")


@dataclass(frozen=True)
class Device:
    """Where the network runs: ``kind`` 'cpu' or 'cuda', and the CUDA device index."""
    kind: str = "cpu"
    index: int = 0

    def __str__(self):
        return "CPU" if self.kind == "cpu" else f"CUDA device {self.index}"


#: Names of the CUDA device: PyTorch's ``cuda``, nnabla's (and Spleeter Web's) ``cudnn``.
GPU_NAMES = ("cuda", "cudnn", "gpu")


def parse_device(device=None) -> Device:
    """The :class:`Device` that ``device`` names: None or ``"cpu"``; ``"cuda"``, ``"cudnn"`` or
    ``"gpu"`` (device 0); ``"cuda:1"`` (a device index); a :class:`Device`; or an object with
    ``type`` and ``index`` attributes (a ``torch.device``). Raises ConfigError naming the forms."""
    if device is None:
        return Device()
    if isinstance(device, Device):
        return device
    if not isinstance(device, str) and hasattr(device, "type"):   # torch.device
        index = getattr(device, "index", None)
        device = device.type if index is None else f"{device.type}:{index}"
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index:
        return Device()
    if kind in GPU_NAMES:
        try:
            number = int(index) if index else 0
            if number < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"device {device!r}: the GPU index must be a whole number >= 0 "
                              f"(e.g. 'cuda:1')") from None
        return Device("cuda", number)
    raise ConfigError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' "
                      f"('cudnn' also means the GPU)")


def providers(device: Device) -> list:
    """onnxruntime's provider list for ``device``."""
    if device.kind == "cpu":
        return [CPU_PROVIDER]
    return [(CUDA_PROVIDER, {"device_id": str(device.index)}), CPU_PROVIDER]


@contextlib.contextmanager
def _captured_stderr():
    """Collect what native code writes to file descriptor 2 (onnxruntime's log) in a list of
    lines, given after the block."""
    lines = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no usable stderr: nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def _gpu_failure(device: Device, log: Sequence[str]) -> str:
    import onnxruntime as ort
    if CUDA_PROVIDER not in ort.get_available_providers():
        why = (f"this onnxruntime {ort.__version__} has no CUDA provider (the CPU-only "
               f"package; installed beside onnxruntime-gpu it can shadow it)")
    else:
        cause = next((ln for ln in log if "rror" in ln or "ailed" in ln), "")
        cause = cause.split("]")[-1].strip() if cause else "see onnxruntime's log"
        why = f"onnxruntime's CUDA provider could not start ({cause[:300]})"
    return f"cannot run on {device}: {why}; {GPU_HINT}"


def _cpu_clock():
    """(seconds all CPUs were idle since boot, monotonic time, this process's CPU seconds), or
    None where /proc/stat is not readable (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()   # cpu user nice system idle iowait ...
        idle = (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return idle, time.monotonic(), time.process_time()


#: the clock when this process began to be measured: when this module was imported, or when
#: this process was forked from one that had imported it (:func:`_restart_clock`)
_SINCE = _cpu_clock()


def _restart_clock():
    """A forked child's own window: its CPU time starts at zero, so the parent's reading
    (taken when the parent had used its own CPU time) would count the parent's work as other
    processes' (a celery prefork worker saw 69 busy CPUs on 2 cores, and ran on one thread)."""
    global _SINCE
    _SINCE = _cpu_clock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_clock)


def busy_elsewhere(since=None) -> Optional[float]:
    """CPUs that other processes kept busy, on average, since ``since`` (a :func:`_cpu_clock`
    reading; default: since this process was started or forked, see :data:`_SINCE`); None when
    unknown. This process's own CPU time is not counted, nor is what ran before (a load average
    would count the previous command of a benchmark or a batch). At most every CPU."""
    since, now = since or _SINCE, _cpu_clock()
    if since is None or now is None or now[1] - since[1] < 0.05:
        return None
    span = now[1] - since[1]
    cpus = os.cpu_count() or 1
    busy = cpus - (now[0] - since[0]) / span - (now[2] - since[2]) / span
    return min(max(0.0, busy), float(cpus))


def default_threads() -> int:
    """onnxruntime's intra-op threads for the CPU: one per physical core, less the cores that
    other processes keep busy (:func:`busy_elsewhere`, rounded), at least one.

    The LSTM recurrence splits every time step between the threads, which spin while they
    wait: a thread that shares its core with another busy process stalls every step
    (measurements: docs/onnx-engine.md, "Both cores"). Under an MPI launcher, or with
    ``XUMX_THREADS``, the process's share instead (:func:`xumx.threads.rank_threads`).
    """
    share = rank_threads()
    if share is not None:
        return share
    cores = physical_cores()
    busy = busy_elsewhere()
    if busy is None:
        return cores
    return max(1, min(cores, (os.cpu_count() or cores) - int(busy + 0.5)))


def create_session(model: Union[bytes, str], device: Device = Device(),
                   threads: Optional[int] = None, prepack: bool = False):
    """An ``onnxruntime.InferenceSession`` of ``model`` (bytes or a path) on ``device``.

    ``threads``: onnxruntime's intra-op threads on the CPU (None: :func:`default_threads`).
    ``prepack``: let onnxruntime prepack the weights (the int8 graph's DynamicQuantizeLSTM
    needs it: without it the int8 network was no faster than float32's, 2.42 s against 2.32 s
    per 30 s chunk; its int8 copies are a quarter of float32's size).
    Raises EngineError when ``device`` is a GPU that onnxruntime cannot use.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # one buffer planned for all of a run's intermediates (the memory pattern) costs a few
    # hundred MB at 30 s chunks; the arena alone reuses freed blocks as well
    opts.enable_mem_pattern = False
    # no CPU arena either: the masks it returns would hold its largest region until the next
    # run, under the Wiener filter and the cross-fade (docs/onnx-engine.md, "Memory")
    opts.enable_cpu_mem_arena = False
    # weights prepacked for the CPU's matrix kernels are kept beside the originals (fc1, fc2
    # and the LSTMs: about 50 MB more at full size) for 0-3 % of the network's time
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.intra_op_num_threads = int(threads or default_threads())
    if device.kind == "cpu":
        return ort.InferenceSession(model, opts, providers=providers(device))
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise EngineError(_gpu_failure(device, []))
    with _captured_stderr() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # onnxruntime's own fallback warning: ours replaces it
        try:
            session = ort.InferenceSession(model, opts, providers=providers(device))
        except Exception as e:   # e.g. an invalid device id
            session, log = None, [str(e)]
    if session is None or session.get_providers()[:1] != [CUDA_PROVIDER]:
        raise EngineError(_gpu_failure(device, log))
    return session


def run_options(device: Device):
    """onnxruntime's options for each run: a GPU's memory arena shrinks back after the run, so
    the arena does not keep the network's peak while the Wiener filter and the synthesis run
    (the CPU has no arena: :func:`create_session`; docs/onnx-engine.md, "Memory")."""
    import onnxruntime as ort
    opts = ort.RunOptions()
    if device.kind != "cpu":
        opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", f"gpu:{device.index}")
    return opts


class SourceMagnitudes:
    """The network's source magnitude estimates of one sequence, v = masks x the mixture's
    magnitudes, made a block of frames at a time when sliced: fc3's input is small, the
    masks are as large as a spectrogram per source, so they are never made whole.

    Shapes: hidden (S, N, H + 1) fc3's input, head (S, H + 1, C F) (:func:`xumx.onnxnet.
    serving_model`), mag (N, C, F) float32; ``shape`` (S, N, C, F); ``v[:, a:b]`` ->
    (S, b - a, C, F) float32, a new array, ``ReLU(hidden[:, a:b] @ head) * mag[a:b]``.
    """
    ndim = 4

    def __init__(self, hidden: np.ndarray, head: np.ndarray, mag: np.ndarray):
        self.hidden, self.head, self.mag = hidden, head, mag
        self.shape = (hidden.shape[0],) + mag.shape

    def __getitem__(self, key) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)
                and isinstance(key[1], slice) and key[1].step in (None, 1)):
            raise IndexError(f"source magnitudes are sliced by frames, [:, a:b], not {key!r}")
        rows = key[1]
        y = np.matmul(self.hidden[:, rows], self.head)           # (S, n, C F)
        np.maximum(y, 0, out=y)
        y = y.reshape(y.shape[:2] + self.mag.shape[1:])
        y *= self.mag[rows]
        return y


def sources_of_masks(masks: np.ndarray, mag: np.ndarray) -> List[np.ndarray]:
    """Whole masks times their input, one array per item of the batch, in place. Shapes:
    masks (S, N, B, C, F), mag (N, B, C, F) -> B of (S, N, C, F)."""
    masks *= mag[None]
    return [masks[:, :, b] for b in range(mag.shape[1])]


class OnnxNet:
    """The network's masks in an onnxruntime session.

    Args:
        model: the serialised ONNX model of :mod:`xumx.onnxnet` (bytes) or its path: the
            whole network (as exported), or the serving graph, which stops before fc3.
        device: where to run it.
        threads: onnxruntime's intra-op threads (None: :func:`default_threads`).
        precision: the graph's precision the caller expects (None: whatever it is); "int8"
            lets onnxruntime prepack the weights (:func:`create_session`), and a graph of
            another precision raises ValueError.
        head: fc3 of a serving graph (:func:`xumx.onnxnet.serving_model`); None: read from
            the file beside the graph's (:func:`xumx.onnxnet.head_path`) when it needs one.
            A missing, unreadable or misshapen head raises ValueError.

    Attributes: ``cfg`` (the model's :class:`~xumx.config.ModelConfig`) and ``precision`` (its
    graph's, from the model's metadata: :data:`xumx.flags.PRECISIONS`).
    """

    def __init__(self, model: Union[bytes, str], device: Device = Device(),
                 threads: Optional[int] = None, precision: Optional[str] = None,
                 head: Optional[np.ndarray] = None):
        self.device = device
        self.session = create_session(model, device, threads,
                                      prepack=precision not in (None, PRECISIONS[0]))
        meta = self.session.get_modelmeta().custom_metadata_map
        if "xumx.config" not in meta:
            raise ValueError("not an xumx ONNX model (no 'xumx.config' metadata)")
        self.cfg = ModelConfig.from_dict(json.loads(meta["xumx.config"]))
        self.precision = meta.get(PRECISION_KEY, PRECISIONS[0])
        if precision is not None and precision != self.precision:
            raise ValueError(f"a {self.precision} graph where a {precision} one was expected")
        self._input = self.session.get_inputs()[0].name
        self.head = None
        if self.session.get_outputs()[0].name == SERVING_OUTPUT:
            self.head = self._checked_head(head, model)
        self._run_options = run_options(device)

    def _checked_head(self, head: Optional[np.ndarray], model: Union[bytes, str]) -> np.ndarray:
        """The head given, or else read from beside the graph's file: (S, H + 1, C F) float32."""
        cfg = self.cfg
        if head is None:
            if not isinstance(model, str):
                raise ValueError("a serving graph given as bytes needs its head")
            path = head_path(model)
            try:
                head = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"the graph's head {path} cannot be read ({e})") from None
        shape = (len(cfg.sources), cfg.hidden_size + 1, cfg.nb_channels * cfg.nb_bins)
        if not isinstance(head, np.ndarray) or head.shape != shape or head.dtype != np.float32:
            raise ValueError(f"the graph's head is {getattr(head, 'dtype', type(head).__name__)} "
                             f"{getattr(head, 'shape', '')}, not float32 {shape}")
        return np.ascontiguousarray(head)

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, arrays: Dict[str, np.ndarray],
                    device: Device = Device(), threads: Optional[int] = None,
                    precision: str = PRECISIONS[0]) -> "OnnxNet":
        from .onnxnet import serving_bytes
        graph, head = serving_bytes(cfg, arrays, precision)
        return cls(graph, device, threads, precision, head)

    def masks(self, mag: np.ndarray) -> np.ndarray:
        """Shapes: mag (N, C, F) -> masks (S, N, C, F) float32, non-negative."""
        if mag.ndim != 3:
            raise ValueError(f"model expects (frames, {self.cfg.nb_channels}, "
                             f"{self.cfg.nb_bins}) magnitudes, got {mag.shape}")
        return self.batch_masks(mag[:, None])[:, :, 0]

    def batch_masks(self, mag: np.ndarray) -> np.ndarray:
        """Masks of B sequences of N frames in one run: each recurrent step of the LSTMs
        serves the whole batch. Shapes: mag (N, B, C, F) -> masks (S, N, B, C, F) float32,
        non-negative; item b is :meth:`masks` of ``mag[:, b]`` (to rounding)."""
        out = self._run(mag)
        if self.head is None:   # the whole network (an exported file)
            return out
        out = np.matmul(out, self.head)                     # (S, N B, C F)
        np.maximum(out, 0, out=out)
        return out.reshape(len(self.cfg.sources), *mag.shape)

    def batch_sources(self, mag: np.ndarray) -> List:
        """The source magnitude estimates (masks x ``mag``) of B sequences of N frames, one
        network run: item b is (S, N, C, F), a :class:`SourceMagnitudes` of ``mag[:, b]``
        (an array for a graph that ends with the masks). Shapes: mag (N, B, C, F)."""
        if self.head is None:
            return sources_of_masks(self.batch_masks(mag), mag)
        hidden = self._run(mag)
        hidden = hidden.reshape(hidden.shape[0], *mag.shape[:2], hidden.shape[-1])
        return [SourceMagnitudes(hidden[:, :, b], self.head, mag[:, b])
                for b in range(mag.shape[1])]

    def _run(self, mag: np.ndarray) -> np.ndarray:
        """The graph's output for mag (N, B, C, F)."""
        cfg = self.cfg
        if mag.ndim != 4 or mag.shape[2:] != (cfg.nb_channels, cfg.nb_bins):
            raise ValueError(f"model expects (frames, batch, {cfg.nb_channels}, {cfg.nb_bins}) "
                             f"magnitudes, got {mag.shape}")
        x = np.ascontiguousarray(mag, dtype=np.float32)
        return self.session.run(None, {self._input: x}, self._run_options)[0]
