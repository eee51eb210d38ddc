"""``python -m xumx.test``: separate audio files into stems.

    python -m xumx.test song.mp3 other.flac --model x-umx.h5 --out-dir out/

writes ``out/song/{bass,drums,vocals,other}.wav`` and ``out/other/...`` (``--inputs`` may
name the files too; folders, with ``--recursive`` their sub-folders, and quoted wildcards
are expanded; ``-`` is standard input: :mod:`xumx.stemfiles`). Every input is checked
(:func:`xumx.stemfiles.check_input`) before the model is loaded or downloaded. Without
``--model`` the published weights are downloaded to the user cache (:mod:`xumx.pretrained`).
The work is :func:`xumx.stemfiles.separate_files`' (each input as
:meth:`xumx.Separator.separate_file` does it, its result or its error given before the next
input is opened; with ``--batch-frames`` the chunks of several inputs share the network's
runs). ``mpirun -n N python -m xumx.test ...``
shares the inputs among N processes (:mod:`xumx.mpi`), each input separated by one of them;
rank 0 prints the one summary (the exit status is every rank's: 1 if any input failed).

This module also re-exports the function API (``separate``, ``separate_args_dict``) that
Spleeter Web imports from ``xumx.test``. Importing it parses nothing and runs nothing.
"""
import contextlib
import dataclasses
import sys

from .api import separate, separate_args_dict  # noqa: F401  (public API kept here)

__all__ = ["main", "separate", "separate_args_dict"]
KEPT = "stems already finished are kept, no partial stem was written"


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0: every input separated; see
    :mod:`xumx.cli` for the others)."""
    from .cli import run
    left: list = []   # the inputs not separated yet, for the line of an interruption
    return run("test", lambda a: _separate_files(a, left), argv, lambda: kept_note(left))


def kept_note(left) -> str:
    """What an interrupted run leaves, naming the inputs not separated (the first few)."""
    if not left:
        return KEPT
    shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    return f"{KEPT}; not separated: {shown}"


def _separate_files(argv, left: list) -> int:
    from . import interrupt
    from .cli import FAILED, OK, failure, say
    from .errors import AudioError, ConfigError, XumxError, one_line
    from .mpi import world
    from .parsing import parse
    from .separator import Separator
    from .heap import limit_arenas
    from .stemfiles import STDIN, check_input, expand_inputs, output_folders, separate_files
    output, chunking, load, separation = parse("test", argv)
    processes = world()
    output = dataclasses.replace(output, inputs=expand_inputs(output.inputs, output.recursive))
    if output.inputs.count(STDIN) > 1:
        raise ConfigError(f"{STDIN} (standard input) can be one input only")
    folders = output_folders(output.inputs, output.out_dir)   # of every input, on every rank
    failed = 0

    def fails(path, e):
        nonlocal failed
        interrupt.check()   # an error that a signal caused is the signal's
        line = failure(e, "test")
        say("test", f"error: {line if isinstance(e, AudioError) else f'{path}: {line}'}")
        failed += 1

    jobs = []
    for path, folder in processes.share(list(zip(output.inputs, folders))):
        try:   # before the model is loaded (or downloaded): no such file, a folder...
            check_input(path)
        except (XumxError, OSError) as e:
            fails(path, e)
            continue
        jobs.append((path, folder))
    left[:] = [path for path, _ in jobs]
    if sum(processes.allgather(len(jobs))):   # every rank loads when any has work (collective)
        limit_arenas()
        separator = processes.rank0_first(lambda: Separator.load(   # one download, then the cache
            load.model, load.device, umx=load.umx or None, sample_rate=load.sample_rate,
            quiet=output.quiet, **dataclasses.asdict(separation), **dataclasses.asdict(chunking)))
    with contextlib.closing(separate_files(separator, jobs, output) if jobs else
                            (_ for _ in ())) as results:
        for path, result in results:
            left.remove(path)
            if isinstance(result, (XumxError, OSError, MemoryError)):   # this input fails,
                fails(path, result)                                      # the others go on
            elif isinstance(result, BaseException):
                raise result
            elif not output.quiet:
                print(one_line(result.summary()), flush=True)
    failed = sum(processes.allgather(failed))
    if processes.rank == 0 and failed and len(output.inputs) > 1:
        say("test", f"error: {failed} of {len(output.inputs)} inputs failed")
    elif processes.rank == 0 and processes.n_procs > 1 and not output.quiet:
        print(f"{len(output.inputs)} input(s) separated by {processes.n_procs} processes",
              flush=True)
    return FAILED if failed else OK


if __name__ == "__main__":
    sys.exit(main())
