"""Atomic file writes: a file is either its old whole self or its new whole self."""
import contextlib
import os


@contextlib.contextmanager
def replacing(path: str):
    """A temporary name beside ``path`` to write to: renamed onto ``path`` when the block ends,
    removed when it fails or is interrupted (Ctrl-C, SIGTERM), so ``path`` is always whole."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str):
    """Write ``text`` to ``path`` atomically."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)
