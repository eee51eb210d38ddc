"""The fast CPU kernels (xumx.kernels) against nnabla's own functions.

Each kernel's forward and gradients on small random inputs (every input's gradient, through a
random linear read-out of every output), then the whole training graph of a tiny model (the
same loss and parameter gradients, the same parameters after three SGD steps), and the switch
that selects them.
"""
import numpy as np
import pytest

import nnabla as nn
import nnabla.functions as F

from conftest import tiny_config
from xumx.training import kernels
from xumx.training.stft import graph_masked_istft, graph_spectrogram
from xumx.training.losses import freq_combination_loss, time_combination_loss
from xumx.training.model import OpenUnmixCrossNet

pytestmark = pytest.mark.nnabla   # every test compares with nnabla's own functions

RTOL = 2e-5  # float32 rounding of sums over a few hundred terms


def var(a, need_grad=True):
    return nn.Variable.from_numpy_array(np.asarray(a, np.float32), need_grad=need_grad)


def evaluate(build, inputs, on, seed=0):
    """Outputs and input gradients of ``build(*inputs)`` with the kernels on or off; the loss
    is a fixed random linear read-out of every output, so each output's gradient is exercised."""
    with kernels.forced(on):
        out = build(*inputs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    r = np.random.RandomState(seed)
    loss = F.add_n(*[F.sum(o * var(r.standard_normal(o.shape), False)) for o in outs]) \
        if len(outs) > 1 else F.sum(outs[0] * var(r.standard_normal(outs[0].shape), False))
    flat = [v for v in inputs_flat(inputs) if v.need_grad]
    for v in flat:
        v.grad.zero()
    loss.forward()
    loss.backward()
    return [o.d.copy() for o in outs], [v.g.copy() for v in flat]


def inputs_flat(inputs):
    for v in inputs:
        if isinstance(v, (list, tuple)):
            yield from inputs_flat(v)
        else:
            yield v


def assert_same(build, inputs, rtol=RTOL):
    """Kernels on and off agree: every output and every input gradient, relative to its largest
    value (or, for arrays that vanish analytically, such as a shift's gradient through batch
    normalisation, to a tenth of the largest value of all)."""
    (out_a, grad_a), (out_b, grad_b) = (evaluate(build, inputs, on) for on in (True, False))
    assert len(out_a) == len(out_b) and len(grad_a) == len(grad_b)
    scale = max(np.abs(b).max() for b in out_b + grad_b)
    for a, b in zip(out_a + grad_a, out_b + grad_b):
        assert a.shape == b.shape
        err, ref = np.abs(a - b).max(), max(np.abs(b).max(), 0.1 * scale)
        assert err <= rtol * ref, (err, ref)
    return out_a, grad_a


# ----------------------------------------------------------------- LSTM
def lstm_case(rng, nb_sources, nb_layers, directions, shared, n=7, b=3, i=5, h=4):
    """Random LSTM inputs (one shared or one per source) and per-source parameters."""
    xs = [var(rng.standard_normal((n, b, i))) for _ in range(1 if shared else nb_sources)]
    params = []
    for _ in range(nb_sources):
        p = [var(0.5 * rng.standard_normal((directions, 4, h, i + h)))]
        if nb_layers > 1:
            p.append(var(0.5 * rng.standard_normal((nb_layers - 1, directions, 4, h, directions * h + h))))
        p.append(var(0.5 * rng.standard_normal((nb_layers, directions, 4, h))))
        params.append(p)
    return xs, params


LSTM_CASES = [(s, layers, d) for s in (1, 2, 3, 4) for layers in (1, 2, 3) for d in (1, 2)]


@pytest.mark.parametrize("nb_sources,nb_layers,directions", LSTM_CASES)
def test_lstm_matches_nnabla(rng, nb_sources, nb_layers, directions):
    from xumx.training.kernels.lstm import sources_lstm
    n, b, h = 6, 2, 3
    shared = (nb_sources + nb_layers) % 2 == 0  # both kinds of input across the grid
    xs, params = lstm_case(rng, nb_sources, nb_layers, directions, shared, n=n, b=b, i=5, h=h)

    def build(xs, params):
        if kernels.enabled():
            return sources_lstm(xs, params, nb_layers, directions == 2, training=True)
        zero = var(np.zeros((nb_layers, directions, b, h)), False)
        names = ("weight_l0", "weight", "bias") if nb_layers > 1 else ("weight_l0", "bias")
        return [F.lstm(xs[0] if shared else xs[k], zero, zero, num_layers=nb_layers,
                       bidirectional=directions == 2, **dict(zip(names, p)))[0]
                for k, p in enumerate(params)]
    out, _ = assert_same(build, [xs, params])
    assert out[0].shape == (n, b, directions * h)


DROPOUT_CASES = [(1, 2, 2, True), (3, 3, 1, False), (4, 3, 2, True), (2, 2, 1, False)]


def layerwise_lstm_with_masks(xs, params, nb_layers, directions, dropout):
    """The reference: nnabla's one-layer ``F.lstm`` per source and layer, every layer's output
    but the last multiplied by a mask drawn from ``dropout`` (the kernel's order: one
    (S, N, B, D h) mask per layer) and scaled by 1 / (1 - rate)."""
    n, b = xs[0].shape[:2]
    h = params[0][0].shape[2]
    zero = var(np.zeros((1, directions, b, h)), False)
    scale = 1.0 / (1.0 - dropout.rate)
    layer_in = [xs[0] if len(xs) == 1 else xs[k] for k in range(len(params))]
    for layer in range(nb_layers):
        outs = []
        for k, p in enumerate(params):
            w = p[0] if layer == 0 else F.reshape(p[1][layer - 1:layer], p[1].shape[1:])
            outs.append(F.lstm(layer_in[k], zero, zero, w, bias=p[-1][layer:layer + 1],
                               bidirectional=directions == 2)[0])
        if layer < nb_layers - 1:
            mask = dropout.keep((len(params), n, b, directions * h))
            outs = [o * var(mask[k] * scale, False) for k, o in enumerate(outs)]
        layer_in = outs
    return layer_in


@pytest.mark.parametrize("nb_sources,nb_layers,directions,shared", DROPOUT_CASES)
def test_lstm_dropout_matches_nnabla_with_the_same_masks(rng, nb_sources, nb_layers, directions, shared):
    """Forward and every gradient of the kernel with dropout 0.4 equal nnabla's layer-by-layer
    LSTM with the masks drawn from a twin of the kernel's generator; the masks do change the
    outputs (the same LSTM without dropout differs)."""
    from xumx.training.kernels.lstm import sources_lstm
    from xumx.training.model import LstmDropout
    xs, params = lstm_case(rng, nb_sources, nb_layers, directions, shared)

    def build(xs, params):
        dropout = LstmDropout(0.4, key=(9, nb_layers))   # each path draws from its own twin
        if kernels.enabled():
            return sources_lstm(xs, params, nb_layers, directions == 2, training=True, dropout=dropout)
        return layerwise_lstm_with_masks(xs, params, nb_layers, directions, dropout)
    out, _ = assert_same(build, [xs, params])
    with kernels.forced(True):
        plain = sources_lstm(xs, params, nb_layers, directions == 2, training=True)
    F.sink(*plain).forward() if len(plain) > 1 else plain[0].forward()
    assert all(np.abs(a - p.d).max() > 1e-3 for a, p in zip(out, plain))


@pytest.mark.parametrize("workers", [2, 3])
def test_lstm_cells_in_parallel_threads_compute_what_one_thread_does(rng, monkeypatch, workers):
    """Large recurrences run their cells in groups on worker threads, and large layers their
    sources' input projections and weight and input gradients (forced here for a tiny one,
    with groups of unequal size): outputs and every gradient equal the one-thread run's,
    dropout included."""
    from xumx.training.kernels import base
    from xumx.training.kernels.lstm import sources_lstm
    from xumx.training.model import LstmDropout
    xs, params = lstm_case(rng, 4, 3, 2, True)

    def build(xs, params):
        return sources_lstm(xs, params, 3, True, training=True, dropout=LstmDropout(0.3, key=5))
    one = evaluate(build, [xs, params], True)
    monkeypatch.setattr(base, "PARALLEL_STEP", 0)
    monkeypatch.setattr(base, "PARALLEL_SOURCES", 0)
    monkeypatch.setattr(base, "cell_workers", lambda: workers)
    assert base.parallel_cells_worth(8, 1)
    calls = []   # (count, group) of every group run: cells (8) and sources (4)
    real = base.for_groups
    monkeypatch.setattr(base, "for_groups", lambda count, w, fn: real(
        count, w, lambda ks: (calls.append((count, ks)), fn(ks))))
    many = evaluate(build, [xs, params], True)
    for count in (8, 4):   # per layer, forward and backward: the cells', then the sources' groups
        groups = [g for c, g in calls if c == count]
        assert len(groups) == workers * 6 and \
            {g.stop - g.start for g in groups} == {count // workers, -(-count // workers)}
    for a, b in zip(one[0] + one[1], many[0] + many[1]):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())


def test_cell_threads_work_in_a_forked_child(monkeypatch):
    """A child forked after the worker threads started makes its own (the inherited pool has
    no threads: it would wait for ever)."""
    import multiprocessing
    from xumx.training.kernels import base
    monkeypatch.setattr(base, "PARALLEL_STEP", 0)
    monkeypatch.setattr(base, "cell_workers", lambda: 2)
    import time
    seen = []   # slow groups: both threads start, then both wait idle when the child forks
    base.for_cell_groups(4, 1, lambda ks: (time.sleep(0.2), seen.append(ks.stop - ks.start)))
    assert sorted(seen) == [2, 2]

    def child():
        out = []
        base.for_cell_groups(4, 1, lambda ks: out.append(ks))
        raise SystemExit(0 if len(out) == 2 else 3)
    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(30)
    alive = proc.is_alive()
    if alive:
        proc.kill()
    assert not alive and proc.exitcode == 0, proc.exitcode


def test_lstm_dropout_masks_keep_one_minus_the_rate_and_only_in_training(rng):
    """The kept share of a large mask is 1 - rate; a test-mode function (training False)
    applies none; rate 0 is the plain LSTM; the masks follow the generator's key."""
    from xumx.training.kernels.lstm import sources_lstm
    from xumx.training.model import LstmDropout
    keep = LstmDropout(0.4, key=3).keep((200, 500))
    assert keep.dtype == bool and abs(keep.mean() - 0.6) < 0.01
    assert not np.array_equal(keep, LstmDropout(0.4, key=4).keep((200, 500)))
    xs, params = lstm_case(rng, 2, 3, 2, True)

    def run(training, rate, key=1):
        with kernels.forced(True):
            out = sources_lstm(xs, params, 3, True, training=training, dropout=LstmDropout(rate, key))
        F.sink(*out).forward()
        return [o.d.copy() for o in out]
    plain = run(True, 0.0)
    for a, b in zip(run(False, 0.4), plain):
        np.testing.assert_array_equal(a, b)
    dropped = run(True, 0.4)
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(dropped, plain))
    for a, b in zip(run(True, 0.4), dropped):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(run(True, 0.4, key=2), dropped))


