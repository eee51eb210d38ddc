"""``python -m xumx.eval``: separate MUSDB18 tracks and score them with museval (BSSEval v4).

Thin entry module: flags from :func:`xumx.config.build_parser`, work in :mod:`xumx.evaluation`.
"""
import os
import sys

from .config import build_parser, eval_config_from_args, separation_config_from_args


def main(argv=None) -> int:
    args = build_parser("eval").parse_args(argv)
    from ._nnabla import NnablaMissing
    from .audio import AudioError
    from .evaluation import EvalError, evaluate, format_table, sdr_comparison
    from .interrupt import exit_status, sigterm_as_interrupt
    try:
        cfg = eval_config_from_args(args)
        with sigterm_as_interrupt():
            results = evaluate(cfg, separation_config_from_args(args))
    except (EvalError, ValueError) as e:
        print(f"xumx.eval: error: {e}", file=sys.stderr)
        return 2
    except (NnablaMissing, OSError, AudioError) as e:   # no nnabla; outputs that cannot be written
        print(f"xumx.eval: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("xumx.eval: interrupted (scored tracks are kept; run again to go on)", file=sys.stderr)
        return exit_status(e)
    print(format_table(results.tables, results.nb_tracks))
    if len(results.tables) > 1:
        print()
        print(sdr_comparison(results.tables))
    print(f"\nscores: {os.path.join(cfg.eval_dir, 'scores.csv')}, "
          f"{os.path.join(cfg.eval_dir, 'scores.pandas')}, plot: {os.path.join(cfg.eval_dir, 'sdr.png')}")
    if cfg.out_dir:
        print(f"estimates: {os.path.join(cfg.out_dir, cfg.subset)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
