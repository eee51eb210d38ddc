"""The command-line convention shared by every entry module (test, train, eval, export, synth,
demo): messages, exit statuses, signals.

=====  ==============================================================================
 0     done
 1     the run failed: one line ``xumx.<command>: error: <why>`` on stderr
 2     a bad command line or recipe: one line ``xumx.<command>: error: <why>``
130    interrupted with Ctrl-C (SIGINT): one line ``xumx.<command>: interrupted; <what is kept>``
       (on a terminal after a line break, so not on the terminal's ``^C``)
143    terminated with SIGTERM: one line ``xumx.<command>: terminated; <what is kept>``
=====  ==============================================================================

"Failed" means an expected failure (:class:`xumx.errors.XumxError`, an operating-system error
such as a full disk, running out of memory). Any other exception is a bug in xumx: it is not
caught and Python prints its traceback. Warnings of the package
(:class:`xumx.errors.XumxWarning`) are printed as ``xumx.<command>: warning: <line>``.
"""
import sys
import warnings
from typing import Callable, List, Optional, Union

from .errors import ConfigError, XumxError, XumxWarning, one_line
from .progress import on_terminal

OK, FAILED, USAGE = 0, 1, 2




def say(command: str, message: str):
    """``xumx.<command>: <message>`` on stderr, on one line (:func:`xumx.errors.one_line`:
    a newline in a file name is printed as ``\\n``); ``xumx: <message>`` for command "" (the
    package's own ``python -m xumx``). Under ``mpirun -n N`` the command's name carries the
    rank: ``xumx.eval (rank 1 of 2): ...``."""
    from .mpi import rank_tag
    print(one_line(f"xumx.{command}{rank_tag()}: {message}" if command else f"xumx: {message}"),
          file=sys.stderr, flush=True)


#: Flags that make a command need less memory, in the order a hint names them.
MEMORY_FLAGS = ("--chunk-dur", "--batch-frames", "--batch-size", "--seq-dur")


def memory_hint(command: Optional[str]) -> str:
    """" (a smaller --chunk-dur needs less)": the flags of :data:`MEMORY_FLAGS` that
    ``command`` has ("" for none, or an unknown command)."""
    from .parsing import COMMANDS, command_fields
    if command not in COMMANDS:
        return ""
    names = {n for _, f in command_fields(command) for n in f.metadata["flag"].names}
    flags = [f for f in MEMORY_FLAGS if f in names]
    return f" (a smaller {' or '.join(flags)} needs less)" if flags else ""


def failure(error: BaseException, command: Optional[str] = None) -> str:
    """The one line of an expected failure of ``python -m xumx.<command>``."""
    if isinstance(error, MemoryError):
        return "out of memory" + memory_hint(command)
    if isinstance(error, OSError) and not isinstance(error, XumxError):
        from .files import os_reason
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        return where + os_reason(error)
    return str(error) or type(error).__name__


def _warning_printer(command: str, default):
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, XumxWarning):
            say(command, f"warning: {message}")
        else:
            default(message, category, filename, lineno, file, line)
    return show


def run(command: str, body: Callable[[Optional[List[str]]], int], argv=None,
        kept: Union[str, Callable[[], str]] = "") -> int:
    """Run ``body(argv)`` (the command's work, returning its exit status) under the convention
    of the module docstring. ``kept`` (or what it returns, asked after the signal) says what
    an interruption leaves, e.g. "scored tracks are kept; run again to go on"."""
    from .interrupt import Terminated, check, exit_status, sigterm_as_interrupt
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(command, warnings.showwarning)
        warnings.simplefilter("always", XumxWarning)
        try:
            with sigterm_as_interrupt():
                try:
                    return body(argv)
                except Exception:
                    check()   # an error that a signal caused (a pipe it broke) is the signal's
                    raise
        except ConfigError as e:
            say(command, f"error: {failure(e, command)}")
            return _left(USAGE)
        except (XumxError, OSError, MemoryError) as e:
            say(command, f"error: {failure(e, command)}")
            return _left(FAILED)
        except KeyboardInterrupt as e:
            word = "terminated" if isinstance(e, Terminated) else "interrupted"
            note = kept() if callable(kept) else kept
            if word == "interrupted" and on_terminal():   # not on the terminal's "^C" line
                print(file=sys.stderr, flush=True)
            say(command, f"{word}; {note}" if note else word)
            return _left(exit_status(e))


def _left(status: int) -> int:
    """``status``, after ending the other ranks of an MPI job (:func:`xumx.mpi.abandon`)."""
    from .mpi import abandon
    abandon(status)
    return status