def test_training_graph_with_dropout_differs_and_validation_graph_does_not(rng):
    """build_loss_graph's dropout applies to training graphs only (kernels on)."""
    from xumx.training.trainer import build_loss_graph
    from seeded import random_arrays
    cfg = tiny_config(nb_layers=2)
    model = OpenUnmixCrossNet(cfg)
    model.set_parameters(random_arrays(cfg, seed=4))
    x, y = tiny_batch(cfg, rng)
    losses = {}
    with kernels.forced(True):
        for test in (True, False):
            for rate in (0.0, 0.4):
                g = build_loss_graph(model, 2, 1000, 10.0, test=test, dropout=rate)
                assert (g.dropout is not None) == (rate > 0 and not test)
                g.feed(x, y)
                g.loss.forward(clear_buffer=True)
                losses[test, rate] = float(g.loss.d)
    assert losses[True, 0.4] == losses[True, 0.0]
    assert losses[False, 0.4] != pytest.approx(losses[False, 0.0], rel=1e-4)


def test_lstm_without_a_training_forward_recomputes_its_states(rng):
    """A test-mode function keeps nothing; its backward still gives nnabla's gradients."""
    from xumx.training.kernels.lstm import sources_lstm
    x = var(rng.standard_normal((5, 2, 4)))
    w0, b = var(rng.standard_normal((2, 4, 3, 7))), var(rng.standard_normal((1, 2, 4, 3)))

    def build(x, w0, b):
        if kernels.enabled():
            return sources_lstm([x], [[w0, b]], 1, True, training=False)[0]
        zero = var(np.zeros((1, 2, 2, 3)), False)
        return F.lstm(x, zero, zero, w0, bias=b, bidirectional=True)[0]
    assert_same(build, [x, w0, b])


