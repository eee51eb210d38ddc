"""The X-UMX losses against numpy versions of the same formulas, and on known answers."""
import itertools

import numpy as np
import pytest

from xumx.training.losses import (freq_combination_loss, multi_domain_loss, source_combinations,
                         time_combination_loss, weighted_sdr_loss)


# ----------------------------------------------------------------- numpy references
def np_freq(mix, masks, targets):
    n = len(masks)
    terms = []
    for k in range(1, n):
        for c in itertools.combinations(range(n), k):
            est = sum(masks[i] for i in c) * mix
            terms.append(np.mean((est - sum(targets[i] for i in c)) ** 2))
    return np.mean(terms)


def np_wsdr(mix, est, tgt, trim, eps=1e-10):
    if trim:
        mix, est, tgt = mix[:, trim:-trim], est[:, trim:-trim], tgt[:, trim:-trim]

    def cos(a, b):
        return (a * b).sum(1) / (np.sqrt(eps + (a ** 2).sum(1)) * np.sqrt(eps + (b ** 2).sum(1)) + eps)

    n, n_hat = mix - tgt, mix - est
    alpha = (tgt ** 2).sum(1) / ((tgt ** 2).sum(1) + (n ** 2).sum(1) + eps)
    return 1 + np.mean(-alpha * cos(est, tgt) - (1 - alpha) * cos(n_hat, n))


def np_time(mix, ests, tgts, trim):
    n = len(ests)
    rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    terms = [np_wsdr(rows(mix), rows(sum(ests[i] for i in c)), rows(sum(tgts[i] for i in c)), trim)
             for k in range(1, n) for c in itertools.combinations(range(n), k)]
    return np.mean(terms)


def run(fn, *arrays, **kw):
    """Evaluate a graph function on numpy inputs (lists become lists of Variables)."""
    import nnabla as nn

    def var(a):
        return [var(x) for x in a] if isinstance(a, list) else nn.Variable.from_numpy_array(a)
    out = fn(*[var(a) for a in arrays], **kw)
    out.forward()
    return float(out.d)


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_combinations_are_all_proper_subsets(n):
    combos = source_combinations(n)
    assert len(combos) == 2 ** n - 2
    assert len(set(combos)) == len(combos)
    assert all(0 < len(c) < n for c in combos)
    assert [len(c) for c in combos] == sorted(len(c) for c in combos)  # singles first


def test_four_source_combinations_match_published_order():
    combos = source_combinations(len("bdvo"))
    assert combos[:len("bdvo")] == [(0,), (1,), (2,), (3,)]
    assert combos[len("bdvo")] == (0, 1) and combos[-1] == (1, 2, 3)


def test_single_source_uses_itself():
    assert source_combinations(1) == [(0,)]


@pytest.mark.parametrize("nb_sources,channels", [(4, 2), (3, 1)])
@pytest.mark.nnabla
def test_freq_loss_matches_numpy(rng, nb_sources, channels):
    shape = (5, 2, channels, 7)
    mix = rng.rand(*shape).astype(np.float32)
    masks = [rng.rand(*shape).astype(np.float32) for _ in range(nb_sources)]
    targets = [rng.rand(*shape).astype(np.float32) for _ in range(nb_sources)]
    got = run(freq_combination_loss, mix, masks, targets)
    assert got == pytest.approx(np_freq(mix, masks, targets), rel=1e-5)


@pytest.mark.nnabla
def test_freq_loss_is_zero_for_perfect_masks(rng):
    shape = (4, 1, 2, 6)
    mix = rng.rand(*shape).astype(np.float32) + 0.5
    masks = [rng.rand(*shape).astype(np.float32) for _ in range(4)]
    targets = [m * mix for m in masks]
    assert run(freq_combination_loss, mix, masks, targets) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("trim", [0, 3])
