"""Atomic file writes: a file is either its old whole self or its new whole self.

Every writer of the package (stems, weights, checkpoints, training history and configuration,
evaluation outputs, the downloaded weights, the model cache, exported ONNX files, generated
songs) writes through :func:`replacing` (or :class:`Together` for files that appear together):
to a temporary beside its destination, renamed onto the destination when it is whole. The temporary of ``<folder>/<name>`` is
``<folder>/.<name>.<pid>-<host>-<random>.xumx-tmp`` (``<host>``: 8 hex digits of the host
name's SHA-1). An interrupted writer removes its temporary; a killed one (SIGKILL, a crash)
cannot, so each write first removes the temporaries of the same destination whose writer is
gone: made on this host by a process that no longer exists. A live writer's temporary (on this
or another host) is never touched, and the suffix matches no other program's files.

Write failures raise :class:`WriteError`, one line naming the file and the operating system's
reason ("No space left on device", "Permission denied", "Read-only file system").
"""
import contextlib
import hashlib
import os
import re
import secrets
import socket
from typing import List, Optional, Sequence, Tuple

from .errors import WriteError

SUFFIX = ".xumx-tmp"


def error_number(error: BaseException) -> Optional[int]:
    """The errno of a failed read or write: the exception's own, or the ``errno = N`` that
    HDF5 puts in the messages that h5py raises."""
    code = getattr(error, "errno", None)
    if isinstance(code, int) and code > 0:
        return code
    found = re.search(r"errno = (\d+)", str(error))
    return int(found.group(1)) if found and int(found.group(1)) > 0 else None


def os_reason(error: BaseException) -> str:
    """The operating system's reason for ``error`` in words, e.g. "No space left on device";
    the first line of the message when there is no errno."""
    code = error_number(error)
    if code:
        return os.strerror(code)
    text = str(error).strip().splitlines()
    return (text[0][:300] if text else type(error).__name__)


def write_error(path: str, error: BaseException) -> WriteError:
    if isinstance(error, WriteError):
        return error
    return WriteError(error_number(error), f"{path}: cannot write ({os_reason(error)})")


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _stem(path: str) -> str:
    name = os.path.basename(path)
    if len(os.fsencode(name)) > 200:   # keep the temporary's name under NAME_MAX
        name = hashlib.sha1(os.fsencode(name)).hexdigest()[:16]
    return name


def temporary_name(path: str) -> str:
    """A new temporary name for writing ``path`` (see the module docstring for the pattern)."""
    return os.path.join(os.path.dirname(path),
                        f".{_stem(path)}.{os.getpid()}-{_host()}-{secrets.token_hex(4)}{SUFFIX}")