# ----------------------------------------------------------------- STFT / ISTFT
@pytest.mark.parametrize("channels,n_fft,n_hop,length", [(1, 64, 16, 333), (2, 256, 64, 1000),
                                                          (2, 32, 16, 100)])
def test_spectrogram_matches_nnabla_stft(rng, channels, n_fft, n_hop, length):
    x = var(rng.standard_normal((2, channels, length)))
    out, _ = assert_same(lambda x: graph_spectrogram(x, n_fft, n_hop), [x])
    assert out[0].shape == (1 + length // n_hop, 2, channels, n_fft // 2 + 1)
    mag = assert_same(lambda x: graph_spectrogram(x, n_fft, n_hop, with_complex=False), [x])[0][0]
    np.testing.assert_allclose(mag, out[0], rtol=1e-6)


@pytest.mark.parametrize("channels,mask_channels,n_fft,n_hop", [(1, 1, 64, 16), (2, 2, 256, 64),
                                                                 (2, 1, 32, 16), (2, 2, 64, 32)])
def test_masked_istft_matches_nnabla_istft(rng, channels, mask_channels, n_fft, n_hop):
    n, b, f = 9, 2, n_fft // 2 + 1
    mask = var(rng.rand(n, b, mask_channels, f))
    re, im = (var(rng.standard_normal((n, b, channels, f))) for _ in range(2))
    out, _ = assert_same(lambda m, r, i: graph_masked_istft(m, r, i, n_fft, n_hop), [mask, re, im])
    assert out[0].shape == (b, channels, (n - 1) * n_hop)


def test_istft_inverts_the_spectrogram(rng):
    """The pair is an identity on the signal away from the padded edges (a known answer)."""
    x = rng.standard_normal((1, 2, 2000)).astype(np.float32)
    with kernels.forced(True), nn.auto_forward():
        mag, re, im = graph_spectrogram(var(x, False), 256, 64)
        y = graph_masked_istft(var(np.ones(mag.shape), False), re, im, 256, 64)
    np.testing.assert_allclose(y.d, x[..., :y.shape[-1]], atol=1e-5)


# ----------------------------------------------------------------- losses
@pytest.mark.parametrize("nb_sources", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_freq_loss_matches_nnabla(rng, nb_sources, channels):
    shape = (5, 2, channels, 9)
    mix = var(rng.rand(*shape))
    masks = [var(rng.rand(*shape)) for _ in range(nb_sources)]
    if nb_sources % 2:  # targets stacked on the channel axis, or one per source
        targets = var(rng.rand(5, 2, nb_sources * channels, 9))
    else:
        targets = [var(rng.rand(*shape)) for _ in range(nb_sources)]
    assert_same(lambda m, ms, t: freq_combination_loss(m, ms, t), [mix, masks, targets])


@pytest.mark.parametrize("nb_sources", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_time_loss_matches_nnabla(rng, nb_sources, channels):
    b, t, length = 2, 700, 640  # mixture and targets longer than the estimates: cut
    y = rng.standard_normal((nb_sources, b, channels, t))
    mixture = var(y.sum(0) + 0.05 * rng.standard_normal((b, channels, t)))
    estimates = [var(y[k, :, :, :length] + 0.5 * rng.standard_normal((b, channels, length)))
                 for k in range(nb_sources)]
    if nb_sources % 2:
        targets = var(y.transpose(1, 0, 2, 3).reshape(b, nb_sources * channels, t))
    else:
        targets = [var(v) for v in y]
    assert_same(lambda m, e, t: time_combination_loss(m, e, t, trim=50), [mixture, estimates, targets],
                rtol=1e-4)  # the true noise of a single source is 5 % of the mixture: cancellation


def test_time_loss_with_a_silent_source_is_finite(rng):
    """A silent target (its true noise is then exactly the other sources) gives no NaN."""
    y = rng.standard_normal((3, 1, 2, 600)).astype(np.float32)
    y[1] = 0
    est = [var(v + 0.1 * rng.standard_normal(v.shape)) for v in y]
    with kernels.forced(True), nn.auto_forward():
        loss = time_combination_loss(var(y.sum(0), False), est, [var(v, False) for v in y])
    assert np.isfinite(loss.d) and 0 <= loss.d <= 2


# ----------------------------------------------------------------- dense layers
def dense_case(rng, sources, activation, pre, post, batch_stat, x_grad, shared, n=4, b=3, c=2,
               f=11, cut=7, n_out=6):
    """A layer of ``sources`` sources (``OpenUnmixCrossNet._fc_bn_layer`` with its parameters
    replaced by random ones): (build, inputs, the running statistics' variables and starts)."""
    xs = [var(rng.rand(n, b, c, f), x_grad) for _ in range(1 if shared else len(sources))]
    width = cut if pre else f
    out_cols = c * f if post else n_out
    layer = {}
    for s in sources:
        bn = [var(rng.standard_normal((1, 1, out_cols))), var(1 + 0.1 * rng.standard_normal((1, 1, out_cols))),
              var(rng.standard_normal((1, 1, out_cols)), False), var(1 + rng.rand(1, 1, out_cols), False)]
        layer[s] = dict(params=[var(rng.standard_normal((c * width, out_cols)))] + bn,
                        pre=[var(rng.standard_normal(cut)), var(1 + rng.rand(cut))] if pre else [],
                        post=[var(1 + rng.rand(f)), var(rng.standard_normal(f))] if post else [])
    stats = [v for s in sources for v in layer[s]["params"][3:]]
    running = [v.d.copy() for v in stats]
    model = OpenUnmixCrossNet(tiny_config(sources=tuple(sources)))
    model._fc_bn_parameters = lambda name, n_in, n_out: layer[name.split("_", 1)[1]]["params"]

    def build(xs, layer_vars):
        for v, r in zip(stats, running):
            v.d = r  # each side starts from the same running statistics
        return model._fc_bn_layer(xs, out_cols, "fc", not batch_stat, activation,
                                  pre=(lambda s: tuple(layer[s]["pre"])) if pre else None,
                                  post=(lambda s: tuple(layer[s]["post"])) if post else None,
                                  out_shape=(n, b, c, f) if post else None)
    layer_vars = [layer[s][k] for s in sources for k in ("params", "pre", "post")]
    return build, [xs, layer_vars], stats, running


@pytest.mark.parametrize("activation,pre,post,batch_stat,x_grad,shared", [
    ("tanh", True, False, True, True, True), ("relu", False, False, True, True, True),
    ("relu", False, True, True, True, False), (None, False, False, True, True, False),
    ("tanh", True, False, False, True, True), ("relu", False, True, False, True, False),
    ("tanh", True, False, True, False, True), ("tanh", True, False, False, False, True),
    ("relu", False, False, True, True, False)])
def test_affine_batch_norm_matches_nnabla(rng, activation, pre, post, batch_stat, x_grad, shared):
    """A dense layer of three sources (affine + batch norm with its chains, one function)
    against nnabla's functions, with one input shared by the sources (its gradient the sum of
    theirs) or one each, also with an input that needs no gradient (fc1 on the mixture: the
    pre-scaling's gradients then come from shifted^T da, without the input's gradient)."""
    build, inputs, stats, running = dense_case(rng, ("a", "b", "c"), activation, pre, post, batch_stat,
                                               x_grad, shared)
    moved = []
    for on in (True, False):
        evaluate(build, inputs, on)
        moved.append([v.d.copy() for v in stats])
    for a, b_ in zip(*moved):  # the running statistics move the same way
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)
    if batch_stat:
        assert not np.allclose(moved[0][0], running[0])
    assert_same(build, inputs, rtol=5e-5)


@pytest.mark.parametrize("workers,shared", [(2, True), (3, False), (2, False)])
def test_dense_layer_sources_on_threads_compute_what_one_thread_does(rng, monkeypatch, workers, shared):
    """Large layers run their sources in groups on worker threads (forced here for a tiny
    one, groups of unequal size with 3 threads for 4 sources): outputs, every gradient and the
    running statistics equal the one-thread run's, for each chain."""
    from xumx.training.kernels import base
    sources = ("a", "b", "c", "d")
    for kw in [dict(activation="tanh", pre=True, post=False, x_grad=shared),
               dict(activation="relu", pre=False, post=True, x_grad=True),
               dict(activation="relu", pre=False, post=False, x_grad=True)]:
        build, inputs, stats, _ = dense_case(rng, sources, batch_stat=True, shared=shared, **kw)

        def run():
            out, grads = evaluate(build, inputs, True)
            return out + grads + [v.d.copy() for v in stats]
        monkeypatch.setattr(base, "cell_workers", lambda: 1)
        one = run()
        groups = []
        real = base.for_groups
        monkeypatch.setattr(base, "PARALLEL_SOURCES", 0)
        monkeypatch.setattr(base, "cell_workers", lambda: workers)
        monkeypatch.setattr(base, "for_groups", lambda count, w, fn: real(
            count, w, lambda ss: (groups.append(ss), fn(ss))))
        many = run()
        monkeypatch.undo()
        assert len(groups) == 2 * workers and {g.stop - g.start for g in groups} == \
            {len(sources) // workers, -(-len(sources) // workers)}
        for a, b_ in zip(one, many):
            np.testing.assert_allclose(b_, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())


def parts_cases(rng):
    """(name, losses.CHUNK, build, inputs) of every kernel that splits independent parts over
    threads (base.for_parts): the STFT's rows, the ISTFT's batch items (a mask per channel or
    one for both), the losses' blocks of frames and of samples (CHUNK small: several blocks)."""
    n, b, f = 9, 3, 33
    x = var(rng.standard_normal((b, 2, 300)))
    re, im = (var(rng.standard_normal((n, b, 2, f))) for _ in range(2))
    masks = {c: var(rng.rand(n, b, c, f)) for c in (1, 2)}
    nb_sources, t, length = 3, 700, 640
    y = rng.standard_normal((nb_sources, b, 2, t))
    mixture = var(y.sum(0) + 0.05 * rng.standard_normal((b, 2, t)))
    estimates = [var(y[k, :, :, :length] + 0.5 * rng.standard_normal((b, 2, length)))
                 for k in range(nb_sources)]
    spec = (5, b, 2, 9)
    mix_spec = var(rng.rand(*spec))
    spec_masks = [var(rng.rand(*spec)) for _ in range(nb_sources)]
    return [
        ("stft", 1 << 16, lambda x: graph_spectrogram(x, 64, 16), [x]),
        ("istft", 1 << 16, lambda m, r, i: graph_masked_istft(m, r, i, 64, 32), [masks[2], re, im]),
        ("istft, one mask", 1 << 16, lambda m, r, i: graph_masked_istft(m, r, i, 64, 32), [masks[1], re, im]),
        ("freq loss", 64, lambda m, ms, t: freq_combination_loss(m, ms, t),
         [mix_spec, spec_masks, [var(rng.rand(*spec)) for _ in range(nb_sources)]]),
        ("time loss", 1024, lambda m, e, t: time_combination_loss(m, e, t, trim=50),
         [mixture, estimates, var(y.transpose(1, 0, 2, 3).reshape(b, nb_sources * 2, t))]),
    ]


@pytest.mark.parametrize("workers", [2, 3])
def test_independent_parts_on_threads_compute_what_one_thread_does(rng, monkeypatch, workers):
    """Split over 2 or 3 threads, the STFT, the ISTFT and the losses give exactly what one
    thread gives, outputs and every input gradient: each part is computed as it is alone, and
    the losses' block sums are added in block order."""
    from xumx.training.kernels import base, losses
    for name, chunk, build, inputs in parts_cases(rng):
        monkeypatch.setattr(losses, "CHUNK", chunk)
        monkeypatch.setattr(base, "cell_workers", lambda: 1)
        one = evaluate(build, inputs, True)
        groups = []   # (parts, group) of every group run
        real = base.for_groups
        monkeypatch.setattr(base, "PARALLEL_SOURCES", 0)
        monkeypatch.setattr(base, "cell_workers", lambda: workers)
        monkeypatch.setattr(base, "for_groups", lambda count, w, fn: real(
            count, w, lambda part: (groups.append((count, part)), fn(part))))
        many = evaluate(build, inputs, True)
        monkeypatch.undo()
        # forward and backward each split into min(workers, parts) groups, none empty
        assert len(groups) == 2 * min(workers, groups[0][0]) and groups[0][0] > 1, name
        assert all(g.stop > g.start for _, g in groups), name
        for a, b in zip(one[0] + one[1], many[0] + many[1]):
            np.testing.assert_array_equal(b, a, err_msg=name)


# ----------------------------------------------------------------- the whole training graph
def training_step_gradients(cfg, on, arrays, x, y, test=False):
    from xumx.training.trainer import build_loss_graph
    model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(0))
    model.set_parameters(arrays)
    with kernels.forced(on):
        graph = build_loss_graph(model, x.shape[0], x.shape[-1], 10.0, test=test)
    params = model.get_parameters(grad_only=True)
    graph.feed(x, y)
    for p in params.values():
        p.grad.zero()
    graph.loss.forward(clear_no_need_grad=True)
    graph.loss.backward(clear_buffer=True)
    return model, graph, params


def tiny_batch(cfg, rng, batch=2, length=1000):
    y = (0.1 * rng.standard_normal((batch, len(cfg.sources) * cfg.nb_channels, length))).astype(np.float32)
    x = y.reshape(batch, len(cfg.sources), cfg.nb_channels, length).sum(1)
    return x, y


@pytest.mark.parametrize("kw", [dict(nb_layers=2), dict(nb_channels=1, unidirectional=True,
                                                        sources=("a", "b", "c"), nb_layers=1)])
def test_training_graph_same_loss_and_gradients(rng, kw):
    from seeded import random_arrays
    cfg = tiny_config(**kw)
    arrays = random_arrays(cfg, seed=2)
    x, y = tiny_batch(cfg, rng)
    runs = [training_step_gradients(cfg, on, arrays, x, y) for on in (True, False)]
    (_, g_fast, p_fast), (_, g_ref, p_ref) = runs
    assert float(g_fast.loss.d) == pytest.approx(float(g_ref.loss.d), rel=1e-5)
    total = np.sqrt(sum(np.sum(p.g.astype(np.float64) ** 2) for p in p_ref.values()))
    for name, p in p_ref.items():
        a, b = p_fast[name].g, p.g
        # input_mean's gradient vanishes analytically (batch norm removes a shift): there both
        # sides are rounding noise, bounded against the norm of all gradients
        assert np.linalg.norm(a - b) <= max(1e-3 * np.linalg.norm(b), 1e-7 * total), name


def test_validation_graph_same_loss(rng):
    from xumx.training.trainer import build_loss_graph
    from seeded import random_arrays
    cfg = tiny_config(nb_layers=2)
    model = OpenUnmixCrossNet(cfg)
    model.set_parameters(random_arrays(cfg, seed=3))
    x, y = tiny_batch(cfg, rng, batch=1, length=900)
    losses = []
    for on in (True, False):
        with kernels.forced(on):
            g = build_loss_graph(model, 1, 900, 10.0, test=True)
        g.feed(x, y)
        g.loss.forward(clear_buffer=True)
        losses.append(float(g.loss.d))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def run_steps(graph, solver, batches, decay=0.0):
    """One training step of ``graph`` per (mixture, targets) batch, as the trainer's."""
    for x, y in batches:
        graph.feed(x, y)
        solver.zero_grad()
        graph.loss.forward(clear_no_need_grad=True)
        graph.loss.backward(clear_buffer=True)
        if decay:
            solver.weight_decay(decay)
        solver.update()


def test_three_sgd_steps_end_at_the_same_parameters(rng):
    import nnabla.solvers as S
    from xumx.training.trainer import build_loss_graph
    cfg = tiny_config(nb_layers=2)
    batches = [tiny_batch(cfg, rng) for _ in range(3)]
    final = []
    for on in (True, False):
        model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(5))
        with kernels.forced(on):
            graph = build_loss_graph(model, 2, 1000, 10.0, test=False)
        start = {k: v.d.copy() for k, v in model.get_parameters().items()}
        solver = S.Sgd(0.05)
        solver.set_parameters(model.get_parameters(grad_only=True))
        run_steps(graph, solver, batches)
        final.append({k: v.d.copy() for k, v in model.get_parameters().items()})
    moved = 0
    for name, ref in final[1].items():  # trainable parameters and batch-norm running statistics
        np.testing.assert_allclose(final[0][name], ref, rtol=1e-4, atol=1e-6, err_msg=name)
        moved += not np.allclose(ref, start[name], rtol=1e-3, atol=0)
    assert moved > len(final[1]) // 2


def test_both_paths_create_the_same_parameters():
    """Same names, order, shapes and random initial values with and without the kernels."""
    cfg = tiny_config()
    made = []
    for on in (True, False):
        model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(9))
        with kernels.forced(on):
            model.masks(nn.Variable((4, 1, 2, cfg.nb_bins)), test=False)
        made.append(model.get_parameters())
    assert list(made[0]) == list(made[1])
    for name in made[0]:
        np.testing.assert_array_equal(made[0][name].d, made[1][name].d, err_msg=name)


