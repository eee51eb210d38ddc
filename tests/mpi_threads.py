"""Run under ``mpirun -n 2`` by tests/test_distributed.py: each rank starts its communicator as
training does, then prints one JSON line with the threads it set and what its libraries report."""
import json

from threadpoolctl import threadpool_info

from xumx import threads
from xumx.engine import default_threads
from xumx.threads import physical_cores
from xumx.training.distributed import make_communicator
from xumx.training.kernels.base import fft_workers


def main():
    comm, _ = make_communicator("cpu")
    import xumx.training.kernels.lstm  # noqa: F401  (as training: scipy's own BLAS, loaded after)
    blas = sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
    print(json.dumps({"rank": comm.rank, "local_rank": comm.local_rank, "n_procs": comm.n_procs,
                      "applied": threads.APPLIED, "cores": physical_cores(), "blas": blas,
                      "fft": fft_workers(), "onnxruntime": default_threads()}), flush=True)


if __name__ == "__main__":
    main()
