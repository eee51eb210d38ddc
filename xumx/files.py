"""Atomic file writes: a file is either its old whole self or its new whole self.

Every writer of the package (stems, weights, checkpoints, training history, evaluation outputs,
the downloaded weights) writes to a temporary file beside its destination and renames it onto
the destination when it is whole. The temporary of ``<folder>/<name>`` is
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
from typing import List, Optional, Tuple

SUFFIX = ".xumx-tmp"


class WriteError(OSError):
    """A file could not be written; ``str()`` is one line naming it and the OS's reason."""

    def __str__(self):
        return self.strerror


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


@contextlib.contextmanager
def temporary(path: str):
    """A new, empty temporary file beside ``path`` (mode as ``open`` would make it); removed
    when the block ends unless the caller renamed it. Stale temporaries of ``path`` go first."""
    remove_stale(path)
    tmp = temporary_name(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def replacing(path: str):
    """A temporary name beside ``path`` to write to: renamed onto ``path`` when the block ends,
    removed when it fails or is interrupted (Ctrl-C, SIGTERM), so ``path`` is always whole.
    An OSError inside the block (or from the rename) becomes a :class:`WriteError`."""
    with temporary(path) as tmp:
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(path, e) from None


def write_text(path: str, text: str):
    """Write ``text`` to ``path`` atomically."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)