def test_parameters_are_those_of_nnabla_parametric_functions():
    """The explicit parameter creation draws what PF.lstm / PF.affine / PF.batch_normalization
    drew before (same random stream), so seeds give the models they gave."""
    import nnabla.parametric_functions as PF
    from nnabla.initializer import UniformInitializer, calc_uniform_lim_glorot
    cfg = tiny_config(nb_layers=3)
    model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(4))
    with model.scope():
        ours = model._fc_bn_parameters("fc1_bass", 30, cfg.hidden_size) + \
            model._lstm_parameters("bass", cfg.hidden_size)
    rng, reference = np.random.RandomState(4), {}
    with nn.parameter_scope("", reference):
        y = PF.affine(nn.Variable((2, 1, 30)), cfg.hidden_size, base_axis=2, with_bias=False,
                      w_init=UniformInitializer(calc_uniform_lim_glorot(30, cfg.hidden_size), rng=rng),
                      name="fc1_bass")
        PF.batch_normalization(y, axes=[2], name="fc1_bass")
        state = nn.Variable((cfg.nb_layers, 2, 1, cfg.lstm_hidden))
        PF.lstm(nn.Variable((3, 1, cfg.hidden_size)), state, state, num_layers=cfg.nb_layers,
                bidirectional=True, rng=rng, name="lstm_bass")
        ref = list(nn.get_parameters(grad_only=False).values())
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a.d, b.d)


