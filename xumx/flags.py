"""The flag catalogue: how a configuration field appears on a command line.

Every field that a command line sets carries its :class:`Flag` in its metadata (names, help,
group; the default is the field's own, :mod:`xumx.config`), so a flag, its help and its default
are written once. A flag that several commands share is one object here, so it means the same
in each (``--sample-rate``: the rate the model runs at; ``--context``: where the network runs).
The parsers are generated from them by :mod:`xumx.parsing`.
"""
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

from .errors import ConfigError


@dataclass(frozen=True)
class Flag:
    """A command-line flag of a config field: its option strings (the first is the one shown),
    help, help group and argparse details. The default is the field's (:meth:`field`).

    ``deprecated``: older spellings still accepted, each with a warning naming the new one.
    ``parse``: turns the command line's text into the value (default: the field's type).
    ``positional``: the values may also be given without the flag (``xumx.test song.mp3``).
    ``detail``: ((command, text), ...): what the flag's one meaning is in that command (the
    layout of ``--out-dir``...), appended to ``help`` in that command's help only.
    """
    names: Tuple[str, ...]
    help: str
    group: str
    choices: Optional[Tuple[str, ...]] = None
    metavar: Optional[str] = None
    required: bool = False
    nargs: Optional[str] = None          # lists: '+' unless given ('*': may be empty)
    deprecated: Tuple[str, ...] = ()
    parse: Optional[Callable[[str], Any]] = None
    positional: bool = False
    detail: Tuple[Tuple[str, str], ...] = ()

    def help_for(self, command: str) -> str:
        """The help of this flag in ``command``: ``help`` and that command's ``detail``."""
        return self.help + dict(self.detail).get(command, "")

    def field(self, default, default_text: Optional[str] = None):
        """A dataclass field with this flag; ``default_text`` says what a None default means."""
        return dataclasses.field(default=default,
                                 metadata={"flag": self, "default_text": default_text})


def opt(default, *names: str, help: str, group: str, default_text: Optional[str] = None, **kw):
    """A field with a flag of its own (not shared with another command)."""
    return Flag(tuple(names), help, group, **kw).field(default, default_text)


# The flags that several commands share: one object each, so one meaning and one help.
MODEL = Flag(("--model",), "X-UMX weights file (.h5) or a training run's folder (its "
             "best_xumx.h5); with --umx-infer a folder of <target>.h5; without --model: the "
             "published x-umx.h5, downloaded once into $XUMX_CACHE or ~/.cache/xumx and checked "
             "by SHA-1", "model", metavar="PATH")
UMX = Flag(("--umx-infer",), "independent Open-Unmix (UMX) networks, a folder of <target>.h5, "
           "instead of X-UMX", "model")
SAMPLE_RATE = Flag(("--sample-rate",), "the rate the model runs at, in Hz", "model", metavar="HZ",
                   detail=(("test", ": audio is resampled to it"),
                           ("eval", ": audio is resampled to it"),
                           ("train", ": the rate of the data set")))
TARGETS = Flag(("--targets",), "sources to separate, by name (with --umx-infer: the <target>.h5 "
               "files read)", "separation", metavar="NAME")
CHUNK_DUR = Flag(("--chunk-dur",), "separate in chunks of this many seconds, cross-faded over "
                 "--overlap, in bounded memory; 0: each file or track in one piece",
                 "separation", metavar="SECONDS")
BATCH_FRAMES = Flag(("--batch-frames",), "STFT frames the network runs at once: consecutive "
                    "chunks of equal length (separating files: of the next inputs too) go through it "
                    "together up to this many frames (0, the default: one chunk at a time, each "
                    "input finished before the next is opened; 2600 holds two 30 s chunks at "
                    "44.1 kHz); the stems agree to >= 100 dB, the memory grows with it "
                    "(docs/onnx-engine.md: little or no faster on 2 cores)", "separation",
                    metavar="FRAMES")
OVERLAP = Flag(("--overlap",), "seconds shared by neighbouring chunks, cross-faded "
               "(raised cosine)", "separation", metavar="SECONDS")
