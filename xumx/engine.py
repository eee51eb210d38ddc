"""The separation engine: the network's ONNX graph (:mod:`xumx.onnxnet`) in ONNX Runtime.

Runs on the CPU (``CPUExecutionProvider``) or an NVIDIA GPU (``CUDAExecutionProvider``). Where
it runs follows the nnabla-style context names the command line and the API always took:

* ``'cpu'`` -> the CPU; ``'cuda'`` or ``'cudnn'`` (with a device id) -> that CUDA device;
* an nnabla ``Context`` object: a CUDA device when its backends name ``cuda`` or ``cudnn``
  (its ``device_id``), else the CPU;
* ``None`` -> the caller's nnabla default context *if the caller has imported nnabla*
  (``nn.set_default_context(get_extension_context('cudnn', device_id='1'))`` runs on GPU 1),
  else the CPU. nnabla itself is never imported here.

A GPU that is asked for and cannot be used is an error (:class:`EngineError`, one line saying
why and what to install), never a silent run on the CPU: onnxruntime falls back to the CPU
when its CUDA provider fails to load, so the session's providers are checked.

Models built from parameter files are cached, serialised, in ``<cache_dir>/onnx`` (see
:func:`xumx.pretrained.cache_dir`), keyed by the SHA-256 of the parameter files and their
sidecars: a later run loads the graph directly (0.2-0.3 s of CPU for the published model)
instead of reading, folding and serialising the weights (about 0.6-0.9 s). Building needs numpy
only (:mod:`xumx.onnxproto` writes the bytes; no ``onnx`` package), running only onnxruntime.
"""
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np

from .config import ModelConfig
from .errors import EngineError

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
#: Changes whenever :mod:`xumx.onnxnet` writes a different graph: cached models of other
#: versions are not used.
GRAPH_VERSION = 1
#: Cached models kept (the least recently used beyond this are removed).
CACHE_ENTRIES = 4
GPU_HINT = ("install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime; "
            "pip install onnxruntime-gpu), with the CUDA and cuDNN versions it names, "
            "or use the CPU (--context cpu; API: context='cpu')")


@dataclass(frozen=True)
class Device:
    """Where the network runs: ``kind`` 'cpu' or 'cuda', and the CUDA device index."""
    kind: str = "cpu"
    index: int = 0

    def __str__(self):
        return "CPU" if self.kind == "cpu" else f"CUDA device {self.index}"


GPU_NAMES = ("cuda", "cudnn")


def device_of(context=None, device_id=None) -> Device:
    """The :class:`Device` of a context (see the module docstring for the rule).

    ``device_id`` (int or str) overrides the context's own device id.
    """
    if context is None:
        nn = sys.modules.get("nnabla")   # the caller's default context, if they use nnabla
        if nn is None or not hasattr(nn, "get_current_context"):
            return Device()
        context = nn.get_current_context()
    if isinstance(context, str):
        names, own_id = [context], None
    else:
        names = list(getattr(context, "backend", None) or [])
        own_id = getattr(context, "device_id", None)
        if not names:
            raise ValueError(f"not a context: {context!r} (use 'cpu', 'cuda' or 'cudnn')")
    kinds = {n.split(":")[0] for n in names}
    if kinds & set(GPU_NAMES):
        index = device_id if device_id is not None else own_id
        try:
            return Device("cuda", int(index or 0))
        except ValueError:
            raise ValueError(f"device id must be a whole number, not {index!r}") from None
    if kinds <= {"cpu"}:
        return Device()
    raise ValueError(f"unknown context {context!r}: use 'cpu', 'cuda' or 'cudnn'")


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


def physical_cores() -> int:
    """Physical cores this process may use (Linux topology; elsewhere the logical count)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f, open(base + "core_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


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


#: the clock when this module was imported: the window over which other work is measured
_SINCE = _cpu_clock()


def busy_elsewhere(since=None) -> Optional[float]:
    """CPUs that other processes kept busy, on average, since ``since`` (a :func:`_cpu_clock`
    reading; default: when this module was imported); None when unknown. This process's own
    CPU time is not counted, nor is what ran before (a load average would count the previous
    command of a benchmark or a batch)."""
    since, now = since or _SINCE, _cpu_clock()
    if since is None or now is None or now[1] - since[1] < 0.05:
        return None
    span = now[1] - since[1]
    busy = (os.cpu_count() or 1) - (now[0] - since[0]) / span - (now[2] - since[2]) / span
    return max(0.0, busy)


def default_threads() -> int:
    """onnxruntime's intra-op threads for the CPU: one per physical core, less the cores that
    other processes keep busy (:func:`busy_elsewhere`, rounded), at least one.

    The LSTM recurrence splits every time step between the threads, which spin while they
    wait: a thread that shares its core with another busy process stalls every step. Measured
    on a 2-core machine at load 3 (30 s of audio): 1 thread 0.64 s, 2 threads 1.02 s (0.82 s
    without spinning); on a quiet one 2 threads take about 60 % of 1 thread's time.
    """
    cores = physical_cores()
    busy = busy_elsewhere()
    if busy is None:
        return cores
    return max(1, min(cores, (os.cpu_count() or cores) - int(busy + 0.5)))


def create_session(model: Union[bytes, str], device: Device = Device(),
                   threads: Optional[int] = None):
    """An ``onnxruntime.InferenceSession`` of ``model`` (bytes or a path) on ``device``.

    ``threads``: onnxruntime's intra-op threads on the CPU (None: :func:`default_threads`).
    Raises EngineError when ``device`` is a GPU that onnxruntime cannot use.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # one buffer planned for all of a run's intermediates (the memory pattern) costs a few
    # hundred MB at 30 s chunks; the arena alone reuses freed blocks as well
    opts.enable_mem_pattern = False
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


