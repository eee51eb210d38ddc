"""Run under ``mpirun -n N`` by tests/test_mpi.py: ``python mpi_record.py COMMAND OUT ARGS...``
runs ``python -m xumx.COMMAND ARGS...`` (eval or test) in this rank, recording the name of each
track (eval) or input (test) this rank works on, one a line, in ``OUT/rank<r>.txt``.

With ``STOP_AFTER=K`` in the environment, rank 1 sends itself SIGTERM once its K-th item is done
(an interrupted rank, at a known point of the run): for test, once the K-th input's stems are
committed (stemfiles._Song.finish)."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def recorder(out: str, rank: int, name_of):
    """A wrapper of a function that records ``name_of(*args)`` in this rank's file before
    calling it."""
    def wrap(fn):
        def recorded(*args, **kw):
            with open(os.path.join(out, f"rank{rank}.txt"), "a") as f:
                f.write(name_of(*args) + "\n")
            return fn(*args, **kw)
        return recorded
    return wrap


def stopper(rank: int):
    """A wrapper of a function (an item's end) that, after the STOP_AFTER-th call of rank 1
    that returned, interrupts this process."""
    stop_after = int(os.environ.get("STOP_AFTER", "0"))
    done = []

    def wrap(fn):
        def counted(*args, **kw):
            result = fn(*args, **kw)
            done.append(1)
            if rank == 1 and len(done) == stop_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return result
        return counted
    return wrap


def main(command: str, out: str, argv):
    from xumx.mpi import launcher_rank
    rank = launcher_rank()
    if command == "eval":
        from xumx import eval as entry
        from xumx.evaluation import run
        run.process_track = stopper(rank)(recorder(
            out, rank, lambda cfg, sep, track, *a: track.name)(run.process_track))
    else:   # an input's start and its end: the per-input seams of stemfiles.separate_files
        from xumx import stemfiles, test as entry
        song = stemfiles._Song
        song.open = recorder(out, rank, lambda self: self.path)(song.open)
        song.finish = stopper(rank)(song.finish)
    return entry.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