@pytest.mark.nnabla
def test_weighted_sdr_matches_numpy(rng, trim):
    mix, est, tgt = (rng.randn(6, 50).astype(np.float32) for _ in range(3))
    got = run(weighted_sdr_loss, mix, est, tgt, trim=trim)
    assert got == pytest.approx(np_wsdr(mix.astype(np.float64), est, tgt, trim), rel=1e-5)
    assert 0.0 <= got <= 2.0


@pytest.mark.nnabla
def test_weighted_sdr_trim_drops_edges(rng):
    mix, tgt = rng.randn(2, 40).astype(np.float32), rng.randn(2, 40).astype(np.float32)
    est = tgt.copy()
    est[:, :5] = 100 * rng.randn(2, 5)  # garbage only inside the trimmed edge
    assert run(weighted_sdr_loss, mix, est, tgt, trim=5) == pytest.approx(0.0, abs=1e-5)
    assert run(weighted_sdr_loss, mix, est, tgt, trim=0) > 0.1


@pytest.mark.nnabla
def test_weighted_sdr_rejects_too_short_rows(rng):
    a = rng.randn(1, 10).astype(np.float32)
    with pytest.raises(ValueError, match="too few"):
        run(weighted_sdr_loss, a, a, a, trim=5)


@pytest.mark.nnabla
def test_time_loss_matches_numpy_and_perfect_is_zero(rng):
    shape = (2, 2, 60)
    ests = [rng.randn(*shape).astype(np.float32) for _ in range(4)]
    tgts = [rng.randn(*shape).astype(np.float32) for _ in range(4)]
    mix = sum(tgts)
    got = run(time_combination_loss, mix, ests, tgts, trim=4)
    assert got == pytest.approx(np_time(mix, ests, tgts, 4), rel=1e-5)
    assert run(time_combination_loss, mix, tgts, tgts, trim=4) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.nnabla
def test_losses_invariant_to_consistent_source_reordering(rng):
    shape = (2, 2, 40)
    ests = [rng.randn(*shape).astype(np.float32) for _ in range(4)]
    tgts = [rng.randn(*shape).astype(np.float32) for _ in range(4)]
    mix = sum(tgts)
    order = [2, 0, 3, 1]
    a = run(time_combination_loss, mix, ests, tgts, trim=2)
    b = run(time_combination_loss, mix, [ests[i] for i in order], [tgts[i] for i in order], trim=2)
    assert a == pytest.approx(b, rel=1e-5)
    fshape = (3, 1, 2, 5)
    spec = rng.rand(*fshape).astype(np.float32)
    masks = [rng.rand(*fshape).astype(np.float32) for _ in range(4)]
    mags = [rng.rand(*fshape).astype(np.float32) for _ in range(4)]
    fa = run(freq_combination_loss, spec, masks, mags)
    fb = run(freq_combination_loss, spec, [masks[i] for i in order], [mags[i] for i in order])
    assert fa == pytest.approx(fb, rel=1e-5)


@pytest.mark.nnabla
def test_multi_domain_loss_weights_time_loss(rng):
    import nnabla as nn
    t = nn.Variable.from_numpy_array(np.array(0.3, np.float32))
    f = nn.Variable.from_numpy_array(np.array(2.0, np.float32))
    out = multi_domain_loss(t, f, 10.0)
    out.forward()
    assert float(out.d) == pytest.approx(5.0)


@pytest.mark.nnabla
def test_losses_have_gradients(rng):
    import nnabla as nn
    shape = (2, 1, 30)
    est = nn.Variable.from_numpy_array(rng.randn(*shape).astype(np.float32), need_grad=True)
    tgts = [rng.randn(*shape).astype(np.float32) for _ in range(2)]
    loss = time_combination_loss(nn.Variable.from_numpy_array(sum(tgts)),
                                 [est, nn.Variable.from_numpy_array(tgts[1])],
                                 [nn.Variable.from_numpy_array(t) for t in tgts], trim=2)
    loss.forward()
    est.grad.zero()
    loss.backward()
    assert np.all(np.isfinite(est.g)) and np.abs(est.g).max() > 0
