"""``python -m xumx.eval``: separate MUSDB18 tracks and score them with museval (BSSEval v4).

Thin entry module: flags from :mod:`xumx.config`, work in :mod:`xumx.evaluation`, messages and
exit statuses from :mod:`xumx.cli`. ``mpirun -n N python -m xumx.eval ...`` shares the tracks
among N processes (:mod:`xumx.mpi`); rank 0 prints the table.
"""
import os
import sys

KEPT = "scored tracks are kept, run again to go on"


def main(argv=None) -> int:
    from .cli import run
    return run("eval", _evaluate, argv, KEPT)


def _evaluate(argv) -> int:
    from .parsing import parse
    from .evaluation import evaluate, format_table, sdr_comparison
    from .mpi import world
    cfg, chunking, load, separation = parse("eval", argv)
    results = evaluate(cfg, chunking, load, separation, progress=not cfg.quiet,
                       log=(lambda line: None) if cfg.quiet else None, processes=world())
    if results is None or cfg.quiet:   # None: a rank of mpirun other than 0 (rank 0 reports)
        return 0
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