# ----------------------------------------------------------------- the switch
def function_names(v):
    names = set()
    v.visit(lambda f: names.add(f.info.type_name))
    return names


def test_switch_selects_kernels_on_cpu_only(monkeypatch):
    from nnabla.ext_utils import get_extension_context
    cpu = get_extension_context("cpu")
    gpu = nn.Context(backend=["cudnn:float", "cuda:float", "cpu:float"], array_class="CudaCachedArray")
    assert kernels.enabled(cpu) and not kernels.enabled(gpu)
    monkeypatch.setenv(kernels.ENV, "nnabla")
    assert not kernels.enabled(cpu)
    monkeypatch.delenv(kernels.ENV)
    with kernels.forced(False):
        assert not kernels.enabled(cpu)
    assert kernels.enabled(cpu)


def test_training_graph_uses_the_kernels_on_cpu():
    from xumx.training.trainer import build_loss_graph
    cfg = tiny_config(nb_layers=1)
    model = OpenUnmixCrossNet(cfg)
    fast = function_names(build_loss_graph(model, 1, 800, 10.0, test=False).loss)
    assert {"SourcesLSTM", "Spectrogram", "MaskedIstft", "AffineBatchNorm",
            "FreqCombinationLoss", "TimeCombinationLoss"} <= fast
    assert not fast & {"LSTM", "STFT", "ISTFT", "Affine", "BatchNormalization"}
    with kernels.forced(False):
        ref = function_names(build_loss_graph(model, 1, 800, 10.0, test=False).loss)
    assert {"LSTM", "STFT", "ISTFT", "Affine", "BatchNormalization"} <= ref
    assert not ref & {"SourcesLSTM", "Spectrogram", "MaskedIstft"}