def temporaries(path: str) -> List[Tuple[str, int, str]]:
    """The temporaries of ``path`` now on disk, whoever wrote them: [(file, pid, host)]."""
    folder = os.path.dirname(path) or os.curdir
    pattern = re.compile(re.escape(f".{_stem(path)}.") + r"(\d+)-([0-9a-f]{8})-[0-9a-f]{8}"
                         + re.escape(SUFFIX) + "$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        m = pattern.match(name)
        if m:
            out.append((os.path.join(os.path.dirname(path), name), int(m.group(1)), m.group(2)))
    return out


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: another user's live process
        return True
    return True


def remove_stale(path: str) -> List[str]:
    """Remove the temporaries of ``path`` left by dead writers on this host; returns them."""
    if os.name != "posix":   # no cheap liveness test: leave them
        return []
    host, removed = _host(), []
    for tmp, pid, their_host in temporaries(path):
        if their_host == host and not _alive(pid):
            try:
                os.unlink(tmp)
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _remove(tmp: str):
    """Remove a temporary file or folder if it is there. A clean-up that fails is left to
    :func:`remove_stale` and never raises: the error that made the clean-up run is the one to
    report (on a read-only file system even removing a file that is not there fails)."""
    import shutil
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def temporary(path: str, folder: bool = False):
    """A new, empty temporary file (a folder with ``folder``) beside ``path``, whose parent
    folders are made first; removed when the block ends unless the caller renamed it. Stale
    temporaries of ``path`` go first. Creating it is inside the block's clean-up, so a
    signal that arrives just after it was made still removes it."""
    tmp = temporary_name(path)
    made = False
    try:
        try:
            os.makedirs(os.path.dirname(path) or os.curdir, exist_ok=True)
            remove_stale(path)
            made = True   # from here on the temporary may exist
            if folder:
                os.mkdir(tmp)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as e:
            raise write_error(path, e) from None
        yield tmp
    finally:
        if made:
            _remove(tmp)


def _fsync(path: str):
    """Flush ``path`` (a file, or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) * os.path.isdir(path))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(path: str):
    """fsync every file under ``path`` (or the file ``path``), then the folders, deepest first."""
    if not os.path.isdir(path):
        _fsync(path)
        return
    for folder, _, names in os.walk(path, topdown=False):
        for name in names:
            _fsync(os.path.join(folder, name))
        _fsync(folder)


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap the names ``a`` and ``b`` in one step (Linux renameat2 RENAME_EXCHANGE); False
    where the system or the file system cannot."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (22, 38, 95):   # EINVAL, ENOSYS, EOPNOTSUPP: not here
        return False
    raise OSError(code, os.strerror(code), b)


def _swap_folder(tmp: str, path: str):
    """Put the folder ``tmp`` in place of the folder ``path`` and remove the old one, with no
    moment where ``path`` is missing: the two names are exchanged in one step where the
    system can (Linux), else the old folder is renamed aside first (a temporary of ``path``)
    and put back if the new one cannot be renamed in. Either way a failure leaves the old
    folder at ``path``, whole."""
    if _exchange(tmp, path):
        _remove(tmp)   # the old folder, now under the temporary's name
        return
    aside = temporary_name(path)
    os.rename(path, aside)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(aside, path)
        raise
    _remove(aside)


@contextlib.contextmanager
def replacing(path: str, folder: bool = False, durable: bool = False):
    """A temporary name beside ``path`` to write to (a file, or with ``folder`` a folder to
    fill): renamed onto ``path`` when the block ends, removed when it fails or is interrupted
    (Ctrl-C, SIGTERM), so ``path`` is always whole. The one atomic writer of the package.
    A folder replaces an existing one without a moment where ``path`` is missing
    (:func:`_swap_folder`). ``durable``: the new contents are flushed to the disk before the
    rename and the parent folder after it, so the replace survives a power loss (for files
    that cost hours: weights, checkpoints, the downloaded weights). An OSError inside the
    block (or from the rename) becomes a :class:`WriteError`."""
    with temporary(path, folder) as tmp:
        try:
            yield tmp
            if durable:
                _sync_tree(tmp)
            if folder and os.path.isdir(path) and not os.path.islink(path):
                _swap_folder(tmp, path)
            else:
                os.replace(tmp, path)
            if durable:
                _fsync(os.path.dirname(path) or os.curdir)
        except OSError as e:
            raise write_error(path, e) from None


class Together:
    """Several files that appear together: ``with Together() as t: tmp = t.temporary(path)``
    gives each destination a temporary (:func:`temporary`) to write; when the block ends
    normally every one is renamed into place, and on any exception (KeyboardInterrupt
    included) every temporary is removed and no destination changes."""

    def __enter__(self) -> "Together":
        self._stack = contextlib.ExitStack()
        self._temps = {}
        return self

    def temporary(self, path: str) -> str:
        if path not in self._temps:
            self._temps[path] = self._stack.enter_context(temporary(path))
        return self._temps[path]

    def __exit__(self, kind, value, tb):
        with self._stack:   # removes the temporaries not renamed
            if kind is None:
                for path, tmp in self._temps.items():
                    try:
                        os.replace(tmp, path)
                    except OSError as e:
                        raise write_error(path, e) from None
        return False


def write_text(path: str, text: str, durable: bool = False):
    """Write ``text`` to ``path`` atomically (``durable``: see :func:`replacing`)."""
    write_bytes(path, text.encode("utf-8"), durable)


def write_bytes(path: str, data, durable: bool = False) -> None:
    """Write ``data`` (bytes or a buffer) to ``path`` atomically (``durable``: see
    :func:`replacing`)."""
    with replacing(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def missing_folders(path: str) -> List[str]:
    """The folders of ``path`` (``~`` expanded) that do not exist yet, deepest first: what
    ``os.makedirs(path)`` would make, for :func:`remove_empty` to take back."""
    out, path = [], os.path.abspath(os.path.expanduser(path))
    while path and not os.path.exists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def remove_empty(folders: Sequence[str]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:   # not there, or not empty: it stays
            pass
