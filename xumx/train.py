"""``python -m xumx.train``: train X-UMX on MUSDB18 (or any musdb-layout dataset), on one machine
or with ``mpirun -n N``. Flags: ``xumx.config.build_parser('train')``; the work: ``xumx.training``."""
import sys


def main(argv=None) -> int:
    from .config import build_parser, train_configs_from_args
    from ._nnabla import NnablaMissing, require_nnabla
    args = build_parser("train").parse_args(argv)
    try:
        model_cfg, train_cfg = train_configs_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        require_nnabla("xumx.train")
    except NnablaMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from .data import DataError
    from .distributed import DistributedError
    from .interrupt import exit_status, sigterm_as_interrupt
    from .training import train
    try:
        with sigterm_as_interrupt():
            result = train(model_cfg, train_cfg)
    except (DataError, DistributedError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("interrupted: resume with --model " + train_cfg.output, file=sys.stderr)
        return exit_status(e)
    if result["rank"] == 0:
        print(f"best model: {result['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