def test_too_short_inputs_are_one_clear_error():
    with kernels.forced(True):
        with pytest.raises(ValueError, match="too few"):
            time_combination_loss(var(np.zeros((1, 1, 300))), [var(np.zeros((1, 1, 300)))],
                                  [var(np.zeros((1, 1, 300)))], trim=150)
        with pytest.raises(ValueError, match="more than n_fft"):
            graph_spectrogram(var(np.zeros((1, 1, 100))), 256, 64)
        with pytest.raises(ValueError, match="multiple of n_hop"):
            graph_spectrogram(var(np.zeros((1, 1, 1000))), 256, 96)


def test_time_loss_gradient_matches_finite_differences(rng):
    """An independent check of the Gram-matrix backward: the directional derivative of the
    fused time-domain loss along a random direction, by central differences."""
    y = rng.standard_normal((3, 1, 2, 400))
    est = [var(v + 0.3 * rng.standard_normal(v.shape)) for v in y]
    mix, tgt = var(y.sum(0), False), [var(v, False) for v in y]
    with kernels.forced(True):
        loss = time_combination_loss(mix, est, tgt, trim=20)
    loss.forward()
    for e in est:
        e.grad.zero()
    loss.backward()
    direction = [rng.standard_normal(e.shape) for e in est]
    analytic = sum(np.sum(e.g * d) for e, d in zip(est, direction))
    base = [e.d.copy() for e in est]

    def at(step):
        for e, b, d in zip(est, base, direction):
            e.d = b + step * d
        loss.forward()
        return float(loss.d)
    h = 1e-2
    numeric = (at(h) - at(-h)) / (2 * h)
    assert abs(analytic) > 1e-3 and numeric == pytest.approx(analytic, rel=2e-2)


def test_column_sums_are_the_float64_sums_to_float32_rounding(rng):
    from xumx.training.kernels.base import SUM_ROWS, column_sums
    a = rng.standard_normal((2 * SUM_ROWS + 5, 7)).astype(np.float32)
    b = rng.standard_normal(a.shape).astype(np.float32)
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(column_sums(a), wide_a.sum(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(column_sums(a, b), (wide_a * wide_b).sum(axis=0), rtol=1e-5, atol=1e-5)
    assert column_sums(a).dtype == np.float64
