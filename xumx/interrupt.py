"""SIGTERM handled like Ctrl-C by the command lines, and interrupts that cannot get lost.

``kill``, ``timeout``, job schedulers and container stops send SIGTERM; Python's default is to
die at once, skipping the clean-up that a KeyboardInterrupt runs (removing temporary stems,
closing ffmpeg pipes). Inside :func:`sigterm_as_interrupt` SIGTERM raises KeyboardInterrupt, so
both signals take the same, tested path.

A KeyboardInterrupt raised while Python runs a finaliser (``__del__``, a weakref callback) is
printed as "Exception ignored" and lost. The handlers therefore also remember the signal,
:func:`check`, called between chunks of work, raises it again, and the traceback that Python
would print for the lost one is not printed (the command's one line says what happened).
"""
import contextlib
import signal
import sys
import threading

_pending = []   # signals received inside sigterm_as_interrupt()


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives (a KeyboardInterrupt, so that every
    ``except KeyboardInterrupt`` clean-up runs)."""


def _interrupt(signum: int) -> KeyboardInterrupt:
    return Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise(signum, frame):
    _pending.append(signum)
    raise _interrupt(signum)


def check():
    """Raise the interrupt of a signal received earlier (no-op when none was)."""
    if _pending:
        raise _interrupt(_pending[-1])


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt, and both are
    remembered for :func:`check`; the previous handlers come back after. Outside the main thread
    (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    del _pending[:]
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGINT)}
    hook = sys.unraisablehook

    def quiet_lost_interrupts(unraisable):
        if not (_pending and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            hook(unraisable)   # anything else is reported as usual

    sys.unraisablehook = quiet_lost_interrupts
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for s, handler in previous.items():
            signal.signal(s, handler)
        del _pending[:]


def exit_status(error: KeyboardInterrupt) -> int:
    """The shell's status for an interrupted run: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)
