"""xumx.chunking: chunk layout, cross-fade weights, and chunked vs whole separation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import sine_mix
from xumx.chunking import chunk_bounds, chunk_weights, separate_chunked


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), chunk=st.integers(0, 800), overlap=st.integers(0, 200))
def test_bounds_cover_the_signal_and_weights_sum_to_one(n, chunk, overlap):
    if chunk and chunk < n and 2 * overlap >= chunk:
        with pytest.raises(ValueError):
            chunk_bounds(n, chunk, overlap)
        return
    bounds = chunk_bounds(n, chunk, overlap)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    total = np.zeros(n)
    for i, (s, e) in enumerate(bounds):
        assert 0 < e - s <= (chunk if 0 < chunk < n else n)
        if i:
            assert bounds[i - 1][1] - s == overlap   # neighbours share exactly `overlap`
        total[s:e] += chunk_weights(bounds, i)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_identity_separator_is_reconstructed_exactly():
    x = sine_mix(10007, 8000)
    identity = lambda a: {"a": a.copy(), "b": -2 * a}   # noqa: E731
    calls = []
    out = separate_chunked(identity, x, 1000, 250, progress=calls.append)
    assert len(calls) == len(chunk_bounds(10007, 1000, 250)) > 10
    assert out["a"].shape == x.shape and out["a"].dtype == np.float32
    np.testing.assert_allclose(out["a"], x, atol=1e-6)
    np.testing.assert_allclose(out["b"], -2 * x, atol=2e-6)


def test_seams_have_the_raised_cosine_shape_against_the_whole_signal_result():
    """A separator that removes each chunk's own mean differs from the whole-signal result by
    a constant per chunk (the whole mean less the chunk's). Across each overlap the difference
    goes from one chunk's constant to the next along sin^2 (a hard switch also sums to one,
    and the identity separator cannot tell them apart), and is the constant elsewhere."""
    n, chunk, overlap = 5000, 1200, 300
    t = np.arange(n)
    x = np.stack([t / n + 0.1 * np.sin(t / 7.0), -2 * t / n], axis=1).astype(np.float32)
    centre = lambda a: {"y": a - a.mean(axis=0)}   # noqa: E731
    out = separate_chunked(centre, x, chunk, overlap)["y"]
    err = out.astype(np.float64) - centre(x.astype(np.float64))["y"]
    bounds = chunk_bounds(n, chunk, overlap)
    level = [x.mean(axis=0, dtype=np.float64) - x[s:e].mean(axis=0, dtype=np.float64)
             for s, e in bounds]
    assert len(bounds) >= 4
    for k, (s, e) in enumerate(bounds):
        inner_start = bounds[k - 1][1] if k else s
        inner_end = bounds[k + 1][0] if k + 1 < len(bounds) else e
        np.testing.assert_allclose(err[inner_start:inner_end], np.broadcast_to(
            level[k], (inner_end - inner_start, 2)), atol=1e-5, err_msg=f"chunk {k}")
        if k + 1 < len(bounds):
            a, b = bounds[k + 1][0], e
            ramp = (err[a:b] - level[k]) / (level[k + 1] - level[k])   # (overlap, C)
            want = np.sin(0.5 * np.pi * (np.arange(b - a) + 0.5) / (b - a)) ** 2
            np.testing.assert_allclose(ramp, np.stack([want, want], axis=1), atol=1e-3,
                                       err_msg=f"seam {k}")


def test_one_chunk_is_the_plain_call(tiny_model):
    from xumx.separator import Separator
    sep = Separator.load(tiny_model, chunk_dur=0)
    x = sine_mix(3000, 8000)
    whole = sep.separate(x)
    for chunk in (0, 3000, 10 ** 6):
        out = separate_chunked(sep.separate, x, chunk, 100)
        for k in whole:
            np.testing.assert_array_equal(out[k], whole[k])


def test_chunked_tiny_model_is_close_to_whole(tiny_model):
    """Random-weight tiny model: the network sees less context per chunk, so results differ,
    but the cross-fade keeps the error bounded and the output exactly as long as the input."""
    from xumx.separator import Separator
    sep = Separator.load(tiny_model, chunk_dur=0)
    x = sine_mix(12000, 8000, seed=3)
    whole = sep.separate(x)
    out = separate_chunked(sep.separate, x, 4000, 800)
    butt = separate_chunked(sep.separate, x, 4000, 0)   # the published code's joins

    def ser(est):
        return {k: 10 * np.log10(np.sum(whole[k] ** 2) / np.sum((whole[k] - est[k]) ** 2))
                for k in whole}
    faded, joined = ser(out), ser(butt)
    for k in whole:
        assert out[k].shape == whole[k].shape == x.shape
        assert faded[k] > 25, (k, faded[k])
    assert np.mean(list(faded.values())) > np.mean(list(joined.values())) + 6
    # the estimates still add up to the mixture, as the whole-file ones do
    residual = x - sum(out.values())
    assert np.sqrt(np.mean(residual ** 2)) < 1e-4 * np.sqrt(np.mean(x ** 2))


def test_wrong_length_from_separator_is_caught():
    with pytest.raises(ValueError, match="samples for a chunk"):
        separate_chunked(lambda a: {"a": a[:-1]}, np.zeros((100, 2), np.float32), 40, 10)


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 10])
def test_batches_hold_at_most_the_limit_and_give_the_pieces_of_one_chunk_at_a_time(limit):
    """Batched chunks: each batch's sizes add up to at most the limit (one chunk always), a
    batch is handed over once no whole chunk more fits, and the pieces are exactly those of
    one chunk at a time."""
    from xumx.chunking import separate_batches, separate_stream
    x = sine_mix(10007, 8000)
    blocks = [x[i:i + 777] for i in range(0, x.shape[0], 777)]
    separate = lambda a: {"a": 3 * a, "b": a[::-1].copy()}   # noqa: E731 (not pointwise)
    one = list(separate_stream(separate, blocks, 1000, 250))
    batches, done = [], []

    def batched(chunks):
        batches.append([c.shape[0] for c in chunks])
        return map(separate, chunks)
    got = list(separate_batches(batched, blocks, 1000, 250, done.append,
                                 lambda t: t, 1000 * limit))
    assert len(got) == len(one) == len(done) == len(chunk_bounds(10007, 1000, 250))
    for a, b in zip(got, one):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    sizes = [s for batch in batches for s in batch]
    assert sizes == [e - s for s, e in chunk_bounds(10007, 1000, 250)]
    for batch in batches:
        assert len(batch) == 1 or sum(batch) <= 1000 * limit
    full = max(1, limit)   # chunks of 1000 samples per batch
    assert [len(b) for b in batches[:-1]] == [full] * (len(batches) - 1), batches


def test_a_batch_that_returns_too_few_estimates_is_caught():
    from xumx.chunking import separate_batches
    x = np.zeros((100, 2), np.float32)
    with pytest.raises(ValueError, match="fewer estimates"):
        list(separate_batches(lambda chunks: [{"a": chunks[0]}], [x], 40, 10, None,
                                   lambda t: t, 100))


def test_batched_network_gives_the_stems_of_one_chunk_at_a_time(tiny_model, monkeypatch):
    """Through the Separator: chunks of equal length go through the network in one run (the
    short last chunk alone), and the stems agree with one chunk at a time to >= 100 dB."""
    from xumx.engine import OnnxNet
    from xumx.separator import Separator
    runs = []
    real = OnnxNet.batch_sources
    monkeypatch.setattr(OnnxNet, "batch_sources",
                        lambda self, mag: runs.append(mag.shape[:2]) or real(self, mag))
    x = sine_mix(8000 * 5 + 1234, 8000, seed=4)
    one = Separator.load(tiny_model, chunk_dur=1.0, overlap=0.2, batch_frames=0)
    frames = one.nb_frames(8000)
    whole = one.separate(x)
    assert len(runs) == one.nb_chunks(x.shape[0]) == 7 and {b for _, b in runs} == {1}
    runs.clear()
    got = one.with_settings(batch_frames=3 * frames).separate(x)
    assert runs == [(frames, 3), (frames, 3), (one.nb_frames(x.shape[0] - 6 * 6400), 1)]
    for k in whole:
        err = np.sum((got[k].astype(np.float64) - whole[k]) ** 2)
        assert 10 * np.log10(np.sum(whole[k].astype(np.float64) ** 2) / max(err, 1e-300)) >= 100


def _signals(lengths, block=777):
    """Generated signals (each a list of blocks) of the given lengths."""
    out = []
    for k, n in enumerate(lengths):
        x = sine_mix(n, 8000, seed=k)
        out.append([x[i:i + block] for i in range(0, n, block)])
    return out


def _events(limit, streams, separate, runs):
    from xumx.chunking import separate_streams

    def batched(chunks):
        runs.append([c.shape[0] for c in chunks])
        return map(separate, chunks)
    return list(separate_streams(batched, streams, 1000, 250, None, lambda t: t, limit))


@pytest.mark.parametrize("limit", [0, 2500, 100000])
def test_signals_share_batches_and_each_gets_the_pieces_of_its_own_stream(limit):
    """Several signals: chunks of the next signal join the batch while there is room (every
    chunk of 3 signals in one batch with a large limit), and each signal's pieces are exactly
    those of separating it alone, then None."""
    from xumx.chunking import separate_stream
    separate = lambda a: {"a": 3 * a, "b": a[::-1].copy()}   # noqa: E731 (not pointwise)
    lengths = (2100, 900, 3300)
    runs = []
    events = _events(limit, _signals(lengths), separate, runs)
    for s, blocks in enumerate(_signals(lengths)):
        mine = [what for t, what in events if t == s]
        alone = list(separate_stream(separate, blocks, 1000, 250))
        assert mine[-1] is None and len(mine) == len(alone) + 1
        for a, b in zip(mine, alone):
            for k in b:
                np.testing.assert_array_equal(a[k], b[k])
    assert [s for s, _ in events] == sorted(s for s, _ in events)   # signals in order
    sizes = [sum(len(chunk_bounds(n, 1000, 250)) for n in lengths)]
    if limit == 0:
        assert runs == [[s] for r in runs for s in r] and len(runs) == sizes[0]
    elif limit == 2500:   # 1000 + 1000 leaves no room for a whole chunk; 600 + 900 does
        assert runs == [[1000, 1000], [600, 900, 1000], [1000, 1000], [1000, 300]], runs
    else:
        assert runs == [[1000, 1000, 600, 900, 1000, 1000, 1000, 1000, 300]], runs


def test_a_signal_that_fails_is_dropped_and_the_others_go_on():
    """A signal whose blocks raise mid-way gets its exception (after the pieces made before),
    its chunks in the batch are not separated, and the signals around it are whole."""
    from xumx.chunking import separate_stream
    separate = lambda a: {"a": 2 * a}   # noqa: E731
    streams = _signals((2100, 4000, 1500))

    def broken(blocks):
        yield from blocks[:3]
        raise OSError("the disk went away")
    streams[1] = broken(streams[1])
    runs = []
    events = _events(100000, streams, separate, runs)
    assert [(s, type(what).__name__) for s, what in events] == [
        (0, "dict"), (0, "dict"), (0, "dict"), (0, "NoneType"), (1, "OSError"),
        (2, "dict"), (2, "dict"), (2, "NoneType")]
    assert runs == [[1000, 1000, 600, 1000, 750]], runs   # not the chunks of signal 1
    for s in (0, 2):
        alone = list(separate_stream(separate, _signals((2100, 4000, 1500))[s], 1000, 250))
        for a, b in zip([w for t, w in events if t == s], alone):
            np.testing.assert_array_equal(a["a"], b["a"])


def test_a_failed_network_run_fails_the_signals_in_its_batch_only():
    """An error of ``separate`` on a batch: each signal with chunks left in it gets the error
    (once), and the next signals are separated."""
    calls = []

    def separate(chunks):
        calls.append(len(chunks))
        if len(calls) == 2:
            raise MemoryError("out of memory")
        return [{"a": c} for c in chunks]
    from xumx.chunking import separate_streams
    events = list(separate_streams(separate, _signals((2100, 800, 1500, 800)), 1000, 250,
                                   None, lambda t: t, 2000))
    # batches: [s0 1000, 1000], [s0 600, s1 800] (fails), [s2 1000, 750], [s3 800]
    assert calls == [2, 2, 2, 1]
    assert [(s, type(w).__name__) for s, w in events] == [
        (0, "dict"), (0, "dict"), (0, "MemoryError"), (1, "MemoryError"),
        (2, "dict"), (2, "dict"), (2, "NoneType"), (3, "dict"), (3, "NoneType")]


@pytest.mark.parametrize("limit", [0, 2000, 2500])
def test_a_full_batch_is_run_before_more_of_the_signal_is_read(limit):
    """A batch goes as soon as no whole chunk more fits: when it runs, the signal has been
    read at most one block past its last chunk's end (bounded read-ahead: the chunker looks
    one block ahead), not into the next chunk."""
    from xumx.chunking import chunk_bounds, separate_streams
    n, block = 5000, 500
    bounds, log = chunk_bounds(n, 1000, 250), []
    x = sine_mix(n, 8000)

    def blocks():
        for i in range(0, n, block):
            log.append(("read", i + block))
            yield x[i:i + block]

    def separate(chunks):
        log.append(("run", len(chunks)))
        return [{"a": c} for c in chunks]
    list(separate_streams(separate, [blocks()], 1000, 250, None, lambda t: t, limit))
    done = 0
    for i, (what, value) in enumerate(log):
        if what == "run":
            done += value
            read = max(v for w, v in log[:i] if w == "read")
            assert read <= bounds[done - 1][1] + block, log
    assert done == len(bounds)


@pytest.mark.parametrize("limit", [0, 2500, 100000])
def test_the_next_signal_is_started_only_when_the_batch_has_room(limit):
    """Bounded read-ahead: a signal's first block is asked for only when the batch holds its
    chunks; with limit 0 after every chunk of the signal before it has been separated."""
    from xumx.chunking import separate_streams
    log = []

    def streams():
        for k, blocks in enumerate(_signals((2100, 900, 3300))):
            log.append(("start", k))
            yield blocks

    def separate(chunks):
        log.append(("run", [c.shape[0] for c in chunks]))
        return [{"a": c} for c in chunks]
    list(separate_streams(separate, streams(), 1000, 250, None, lambda t: t, limit))
    expect = {0: [("start", 0), ("run", [1000]), ("run", [1000]), ("run", [600]), ("start", 1),
                  ("run", [900]), ("start", 2)] + [("run", [n]) for n in (1000,) * 4 + (300,)],
              2500: [("start", 0), ("run", [1000, 1000]), ("start", 1), ("start", 2),
                     ("run", [600, 900, 1000]), ("run", [1000, 1000]), ("run", [1000, 300])],
              100000: [("start", 0), ("start", 1), ("start", 2),
                       ("run", [1000, 1000, 600, 900, 1000, 1000, 1000, 1000, 300])]}
    assert log == expect[limit], log
