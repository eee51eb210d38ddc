"""The model cache: each model's serving graph built once and kept, serialised, on disk.

Building the graph from a weights file (reading, checking, folding, serialising; timings in
docs/onnx-engine.md, "Load time") is done once per model content; later runs load
``<cache>/onnx/xumx-<key>.onnx`` and its head, ``xumx-<key>.head.npy``
(:func:`xumx.onnxnet.serving_model`), directly. The key is the SHA-256 of the model's files and
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
from typing import Callable, Optional, Tuple, Union

import numpy as np

from .config import PRECISIONS
from .engine import Device, EngineError, OnnxNet
from .errors import XumxWarning
from .modelfiles import ModelFiles
from .onnxnet import head_path

#: Changes whenever :mod:`xumx.onnxnet` writes a different graph: cached models of other
#: versions are not used.
GRAPH_VERSION = 3
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


def cached_model(key: str, build: Callable[[], Tuple[bytes, np.ndarray]],
                 folder: Optional[str] = None) -> Tuple[Union[str, bytes], Optional[np.ndarray]]:
    """The cached model ``key``: (the path of its graph, None: its head is in the file beside
    it); or build it (``build()`` -> (serialised graph, head)), store both atomically and
    together, and return the path and the head; where the cache cannot be written, the bytes
    and the head (and one :class:`~xumx.errors.XumxWarning` saying so)."""
    from .files import Together, os_reason
    folder = folder or cache_folder()
    path = os.path.join(folder, f"{PREFIX}{key[:40]}{SUFFIX}")
    if os.path.isfile(path):
        for name in (path, head_path(path)):
            with contextlib.suppress(OSError):
                os.utime(name)   # most recently used
        return path, None
    data, head = build()
    try:
        with Together() as files:
            for name, write in ((head_path(path), lambda f: np.save(f, head, allow_pickle=False)),
                                (path, lambda f: f.write(data))):
                with open(files.temporary(name), "wb") as f:
                    write(f)
    except OSError as e:
        warnings.warn(f"cannot write the model cache {folder} ({os_reason(e)}): the model is "
                      f"built in memory on every start; set XUMX_CACHE to a writable folder "
                      f"to keep it", XumxWarning, stacklevel=2)
        return data, head
    trim(folder, CACHE_ENTRIES)
    return path, head   # onnxruntime reads the file faster than the bytes, and they can go


def remove(path: str):
    """Remove the cached model whose graph is at ``path`` (graph and head)."""
    for name in (path, head_path(path)):
        with contextlib.suppress(OSError):
            os.unlink(name)


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
        remove(old)


def load_net(model: ModelFiles, device: Device = Device(), threads: Optional[int] = None,
             precision: str = PRECISIONS[0]) -> OnnxNet:
    """The :class:`~xumx.engine.OnnxNet` of ``model`` in ``precision``, from the cache when it
    holds it (else built from the weights and stored). Raises WeightsError for a model that
    cannot be read, EngineError for a device that cannot be used."""
    try:
        key = model_key(model, precision)
    except OSError:
        key = None   # a missing or unreadable file: reading the model names the problem

    def build() -> Tuple[bytes, np.ndarray]:
        from .onnxnet import file_serving
        return file_serving(model, precision)

    built, head = build() if key is None else cached_model(key, build)
    if isinstance(built, bytes):
        return OnnxNet(built, device, threads, precision, head)
    try:   # ValueError: another precision's, or a head that does not fit
        return OnnxNet(built, device, threads, precision, head)
    except EngineError:
        raise
    except Exception:   # a damaged, vanished or mislabelled cache entry: build it again
        remove(built)
        built, head = cached_model(key, build)
        return OnnxNet(built, device, threads, precision, head)