class OnnxNet:
    """The network's masks in an onnxruntime session.

    Args:
        model: the serialised ONNX model of :mod:`xumx.onnxnet` (bytes) or its path.
        device: where to run it.
        threads: onnxruntime's intra-op threads (None: :func:`default_threads`).
    """

    def __init__(self, model: Union[bytes, str], device: Device = Device(),
                 threads: Optional[int] = None):
        self.device = device
        self.session = create_session(model, device, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "xumx.config" not in meta:
            raise ValueError("not an xumx ONNX model (no 'xumx.config' metadata)")
        self.cfg = ModelConfig.from_dict(json.loads(meta["xumx.config"]))
        self._input = self.session.get_inputs()[0].name

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, arrays: Dict[str, np.ndarray],
                    device: Device = Device(), threads: Optional[int] = None) -> "OnnxNet":
        from .onnxnet import model_bytes
        return cls(model_bytes(cfg, arrays), device, threads)

    def masks(self, mag: np.ndarray) -> np.ndarray:
        """Shapes: mag (N, C, F) -> masks (S, N, C, F) float32, non-negative."""
        cfg = self.cfg
        if mag.ndim != 3 or mag.shape[1:] != (cfg.nb_channels, cfg.nb_bins):
            raise ValueError(f"model expects (frames, {cfg.nb_channels}, {cfg.nb_bins}) "
                             f"magnitudes, got {mag.shape}")
        x = np.ascontiguousarray(mag, dtype=np.float32)[:, None]
        return self.session.run(None, {self._input: x})[0][:, :, 0]


# ------------------------------------------------------------------ cached models
def model_key(paths: Sequence[str], extra: str = "", folder: Optional[str] = None) -> str:
    """SHA-256 naming the graph built from the parameter files ``paths`` (in order, with
    their ``.json`` sidecars) and ``extra`` (e.g. UMX targets).

    The files' SHA-256 are remembered in ``<folder>/digests.json`` with their size,
    modification time and inode (as git's index does), so an unchanged file is not read again.
    """
    from .pretrained import digest_of
    from .weights import sidecar_path
    folder = folder or _cache_folder()
    memo = _read_digests(folder)
    changed = False
    h = hashlib.sha256(f"xumx-onnx/{GRAPH_VERSION}/{extra}".encode())
    for path in paths:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        known = memo.get(real)
        if not (isinstance(known, list) and known[:3] == stamp and len(known) == 4):
            memo[real], changed = stamp + [digest_of(real, "sha256")], True
        h.update(str(memo[real][3]).encode())
        side = sidecar_path(path)
        h.update(digest_of(side, "sha256").encode() if os.path.isfile(side) else b"-")
    if changed:
        _write_digests(folder, memo)
    return h.hexdigest()


DIGESTS = "digests.json"


def _cache_folder() -> str:
    from .pretrained import cache_dir
    return os.path.join(cache_dir(), "onnx")


def _read_digests(folder: str) -> dict:
    try:
        with open(os.path.join(folder, DIGESTS)) as f:
            memo = json.load(f)
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_digests(folder: str, memo: dict):
    from .files import write_text
    with contextlib.suppress(OSError):
        for stale in [p for p in memo if not os.path.exists(p)]:
            del memo[stale]
        write_text(os.path.join(folder, DIGESTS), json.dumps(memo))


def cached_model(key: str, build: Callable[[], bytes],
                 folder: Optional[str] = None) -> Union[str, bytes]:
    """The path of the cached model ``key``, or build it (``build()`` -> serialised model) and
    store it (atomically) and return its path; where the cache cannot be written (that only
    costs time), the bytes."""
    from .files import write_bytes
    folder = folder or _cache_folder()
    path = os.path.join(folder, f"xumx-{key[:40]}.onnx")
    if os.path.isfile(path):
        with contextlib.suppress(OSError):
            os.utime(path)   # most recently used
        return path
    data = build()
    try:
        write_bytes(path, data)
        _trim_cache(folder, CACHE_ENTRIES)
    except OSError:
        return data
    return path   # onnxruntime reads the file faster than the bytes, and they can go


def _trim_cache(folder: str, keep: int):
    entries = [os.path.join(folder, n) for n in os.listdir(folder)
               if n.startswith("xumx-") and n.endswith(".onnx")]
    entries.sort(key=lambda p: os.stat(p).st_mtime, reverse=True)
    for old in entries[keep:]:
        with contextlib.suppress(OSError):
            os.unlink(old)


def load_net(path: str, umx: bool = False, targets: Optional[Sequence[str]] = None,
             device: Device = Device(), threads: Optional[int] = None) -> OnnxNet:
    """The :class:`OnnxNet` of an X-UMX ``.h5`` (or, with ``umx``, a folder of
    ``<target>.h5`` for ``targets``), from the model cache when it holds it."""
    if umx:
        from .config import DEFAULT_SOURCES
        targets = tuple(targets or DEFAULT_SOURCES)
        files = [os.path.join(path, f"{t}.h5") for t in targets]
        extra = "umx/" + ",".join(targets)
    else:
        files, extra = [path], "xumx"
    try:
        key = model_key(files, extra)
    except OSError:
        key = None   # a missing file or folder: the loader names the problem

    def build():
        from .onnxnet import file_model
        return file_model(path, umx, targets)[1]

    model = build() if key is None else cached_model(key, build)
    if isinstance(model, bytes):
        return OnnxNet(model, device, threads)
    try:
        return OnnxNet(model, device, threads)
    except EngineError:
        raise
    except Exception:   # a damaged or vanished cache entry: build the model again
        with contextlib.suppress(OSError):
            os.unlink(model)
        return OnnxNet(cached_model(key, build), device, threads)
