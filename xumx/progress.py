"""Progress bars of the command lines: on a terminal only.

A bar redraws itself with carriage returns; in a log file (stderr redirected) those frames
would fill it, so there the bar is off and the commands' plain lines (one per file, track or
phase) are the record.
"""
import sys


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or closed
        return False


def progress_bar(total=None, desc: str = "", quiet: bool = False, unit: str = "it", **kw):
    """A tqdm bar on stderr, disabled when ``quiet`` or when stderr is not a terminal
    (:func:`on_terminal`); it vanishes when done (``leave=False``) unless ``kw`` says."""
    from tqdm import tqdm
    kw.setdefault("leave", False)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=quiet or not on_terminal(), **kw)
