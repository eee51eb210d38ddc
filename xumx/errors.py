"""The package's expected failures: one base class, one subclass per kind of cause.

Every exception here means "this run cannot be done as asked" (a file that is not a model, an
input that is not audio, a GPU that cannot be used, a flag out of range...), and ``str(error)``
is the one line to show the user. The entry modules (:mod:`xumx.cli`) print it as
``xumx.<command>: error: <line>`` and exit with 2 for a :class:`ConfigError` (a bad command
line or recipe) and 1 for the others. Any other exception is a bug and keeps its traceback.

Each class also derives from the built-in exception that callers caught before it existed
(``ValueError`` for bad values and files, ``RuntimeError``, ``ImportError``, ``OSError``), so
``except ValueError`` around the function API keeps working. The modules where the failures
arise re-export their class (``xumx.weights.WeightsError``, ``xumx.audio.AudioError``...).
"""


import unicodedata

#: Unicode categories written as escapes in a line for the user: control characters (a
#: newline in a file name), lone surrogates (the undecodable bytes of a file name) and the
#: line and paragraph separators.
_ESCAPED = {"Cc", "Cs", "Zl", "Zp"}


def one_line(text: str) -> str:
    """``text`` as one printable line: each character of :data:`_ESCAPED` as its Python
    escape (``\\n``, ``\\x1b``, ``\\udcff``), every other character as it is (``é``, ``♫``)."""
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(c) in _ESCAPED else c for c in text)


class XumxError(Exception):
    """Base of the package's expected failures; ``str()`` is one line for the user (a file
    name's newline or terminal escape comes out escaped: :func:`one_line`)."""

    def __str__(self):
        return one_line(super().__str__())


class ConfigError(XumxError, ValueError):
    """A bad command line, recipe or configuration value (exit status 2)."""


class InputError(XumxError, ValueError):
    """Audio or settings passed to the separation API that it cannot separate (a wrong shape
    or dtype, non-finite samples, a target the model does not have)."""


class TargetError(InputError, ConfigError):
    """A target or aggregate source that the model does not have: a bad setting, so on a
    command line a bad command line (exit status 2)."""


class WeightsError(XumxError, ValueError):
    """A weights file, UMX folder or training checkpoint that cannot be used (names the file)."""


class DownloadError(XumxError, RuntimeError):
    """The published weights could not be fetched or verified."""


class AudioError(XumxError, ValueError):
    """An audio input that cannot be read or an output that cannot be written (names the file)."""


class WriteError(XumxError, OSError):
    """A file could not be written; names it and the operating system's reason."""

    def __str__(self):
        return one_line(self.strerror or super().__str__())


class EngineError(XumxError, RuntimeError):
    """The separation engine cannot run where it was asked to (a GPU it cannot use)."""


class NnablaMissing(XumxError, ImportError):
    """nnabla is needed here and cannot be imported (says what to install)."""


class DataError(XumxError, ValueError):
    """A data set that cannot be used for training."""


class DistributedError(XumxError, RuntimeError):
    """Launched for several processes that cannot communicate."""


class EvalError(XumxError, RuntimeError):
    """An evaluation that cannot be done with the given data set, model or targets."""


class DemoError(XumxError, RuntimeError):
    """A step of the demo failed (the line names the step)."""


class XumxWarning(UserWarning):
    """Something the user should know that does not stop the run (one line)."""


class AudioWarning(XumxWarning):
    """Something the user should know about an input or an output (dropped channels, clipping,
    a changed rate)."""
