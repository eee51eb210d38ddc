"""SIGTERM handled like Ctrl-C by the command lines.

``kill``, ``timeout``, job schedulers and container stops send SIGTERM; Python's default is to
die at once, skipping the clean-up that a KeyboardInterrupt runs (removing temporary stems,
closing ffmpeg pipes). Inside :func:`sigterm_as_interrupt` SIGTERM raises KeyboardInterrupt, so
both signals take the same, tested path.
"""
import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives (a KeyboardInterrupt, so that every
    ``except KeyboardInterrupt`` clean-up runs)."""


def _raise(signum, frame):
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated`; the previous handler comes back after.
    Outside the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(error: KeyboardInterrupt) -> int:
    """The shell's status for an interrupted run: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)
