"""The command lines, generated from the configuration dataclasses.

:data:`COMMANDS` says which dataclasses make up each entry module's command line;
:func:`build_parser` generates its parser from their fields' flags (:mod:`xumx.flags`) and
:func:`parse` turns a command line into the dataclasses (no ``argparse.Namespace`` leaves the
entry modules). ``python scripts/flags_doc.py > docs/flags.md`` writes the flag tables
(:func:`flags_document`).
"""
import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from .config import (ChunkConfig, DemoConfig, EvalConfig, ExportConfig, LoadConfig, ModelConfig,
                     OutputConfig, SeparationConfig, SynthConfig, TrainConfig,
                     bandwidth_to_max_bin)
from .errors import ConfigError, XumxWarning
from .flags import coerce, default_text, flagged_fields, value_type


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors (an unknown flag, a missing or malformed value) raise
    :class:`ConfigError` instead of printing the usage and exiting, so they take the one path
    of :func:`run`."""

    def error(self, message):
        raise ConfigError(message + self._suggestion(message))

    def _suggestion(self, message: str) -> str:
        """``" (did you mean --outdir?)"`` for a mistyped flag or another tool's spelling
        (:data:`FOREIGN`), else ``""``."""
        import difflib
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        hints = {}
        for word in message[len(prefix):].split():
            flag = word.split("=")[0]
            foreign = FOREIGN.get(flag)
            if foreign and foreign.split()[0] in known:
                hints[flag] = f"did you mean {foreign}?"
                continue
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75) \
                if flag.startswith("-") else []
            if close:
                hints[flag] = f"did you mean {close[0]}?"
        if len(hints) == 1:
            return f" ({next(iter(hints.values()))})"
        return " (" + "; ".join(f"{k}: {v}" for k, v in hints.items()) + ")" if hints else ""


#: Flags of open-unmix and Demucs that xumx spells otherwise: {their flag: ours}.
FOREIGN = {"--ext": "--format", "--mp3": "--format mp3", "--flac": "--format flac"}


def program(command: str) -> str:
    """How the user started ``command``: ``xumx-test`` (the console script) or
    ``python -m xumx.test``."""
    import os
    import sys
    script = f"xumx-{command}"
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if os.path.splitext(argv0)[0] == script else f"python -m xumx.{command}"


@dataclass(frozen=True)
class Command:
    """An entry module's command line: what it does, and the dataclasses it sets (``fields``:
    the fields of each that it sets, None for all with a flag), in the order :func:`parse`
    returns them."""
    summary: str
    sections: Tuple[Tuple[type, Optional[Tuple[str, ...]]], ...]
    recipes: bool = False    # --config FILE.yaml


COMMANDS: Dict[str, Command] = {
    "test": Command("Separate audio files into stems, in one process or shared among the "
                    "processes of mpirun -n N.",
                    ((OutputConfig, None), (ChunkConfig, None), (LoadConfig, None),
                     (SeparationConfig, None))),
    "train": Command("Train X-UMX on MUSDB18 (or any musdb-layout data set), on one machine or "
                     "with mpirun -n N.", ((ModelConfig, None), (TrainConfig, None)), recipes=True),
    "eval": Command("Separate MUSDB18 tracks and score them with museval (BSSEval v4), in one "
                    "process or shared among the processes of mpirun -n N.",
                    ((EvalConfig, None), (ChunkConfig, None), (LoadConfig, None),
                     (SeparationConfig, None))),
    "export": Command("Write the network as an ONNX file.",
                      ((ExportConfig, None), (LoadConfig, ("model", "umx")),
                       (SeparationConfig, ("targets", "precision")))),
    "synth": Command("Write a small generated MUSDB-like WAV data set.", ((SynthConfig, None),)),
    "demo": Command("The whole job, offline, on a CPU: generate data, train, separate, evaluate.",
                    ((DemoConfig, None),)),
}
#: Help groups, in the order they are shown.
GROUPS = ("input and output", "data", "model", "separation", "training", "evaluation",
          "generated data set", "demo", "runtime")
RECIPE_HELP = ("YAML recipe setting any training field by name: a file, or a recipe shipped with "
               "xumx (x-umx-musdb18: the published one; demo); flags given here override it")


def command_fields(command: str) -> list:
    """(dataclass, field) of every flag of ``command``, in section order."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    return [(cls, f) for cls, names in COMMANDS[command].sections
            for f in flagged_fields(cls, names)]


def shown_fields(command: str) -> list:
    """(dataclass, field) of every flag of ``command`` in the order --help and docs/flags.md
    show them: by :data:`GROUPS`, then in section order."""
    fields = command_fields(command)
    missing = {f.metadata["flag"].group for _, f in fields} - set(GROUPS)
    assert not missing, f"flag groups not in GROUPS: {missing}"
    return sorted(fields, key=lambda cf: GROUPS.index(cf[1].metadata["flag"].group))


