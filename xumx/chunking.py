"""Separation of long signals in overlapping chunks, blended with a raised-cosine cross-fade.

The signal is cut into chunks of ``chunk`` samples whose starts are ``chunk - overlap`` apart;
the last chunk ends at the end of the signal and overlaps its neighbour by at least ``overlap``.
Inside each overlap the earlier chunk fades out with cos² and the later one fades in with sin²
(they sum to 1), so an identity separator reconstructs its input exactly and there are no seams.
The separating function is any callable ``audio (t, C) -> {name: (t, C')}``: the chunking does
not know how masks are computed, and the caller builds the network once and reuses it.
"""
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np


def chunk_bounds(nb_samples: int, chunk: int, overlap: int) -> List[Tuple[int, int]]:
    """[start, end) of each chunk. ``chunk <= 0`` or ``chunk >= nb_samples``: one chunk.

    >>> chunk_bounds(10, 4, 1)
    [(0, 4), (3, 7), (6, 10)]
    """
    if nb_samples <= 0:
        raise ValueError(f"nothing to chunk: {nb_samples} samples")
    if chunk <= 0 or chunk >= nb_samples:
        return [(0, nb_samples)]
    if not 0 <= 2 * overlap < chunk:
        raise ValueError(f"overlap ({overlap}) must be less than half the chunk ({chunk})")
    hop = chunk - overlap
    bounds = [(0, chunk)]
    while bounds[-1][1] < nb_samples:
        start = bounds[-1][0] + hop
        bounds.append((start, min(start + chunk, nb_samples)))
    return bounds


