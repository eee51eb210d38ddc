"""``python -m xumx``: what the package's commands are."""
import sys

COMMANDS = (("test", "separate audio files into stems (mpirun -n N: shared among N processes)"),
            ("train", "train X-UMX on MUSDB18 (mpirun -n N for several processes)"),
            ("eval", "score a model on MUSDB18 with museval (mpirun -n N: tracks shared)"),
            ("export", "write the network as an ONNX file"),
            ("synth", "write a small generated MUSDB-like data set"),
            ("demo", "the whole job offline on a CPU: data, training, separation, scores"))


def main() -> int:
    from . import __version__
    lines = [f"xumx {__version__}: X-UMX music source separation. The commands:"]
    lines += [f"  python -m xumx.{name:<7} {what}" for name, what in COMMANDS]
    lines.append("Each takes --help. Python API: from xumx import Separator")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
