"""File digests, computed once per file version.

A model file is hashed for three purposes: verifying the published weights (their SHA-1), naming
a built ONNX model in the model cache, and recording what made an evaluation's scores (both
SHA-256). :func:`file_digest` is the one way: it remembers each digest with the file's size,
modification time and inode (as git's index does), in this process and in
``<cache>/digests.json``, so an unchanged weights file is read once, not on every load. A file
that changes in place keeping all three is not noticed; that is the trade every build tool makes.
Where the cache folder cannot be written, digests are remembered for this process only.
"""
import contextlib
import hashlib
import json
import os
import threading
from typing import Dict, Optional

MEMO_NAME = "digests.json"
_memo: Optional[Dict[str, dict]] = None
_lock = threading.Lock()


def _memo_path() -> str:
    from .cachedir import cache_dir
    return os.path.join(cache_dir(), MEMO_NAME)


def _load() -> Dict[str, dict]:
    global _memo
    if _memo is None:
        try:
            with open(_memo_path()) as f:
                data = json.load(f)
            _memo = {k: v for k, v in data.items() if isinstance(v, dict)} \
                if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _memo = {}
    return _memo


def _save(memo: Dict[str, dict]):
    from .files import write_text
    with contextlib.suppress(OSError):   # a read-only cache: remembered in this process only
        for gone in [p for p in memo if not os.path.exists(p)]:
            del memo[gone]
        write_text(_memo_path(), json.dumps(memo))


def hash_file(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes with a ``hashlib`` algorithm (reads the whole file)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """The hex digest of ``path`` with ``algorithm``, read from the memo when the file's size,
    modification time and inode are those it was hashed with; else computed and remembered.
    Raises OSError for a missing or unreadable file."""
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    with _lock:
        memo = _load()
        known = memo.get(real)
        if isinstance(known, dict) and known.get("stamp") == stamp and algorithm in known:
            return known[algorithm]
    value = hash_file(real, algorithm)
    with _lock:
        memo = _load()
        entry = memo.get(real)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            entry = {"stamp": stamp}
        entry[algorithm] = value
        memo[real] = entry
        _save(memo)
    return value


def forget():
    """Drop this process's memo (the file is read again on the next call)."""
    global _memo
    with _lock:
        _memo = None
