"""The model cache: each model's ONNX graph built once and kept, serialised, on disk.

Building the graph from a weights file (reading, checking, folding, serialising; timings in
docs/onnx-engine.md, "Load time") is done once per model content; later runs load
``<cache>/onnx/xumx-<key>.onnx`` directly. The key is the SHA-256 of the model's files and
sidecars (:attr:`xumx.modelfiles.ModelFiles.sha256`), of :data:`GRAPH_VERSION` and of the
graph's precision (float32 or int8, :mod:`xumx.onnxnet`), so a changed file or a changed graph
writer never reuses an old entry, and the float32 and int8 graphs of a model are two entries
(a loaded entry whose metadata states another precision is built again). The least recently used entries beyond
:data:`CACHE_ENTRIES` are removed. Cache folder: :func:`xumx.cachedir.cache_dir`
(``$XUMX_CACHE``; in a container, a volume).

Where the cache cannot be written (a read-only home, a full disk) the model is built in memory
for this process, with one warning: that costs time on every start, nothing else.
"""
import contextlib
import hashlib
import os
import warnings
from typing import Callable, Optional, Union

from .config import PRECISIONS
from .engine import Device, EngineError, OnnxNet
from .errors import XumxWarning
from .modelfiles import ModelFiles

#: Changes whenever :mod:`xumx.onnxnet` writes a different graph: cached models of other
#: versions are not used.
GRAPH_VERSION = 2
#: Cached models kept (the least recently used beyond this are removed).
CACHE_ENTRIES = 4
PREFIX, SUFFIX = "xumx-", ".onnx"


def cache_folder() -> str:
    from .cachedir import cache_dir
    return os.path.join(cache_dir(), "onnx")


def model_key(model: ModelFiles, precision: str = PRECISIONS[0]) -> str:
    """The cache key of ``model``'s graph in ``precision`` (see the module docstring)."""
    return hashlib.sha256(f"xumx-onnx/{GRAPH_VERSION}/{precision}/{model.sha256}".encode()
                          ).hexdigest()


def cached_model(key: str, build: Callable[[], bytes],
                 folder: Optional[str] = None) -> Union[str, bytes]:
    """The path of the cached model ``key``; or build it (``build()`` -> serialised model),
    store it atomically and return its path; where the cache cannot be written, the bytes
    (and one :class:`~xumx.errors.XumxWarning` saying so)."""
    from .files import os_reason, write_bytes
    folder = folder or cache_folder()
    path = os.path.join(folder, f"{PREFIX}{key[:40]}{SUFFIX}")
    if os.path.isfile(path):
        with contextlib.suppress(OSError):
            os.utime(path)   # most recently used
        return path
    data = build()
    try:
        write_bytes(path, data)
    except OSError as e:
        warnings.warn(f"cannot write the model cache {folder} ({os_reason(e)}): the model is "
                      f"built in memory on every start; set XUMX_CACHE to a writable folder "
                      f"to keep it", XumxWarning, stacklevel=2)
        return data
    trim(folder, CACHE_ENTRIES)
    return path   # onnxruntime reads the file faster than the bytes, and they can go


def trim(folder: str, keep: int):
    """Remove the least recently used cached models beyond ``keep``."""
    entries = []
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if name.startswith(PREFIX) and name.endswith(SUFFIX):
                with contextlib.suppress(OSError):
                    path = os.path.join(folder, name)
                    entries.append((os.stat(path).st_mtime, path))
    entries.sort(reverse=True)
    for _, old in entries[keep:]:
        with contextlib.suppress(OSError):
            os.unlink(old)


def load_net(model: ModelFiles, device: Device = Device(), threads: Optional[int] = None,
             precision: str = PRECISIONS[0]) -> OnnxNet:
    """The :class:`~xumx.engine.OnnxNet` of ``model`` in ``precision``, from the cache when it
    holds it (else built from the weights and stored). Raises WeightsError for a model that
    cannot be read, EngineError for a device that cannot be used."""
    try:
        key = model_key(model, precision)
    except OSError:
        key = None   # a missing or unreadable file: reading the model names the problem

    def build() -> bytes:
        from .onnxnet import file_model
        return file_model(model, serving=True, precision=precision)[1]

    built = build() if key is None else cached_model(key, build)
    if isinstance(built, bytes):
        return OnnxNet(built, device, threads, precision)
    try:
        return OnnxNet(built, device, threads, precision)   # ValueError: another precision's
    except EngineError:
        raise
    except Exception:   # a damaged, vanished or mislabelled cache entry: build it again
        with contextlib.suppress(OSError):
            os.unlink(built)
        return OnnxNet(cached_model(key, build), device, threads, precision)
