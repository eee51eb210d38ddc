"""``python -m xumx.train``: train X-UMX on MUSDB18 (or any musdb-layout dataset), on one machine
or with ``mpirun -n N``. Flags and recipes: :mod:`xumx.config` (``--config FILE.yaml``); the
work: :mod:`xumx.training.trainer`; messages and exit statuses: :mod:`xumx.cli`."""
import sys


def main(argv=None) -> int:
    from .cli import run
    kept = {"output": None}
    return run("train", lambda a: _train(a, kept), argv, lambda: kept_note(kept["output"]))


def kept_note(output) -> str:
    """What an interrupted run leaves: a checkpoint to resume, or nothing to resume yet."""
    from .recipes import resumable
    if output and resumable(output):
        return f"resume with --resume {output}"
    return "no epoch finished, so there is nothing to resume"


def _train(argv, kept: dict) -> int:
    from .training.backend import require_nnabla
    from .parsing import parse
    model_cfg, train_cfg = parse("train", argv)
    require_nnabla("training")
    from .heap import reuse_large_blocks
    from .training.trainer import train
    reuse_large_blocks()
    kept["output"] = train_cfg.output
    result = train(model_cfg, train_cfg, progress=not train_cfg.quiet)
    if result["rank"] == 0 and not train_cfg.quiet:
        print(f"best model: {result['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