class _Deprecated(argparse.Action):
    """Stores like the flag it stands for, with a warning naming that flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        import warnings
        warnings.warn(f"{option_string} is deprecated here: use {self.metavar}", XumxWarning)
        setattr(namespace, self.dest, values)


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``python -m xumx.<command>``, generated from :data:`COMMANDS`.

    Flags not given are absent from its namespace (defaults come from the dataclasses)."""
    from . import __version__
    parser = Parser(prog=program(command), description=COMMANDS[command].summary,
                    argument_default=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"xumx {__version__}",
                        help="print the version and exit")
    groups = {}
    for _, f in shown_fields(command):
        flag = f.metadata["flag"]
        group = groups.get(flag.group) or groups.setdefault(
            flag.group, parser.add_argument_group(flag.group))
        kind, many = value_type(f)
        kw: Dict[str, Any] = {"dest": f.name}
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw.update(type=flag.parse or kind, metavar=flag.metavar if not flag.choices else None,
                      choices=flag.choices)
            if many:
                kw["nargs"] = flag.nargs or "+"
        if flag.required and not flag.positional:
            kw["required"] = True
        if flag.positional:   # also without the flag; given() joins the two
            group.add_argument(f"{POSITIONAL}{f.name}", nargs="*", type=kw["type"],
                               metavar=kw["metavar"], help=argparse.SUPPRESS, default=[])
        shown = "" if kind is bool or flag.required else f" (default: {default_text(f)})"
        group.add_argument(*flag.names, help=flag.help_for(command).replace("%", "%%") + shown,
                           **kw)
        for old in flag.deprecated:
            group.add_argument(old, dest=f.name, action=_Deprecated, type=kind,
                               metavar=flag.names[0], help=argparse.SUPPRESS)
    if COMMANDS[command].recipes:
        parser.add_argument("--config", metavar="FILE.yaml", help=RECIPE_HELP)
    return parser


#: The destination prefix of a flag's positional form (:attr:`Flag.positional`).
POSITIONAL = "positional_"


def given(command: str, argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """{field name: value} of the flags on the command line ``argv`` (default: sys.argv[1:]);
    a positional form's values come before the flag's. Raises ConfigError for a bad command
    line (a required flag given neither way included)."""
    values = vars(build_parser(command).parse_intermixed_args(argv))
    for _, f in command_fields(command):
        flag = f.metadata["flag"]
        if not flag.positional:
            continue
        loose = list(values.pop(POSITIONAL + f.name, []))
        if loose or f.name in values:
            values[f.name] = loose + list(values.get(f.name, []))
        elif flag.required:
            raise ConfigError(f"the following arguments are required: {flag.names[0]} "
                              f"(or give them without it: {program(command)} "
                              f"{flag.metavar or f.name.upper()} ...)")
    return values


def build(command: str, values: Dict[str, Any]) -> tuple:
    """The dataclasses of ``command`` (:data:`COMMANDS` order) from {field name: value}; a
    field absent from ``values`` keeps its default. Raises ConfigError for invalid values."""
    values = dict(values)
    values.pop("config", None)
    out = []
    for cls, names in COMMANDS[command].sections:
        kw = {f.name: coerce(f, values[f.name], f.name) for f in flagged_fields(cls, names)
              if f.name in values}
        try:
            out.append(cls(**kw))
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
    if command == "train":   # the bandwidth fixes the new model's max_bin
        model, train = out
        out[0] = dataclasses.replace(model, max_bin=bandwidth_to_max_bin(
            model.sample_rate, model.nfft, train.bandwidth))
    return tuple(out)


def parse(command: str, argv: Optional[Sequence[str]] = None) -> tuple:
    """The dataclasses of ``python -m xumx.<command> argv`` (see :data:`COMMANDS`); training
    recipes and resumed runs are read as :func:`train_values` says."""
    values = given(command, argv)
    if command == "train":
        from .recipes import train_values
        values = train_values(values)
    return build(command, values)


def flags_markdown(command: str) -> str:
    """The flag table of ``command``: flag(s), default, meaning (one format for every table)."""
    rows = ["| Flag | Default | Meaning |", "|---|---|---|"]
    for _, f in shown_fields(command):
        flag = f.metadata["flag"]
        kind, many = value_type(f)
        arg = ("{" + ",".join(flag.choices) + "}" if flag.choices
               else "" if kind is bool else (flag.metavar or f.name.upper()))
        if many and arg:
            arg += f" [{arg} ...]"
        names = [f"`{flag.names[0]}{' ' + arg if arg else ''}`"] + [f"`{n}`" for n in flag.names[1:]]
        meaning = flag.help_for(command) + (f" (old spelling: {', '.join(flag.deprecated)})"
                               if flag.deprecated else "")
        rows.append(f"| {', '.join(names)} | {default_text(f)} | {_md(meaning)} |")
    if COMMANDS[command].recipes:
        rows.append(f"| `--config FILE.yaml` | none | {_md(RECIPE_HELP)} |")
    return "\n".join(rows)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")


def flags_document() -> str:
    """docs/flags.md: every command's flag table (tests/test_readme.py keeps it in step)."""
    parts = ["# Flags of every command", "",
             "Generated from the parsers (`python scripts/flags_doc.py > docs/flags.md`; "
             "`tests/test_readme.py` checks that it is current). A flag that several commands "
             "have means the same in each; every command also takes `--help` and `--version`. "
             "Exit statuses: README, \"Errors and exit statuses\"."]
    for command, spec in COMMANDS.items():
        parts += ["", f"## python -m xumx.{command}", "", spec.summary, "", flags_markdown(command)]
    return "\n".join(parts) + "\n"
