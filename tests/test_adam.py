"""The CPU's fused Adam (xumx.training.adam) against nnabla's own Adam: the same parameters,
gradients (after weight decay) and solver states, bit for bit, and checkpoints that resume it."""
import numpy as np
import pytest

import nnabla as nn
import nnabla.solvers as S

from conftest import tiny_config
from xumx.training import adam, kernels
from xumx.training.model import OpenUnmixCrossNet
from xumx.training.trainer import build_loss_graph, restore_solver, solver_arrays

pytestmark = pytest.mark.nnabla   # compares with nnabla's solver

#: Sizes around the block size (several blocks, a partial one) and small ones.
SHAPES = [(3,), (1, 1, 7), (2, adam.BLOCK // 2 + 5), (adam.BLOCK + 1,)]


def parameters(seed=0):
    r = np.random.RandomState(seed)
    return {f"p{i}": nn.Variable.from_numpy_array(r.randn(*s).astype(np.float32), need_grad=True)
            for i, s in enumerate(SHAPES)}


def steps(solvers, params, count, seed=1, first=0):
    """``count`` steps of every (solver, parameters) pair on the same random gradients (scales
    from 1e-4 to 10), weight decay every other step (twice in a row on one), a learning-rate
    change after the third."""
    for step in range(first, first + count):
        r = np.random.RandomState((seed, step))
        grads = {k: (r.randn(*v.shape) * 10 ** r.uniform(-4, 1)).astype(np.float32)
                 for k, v in params[0].items()}
        for solver, ps in zip(solvers, params):
            for k, v in ps.items():
                v.g = grads[k]
            if step % 2:
                solver.weight_decay(1e-2)
            if step == 3:
                solver.weight_decay(0.5)
            solver.update()
            if step == 2:
                solver.set_learning_rate(3e-4)


def assert_same(a, b, solver_a, solver_b):
    for k in a:
        assert np.array_equal(a[k].d, b[k].d), k
        assert np.array_equal(a[k].g, b[k].g), k
    sa, sb = solver_a.get_states(), solver_b.get_states()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].t == sb[k].t, k
        for key in ("mean", "var"):
            assert np.array_equal(sa[k].pstate[key].d, sb[k].pstate[key].d), (k, key)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_adam_is_nnabla_adam_bit_for_bit(threads):
    ref, got = parameters(), parameters()
    theirs, ours = S.Adam(1e-3), adam.FusedAdam(1e-3, threads=threads)
    theirs.set_parameters(ref)
    ours.set_parameters(got)
    start = {k: v.d.copy() for k, v in got.items()}
    steps([theirs, ours], [ref, got], 6)
    assert_same(ref, got, theirs, ours)
    assert all(not np.array_equal(start[k], got[k].d) for k in got)   # it moved
    assert ours.learning_rate() == pytest.approx(3e-4)


def test_a_resumed_fused_adam_continues_bit_for_bit():
    """Its states through the trainer's checkpoint arrays into a fresh solver: the run goes on
    as if uninterrupted (and nnabla's Adam reads the same states)."""
    whole, part = parameters(), parameters()
    solver = adam.FusedAdam(1e-3)
    solver.set_parameters(whole)
    steps([solver], [whole], 6)

    first = adam.FusedAdam(1e-3)
    first.set_parameters(part)
    steps([first], [part], 3)
    saved = solver_arrays(first)
    assert saved["p0/t"] == 3
    params = {k: v.d.copy() for k, v in part.items()}
    resumed_params = parameters(seed=9)   # other values, overwritten as a resume does
    for k, v in resumed_params.items():
        v.d = params[k]
    resumed = adam.FusedAdam(1e-3)
    resumed.set_parameters(resumed_params)
    restore_solver(resumed, saved)
    resumed.set_learning_rate(3e-4)   # what the scheduler's state gives back after step 2
    nnabla_side = parameters(seed=9)
    for k, v in nnabla_side.items():
        v.d = params[k]
    theirs = S.Adam(3e-4)
    theirs.set_parameters(nnabla_side)
    restore_solver(theirs, saved)
    steps([resumed, theirs], [resumed_params, nnabla_side], 3, first=3)
    assert_same(whole, resumed_params, solver, resumed)
    assert_same(nnabla_side, resumed_params, theirs, resumed)


def test_training_steps_with_either_adam_end_at_the_same_parameters(rng):
    """The loss graph of a tiny model computes every parameter's gradient, so the fused update
    (which updates every parameter) is nnabla's: two steps, bit for bit."""
    cfg = tiny_config(nb_layers=2)
    from test_kernels import run_steps, tiny_batch
    batches = [tiny_batch(cfg, rng) for _ in range(2)]
    final = []
    for make in (S.Adam, adam.FusedAdam):
        model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(5))
        graph = build_loss_graph(model, 2, 1000, 10.0, test=False)
        solver = make(0.01)
        solver.set_parameters(model.get_parameters(grad_only=True))
        run_steps(graph, solver, batches, decay=1e-3)
        final.append(({k: v.d.copy() for k, v in model.get_parameters().items()},
                      solver_arrays(solver)))
    for k, ref in final[0][0].items():
        assert np.array_equal(final[1][0][k], ref), k
    assert final[0][1].keys() == final[1][1].keys()
    for k, ref in final[0][1].items():
        assert np.array_equal(final[1][1][k], ref), k


def test_the_solver_follows_the_kernels_switch():
    assert isinstance(adam.make_solver(1e-3), adam.FusedAdam)
    with kernels.forced(False):
        solver = adam.make_solver(1e-3)
    assert not isinstance(solver, adam.FusedAdam) and solver.name == "Adam"