CONTEXT = Flag(("--context", "-c"), "cpu, or cudnn for an NVIDIA GPU (separation: onnxruntime-gpu's "
               "CUDA provider; training: nnabla-ext-cuda)", "runtime", choices=("cpu", "cudnn"))
DEVICE_ID = Flag(("--device-id", "-d"), "GPU index for --context cudnn", "runtime", metavar="ID")
# -o: Demucs's and many tools' short flag; --outdir: open-unmix's spelling
OUT_DIR = Flag(("--out-dir", "-o", "--outdir"), "folder for the separated stems",
               "input and output", metavar="DIR", detail=(
                   ("test", ": <out-dir>/<input name>/<target>.<ext> (inputs of the same name get "
                            "<name>_2, <name>_3... in the order given; an earlier run's stems "
                            "there that this run does not write are removed)"),
                   ("eval", ": <out-dir>/<subset>/<track>/<target>.wav")))
ROOT = Flag(("--root",), "MUSDB18 root folder (STEMS, or WAV with --is-wav)", "data", metavar="DIR")
IS_WAV = Flag(("--is-wav",), "the data set is decoded WAV: <root>/<subset>/<track>/<source>.wav "
              "(musdb's is_wav layout)", "data")
SEED = Flag(("--seed",), "random seed (every generator of the run is a function of it)", "data",
            metavar="N")
OUT = Flag(("--out",), "what the command writes", "input and output", metavar="PATH",
           required=True, detail=(("export", ": the ONNX file"),
                                  ("synth", ": the data set's root folder")))
#: The precisions of the network's graph (:mod:`xumx.onnxnet`); the first is the default.
PRECISIONS = ("float32", "int8")
PRECISION = Flag(("--precision",), "the network's LSTM weights: float32, or int8 (opt-in: "
                 "onnxruntime's DynamicQuantizeLSTM, a faster network whose stems differ a "
                 "little from float32's; docs/onnx-engine.md, \"Reduced precision\")",
                 "separation", choices=PRECISIONS)
QUIET = Flag(("--quiet", "-q"), "no progress bars and no summary lines (errors and warnings are "
             "still printed)", "input and output")


def flagged_fields(cls, names: Optional[Sequence[str]] = None) -> list:
    """The dataclass fields of ``cls`` that have a flag (only ``names``, if given)."""
    out = [f for f in dataclasses.fields(cls) if "flag" in f.metadata]
    if names is not None:
        out = [f for f in out if f.name in names]
    return out


def value_type(f) -> Tuple[Any, bool]:
    """(element type, is a list) of a field's annotation."""
    kind = f.type
    if typing.get_origin(kind) is typing.Union:   # Optional[X]
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) in (tuple, Tuple):
        return typing.get_args(kind)[0], True
    return kind, False


def default_text(f) -> str:
    """The default of a field as the help and docs/flags.md show it."""
    flag = f.metadata["flag"]
    if flag.required:
        return "required"
    if f.metadata["default_text"]:
        return f.metadata["default_text"]
    if f.default is False:
        return "off"
    if isinstance(f.default, tuple):
        return " ".join(map(str, f.default))
    return "none" if f.default is None else f"{f.default:g}" if isinstance(f.default, float) \
        else str(f.default)


def coerce(f, value, where: str):
    """``value`` (from argparse or YAML) as field ``f`` holds it; ConfigError naming ``where``."""
    kind, many = value_type(f)
    if value is None:
        return None
    try:
        if many:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise TypeError("a list")
            if not isinstance(kind, type):   # items a flag's own parse made (pairs...)
                return tuple(value)
            return tuple(kind(v) for v in value)
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError("true or false")
            return value
        if kind in (int, float) and isinstance(value, bool):
            raise TypeError("a number")
        if kind is int and isinstance(value, float) and value != int(value):
            raise TypeError("a whole number")
        return kind(value)
    except (TypeError, ValueError) as e:
        want = e.args[0] if isinstance(e, TypeError) and e.args else kind.__name__
        raise ConfigError(f"{where}: expected {want}, not {value!r}") from None
