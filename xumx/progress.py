"""Progress on stderr: a tqdm bar on a terminal, plain lines elsewhere.

A bar redraws itself with carriage returns; written to a log file or a pipe, every redraw
stays (a log full of ``\\r`` frames). So a bar is drawn only when stderr is a terminal;
otherwise progress is a few plain lines (:class:`Lines`), and with ``quiet`` nothing.
"""
import sys
from typing import Optional


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):   # no isatty, or a closed stream
        return False


class Lines:
    """tqdm's interface (``update``, ``set_postfix_str``, ``close``, a context manager) as
    plain lines on stderr: one when opened (``<desc>: <total> <unit>(s)``), one per
    ``set_postfix_str`` (``<desc> <i>/<total>: <text>``, ``i`` the item in progress), none per
    ``update`` or ``set_postfix``. With ``quiet``, nothing."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", quiet: bool = False):
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.n = 0
        self._say(desc if total is None else f"{desc}: {total} {unit}(s)")

    def _say(self, line: str):
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def update(self, n: int = 1):
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True):
        at = self.n + 1 if self.total is None else min(self.n + 1, self.total)
        self._say(f"{self.desc} {at}" + ("" if self.total is None else f"/{self.total}")
                  + f": {text}")

    def set_postfix(self, *args, **kw):
        """Numbers a bar would show beside itself (a running loss): no line."""

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(total: Optional[int], desc: str, quiet: bool = False, unit: str = "it",
                 leave: bool = True, lines: bool = True, **bar):
    """A tqdm bar on stderr when stderr is a terminal, else a :class:`Lines` reporter (the same
    calls); silent with ``quiet``. ``leave``: keep the finished bar on the terminal.
    ``lines=False``: nothing off a terminal (for a caller whose own line per item says it,
    such as xumx.test's summary). ``bar``: more tqdm options (``unit_scale``...)."""
    if quiet or not on_terminal():
        return Lines(total, desc, unit, quiet or not lines)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, **bar)
