"""``python -m xumx``: what the package's commands are (``--version``: the version)."""
import sys

COMMANDS = (("test", "separate audio files into stems (mpirun -n N: shared among N processes)"),
            ("train", "train X-UMX on MUSDB18 (mpirun -n N for several processes)"),
            ("eval", "score a model on MUSDB18 with museval (mpirun -n N: tracks shared)"),
            ("export", "write the network as an ONNX file"),
            ("synth", "write a small generated MUSDB-like data set"),
            ("demo", "the whole job offline on a CPU: data, training, separation, scores"))


def main(argv=None) -> int:
    """Print the commands (0), the version with ``--version`` (0); anything else is a bad
    command line (2, as for every command: :mod:`xumx.cli`)."""
    from . import __version__
    from .cli import USAGE, say
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--version"], ["-V"]):
        print(f"xumx {__version__}")
        return 0
    if argv and argv not in (["--help"], ["-h"]):
        say("", f"error: unknown arguments {' '.join(argv)!r}: give a command, e.g. "
                f"python -m xumx.test --help")
        return USAGE
    lines = [f"xumx {__version__}: X-UMX music source separation. The commands "
             f"(installed also as xumx-<command>):"]
    lines += [f"  python -m xumx.{name:<7} {what}" for name, what in COMMANDS]
    lines.append("Each takes --help and --version. Python API: from xumx import Separator")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