def nb_chunks(nb_samples: int, chunk: int, overlap: int) -> int:
    """``len(chunk_bounds(nb_samples, chunk, overlap))``, without making the list (a header's
    claim of 2^62 samples costs nothing).

    >>> nb_chunks(10, 4, 1)
    3
    """
    if nb_samples <= 0:
        raise ValueError(f"nothing to chunk: {nb_samples} samples")
    if chunk <= 0 or chunk >= nb_samples:
        return 1
    if not 0 <= 2 * overlap < chunk:
        raise ValueError(f"overlap ({overlap}) must be less than half the chunk ({chunk})")
    hop = chunk - overlap
    return 1 + -(-(nb_samples - chunk) // hop)


def fade_in(overlap: int) -> np.ndarray:
    """Raised-cosine ramp of ``overlap`` samples, (overlap,) float64; ``fade_in + fade_in[::-1] == 1``."""
    return np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2


def chunk_weights(bounds: List[Tuple[int, int]], index: int) -> np.ndarray:
    """Cross-fade weights of chunk ``index``, shape (end - start,) float64.

    Ramps cover the samples shared with the previous/next chunk; the weights of all chunks
    sum to exactly 1 at every sample (up to rounding).
    """
    start, end = bounds[index]
    w = np.ones(end - start)
    if index > 0:
        shared = bounds[index - 1][1] - start
        w[:shared] *= fade_in(shared)
    if index + 1 < len(bounds):
        shared = end - bounds[index + 1][0]
        w[len(w) - shared:] *= fade_in(shared)[::-1]
    return w


def separate_stream(separate: Callable[[np.ndarray], Dict[str, np.ndarray]],
                    blocks: Iterable[np.ndarray], chunk: int, overlap: int,
                    progress: Optional[Callable[[int], None]] = None
                    ) -> Iterator[Dict[str, np.ndarray]]:
    """:func:`separate_chunked` of a signal that arrives in blocks, in bounded memory.

    Shapes: blocks (t, C) in order -> pieces {name: (t', C') float32} in order; the pieces
    concatenated are exactly :func:`separate_chunked` of the blocks concatenated (same chunks,
    same weights, same float32 sums). Only the current chunk, the next block and the
    cross-faded overlap are held. ``chunk <= 0``: the blocks are joined and separated in one
    call. ``progress(1)`` is called after each chunk. :func:`separate_batches` with one chunk
    per batch.
    """
    return separate_batches(lambda chunks: map(separate, chunks), blocks, chunk, overlap,
                            progress)


def separate_batches(separate: Callable[[List[np.ndarray]], Iterable[Dict[str, np.ndarray]]],
                     blocks: Iterable[np.ndarray], chunk: int, overlap: int,
                     progress: Optional[Callable[[int], None]] = None,
                     size: Callable[[int], int] = lambda t: 1, limit: int = 0
                     ) -> Iterator[Dict[str, np.ndarray]]:
    """:func:`separate_stream` with the chunks handed to ``separate`` in batches:
    :func:`separate_streams` of one signal (its error raised as it is).

    ``separate(chunks)``: a list of chunks (t_i, C) in order -> their estimates
    {name: (t_i, C')}, one dict per chunk, in order (an iterable: each is cross-faded and
    yielded before the next is asked for). The pieces are exactly those of
    :func:`separate_stream` with the same estimates: batching changes when chunks are
    separated, not what is blended. ``progress(1)`` is called after each chunk.
    """
    yield from one_stream(separate_streams(separate, [blocks], chunk, overlap,
                                           progress and (lambda _: progress(1)), size, limit))


Event = Tuple[int, Union[Dict[str, np.ndarray], None, Exception]]


def one_stream(events: Iterable[Tuple[object, object]]) -> Iterator:
    """What the events ``(index, what)`` of a single stream carry, in order: each ``what``
    but the None that ends it; an Exception in their place is raised as it is. (The events of
    :func:`separate_streams`, :meth:`xumx.Separator.separate_streams` and
    :func:`xumx.stemfiles.separate_files`, read for one signal, mixture or file.)"""
    for _, what in events:
        if isinstance(what, BaseException):
            raise what
        if what is not None:
            yield what


def separate_streams(separate: Callable[[List[np.ndarray]], Iterable[Dict[str, np.ndarray]]],
                     streams: Iterable[Iterable[np.ndarray]], chunk: int, overlap: int,
                     progress: Optional[Callable[[int], None]] = None,
                     size: Callable[[int], int] = lambda t: 1, limit: int = 0
                     ) -> Iterator[Event]:
    """Several signals, one after the other, whose chunks share batches: a batch holds
    consecutive chunks (of one signal or of the next ones) whose ``size(t_i)`` add up to at
    most ``limit`` (one chunk always; ``limit <= 0``: one chunk per batch), handed to
    ``separate`` as soon as no whole chunk more would fit, and after the last signal.

    ``streams``: the signals, each an iterable of blocks (t, C), taken one at a time: the next
    signal is started (its first block asked for) only when the batch has room for a chunk
    after the current signal's last one. Yields events ``(index of the signal, what)``, each
    signal's in order and the signals in order: a piece {name: (t', C') float32} (each
    signal's pieces are those of :func:`separate_stream`), then None after its last piece;
    or an Exception in place of the rest: raised while its blocks were read (its chunks of
    the batch are dropped), or by ``separate`` while a batch holding its chunks was separated
    (every signal with chunks left in that batch gets it). The other signals go on; an
    exception that is not an Exception (an interrupt) ends it all. ``progress(index)`` is
    called after each chunk. Memory: the inputs of one batch (at most ``limit`` in ``size``,
    or one chunk), each signal's next block and cross-faded overlap, besides ``separate``'s.
    """
    pending: List[list] = []   # [signal, chunk's input or its Exception, samples, more after]
    blends: Dict[int, _CrossFade] = {}
    failed = set()

    def flush():
        estimates = None
        for k, (s, x, end, more) in enumerate(pending):
            if s in failed:   # a failed batch's: its Exception was given
                continue
            if isinstance(x, Exception):
                failed.add(s)
                yield s, x
                continue
            try:
                if estimates is None:   # the network's run: of every chunk of the batch
                    estimates = iter(separate([p[1] for p in pending
                                               if not isinstance(p[1], Exception)]))
                est = next(estimates, None)
                if est is None:
                    raise ValueError(f"separator returned fewer estimates than the "
                                     f"{len(pending)} chunks of the batch")
                piece = blends[s](est, end, more)
            except Exception as e:   # the rest of the batch is lost: each signal in it fails
                est = piece = None
                for t in dict.fromkeys(p[0] for p in pending[k:] if p[0] not in failed):
                    failed.add(t)
                    blends.pop(t, None)
                    yield t, e
                break
            del est   # the separator's own buffers go before the piece is used
            yield s, piece
            del piece   # used: not held while the next chunk is separated
            if progress is not None:
                progress(s)
            if not more:
                del blends[s]
                yield s, None
        pending.clear()

    def held() -> int:   # size() of the pending chunks (a failed signal's entry has none)
        return sum(size(end) for _, x, end, _ in pending if not isinstance(x, Exception))

    for s, blocks in enumerate(streams):
        blends[s] = _CrossFade(chunk, overlap)
        chunks = _chunks(blocks, blends[s].chunk, overlap)
        more = True
        while more and s not in failed:
            try:
                x, end, more = next(chunks)
            except Exception as e:   # this signal ends here; its chunks are not separated
                pending[:] = [p for p in pending if p[0] != s] + [[s, e, 0, False]]
                del blends[s]
                break
            now = held()
            if now and now + size(end) > limit:   # the chunk does not fit: the batch goes
                yield from flush()
                now = 0
            pending.append([s, x, end, more])
            if now + size(end) + size(blends[s].chunk) > limit:   # no whole chunk fits any more
                yield from flush()
        chunks.close()   # a failed signal's blocks are read no further
    if pending:
        yield from flush()


def _chunks(blocks: Iterable[np.ndarray], chunk: int, overlap: int
            ) -> Iterator[Tuple[np.ndarray, int, bool]]:
    """The chunks of a signal that arrives in blocks: (input (end, C), end, more chunks after).
    ``chunk`` must be positive; the last chunk ends where the signal ends."""
    hop = chunk - overlap
    buf = None   # input from the current chunk's start on
    for block in blocks:
        buf = block if buf is None else np.concatenate([buf, block])
        while buf.shape[0] > chunk:   # more samples after this chunk: it is not the last
            if not 0 <= 2 * overlap < chunk:
                raise ValueError(f"overlap ({overlap}) must be less than half the chunk ({chunk})")
            yield buf[:chunk], chunk, True
            buf = buf[hop:]
    if buf is None or buf.shape[0] == 0:
        raise ValueError("nothing to chunk: 0 samples")
    yield buf, buf.shape[0], False


class _CrossFade:
    """Blends the estimates of consecutive chunks: ``fade(est, end, more)`` -> the finished
    piece {name: (t', C') float32}, holding back the overlap that the next chunk adds to.
    ``chunk <= 0`` at construction: one chunk of any length."""

    def __init__(self, chunk: int, overlap: int):
        self.overlap = overlap
        self.chunk = chunk if chunk > 0 else np.iinfo(np.int64).max // 2
        self.start = 0      # the current chunk's start in the whole signal
        self.prev = None    # bounds of the previous chunk
        self.tail: Dict[str, np.ndarray] = {}   # previous chunk's weighted overlap, to add

    def __call__(self, est: Dict[str, np.ndarray], end: int, more: bool) -> Dict[str, np.ndarray]:
        for y in est.values():
            if y.shape[0] != end:
                raise ValueError(f"separator returned {y.shape[0]} samples for a chunk of {end}")
        if not more and self.prev is None:   # the only chunk: the plain call
            return {k: np.asarray(v, dtype=np.float32) for k, v in est.items()}
        chunk, start = self.chunk, self.start
        hop = chunk - self.overlap
        bounds = [b for b in (self.prev, (start, start + end)) if b is not None]
        if more:
            bounds.append((start + hop, start + hop + chunk))
        w = chunk_weights(bounds, len(bounds) - 2 if more else len(bounds) - 1)[:, None]
        ramps = np.flatnonzero(w[:, 0] != 1.0)   # weights of 1 leave a sample as it is
        out, keep, tail = {}, hop if more else end, self.tail
        for name, y in est.items():
            y, ramped = np.array(y, dtype=np.float32), y[ramps]   # (w * y) in float32, but
            y[ramps] = (w[ramps] * ramped).astype(np.float32)   # computed on the ramps only
            if name in tail:
                y[:tail[name].shape[0]] = tail[name] + y[:tail[name].shape[0]]
            out[name], tail[name] = y[:keep], y[keep:].copy()   # not a view: y goes with out
        del est   # the separator's own buffers go before the pieces are used
        self.prev, self.start = (bounds[-2] if more else None), start + hop
        return out


def separate_chunked(separate: Callable[[np.ndarray], Dict[str, np.ndarray]], audio: np.ndarray,
                     chunk: int, overlap: int,
                     progress: Optional[Callable[[int], None]] = None) -> Dict[str, np.ndarray]:
    """Run ``separate`` on overlapping chunks of ``audio`` and cross-fade the results.

    Shapes: audio (T, C) -> {name: (T, C') float32}, exactly T samples per output.
    ``chunk``/``overlap`` are in samples (``chunk <= 0``: the whole signal in one call, whose
    result is returned as is). ``progress(1)`` is called after each chunk.
    """
    if audio.shape[0] <= 0:
        raise ValueError(f"nothing to chunk: {audio.shape[0]} samples")
    out: Dict[str, np.ndarray] = {}
    done = 0
    for piece in separate_stream(separate, [audio], chunk, overlap, progress):
        for name, y in piece.items():
            if done == 0 and y.shape[0] == audio.shape[0]:
                out[name] = y   # the only chunk
            else:
                if name not in out:
                    out[name] = np.empty((audio.shape[0],) + y.shape[1:], np.float32)
                out[name][done:done + y.shape[0]] = y
        done += next(iter(piece.values())).shape[0] if piece else 0
    return out
