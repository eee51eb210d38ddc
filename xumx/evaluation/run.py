"""Running an evaluation: the tracks of a MUSDB18 subset separated (:meth:`xumx.Separator.separate`)
and scored with museval, one track at a time, in worker processes or shared by the ranks of
``mpirun -n N``, each track's scores written as soon as they are made (what is written where:
:mod:`xumx.evaluation`)."""
import multiprocessing
import os
import sys
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import files
from ..config import ChunkConfig, EvalConfig, LoadConfig, SeparationConfig
from ..errors import ConfigError, EvalError, XumxError
from ..modelfiles import ModelFiles
from .identity import check_identity, identity_of
from .report import (BASELINE, Method, Results, read_scores, score_path,  # noqa: F401
                     summarize)


# --------------------------------------------------------------------------- data set
def open_tracks(root: Optional[str], subset: str, is_wav: bool,
                names: Optional[Sequence[str]] = None) -> list:
    """The musdb tracks of ``subset`` under ``root`` (all, or those named, in that order)."""
    import musdb
    root = root or os.environ.get("MUSDB_PATH")
    if not root:
        raise ConfigError("no --root given and $MUSDB_PATH is not set")
    if not os.path.isdir(root):
        raise EvalError(f"--root {root}: no such folder")
    try:
        db = musdb.DB(root=root, subsets=subset, is_wav=is_wav, download=False)
    except Exception as e:  # musdb raises bare RuntimeErrors / OSErrors on odd layouts
        raise EvalError(f"--root {root}: cannot read it as MUSDB18: {e}") from None
    if not db.tracks:
        from ..synth import no_tracks
        raise EvalError(no_tracks(os.path.join(root, subset), is_wav))
    if not names:
        return list(db.tracks)
    by_name = {t.name: t for t in db.tracks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"--tracks: no track named {', '.join(map(repr, unknown))} in "
                        f"{os.path.join(root, subset)}")
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- separation
def estimate_track(separator, audio: np.ndarray, rate: int) -> Dict[str, np.ndarray]:
    """The separator's estimates of a track at the track's rate and length, by the separation
    path of ``xumx.test`` (:meth:`xumx.Separator.separate`: resampled to the model's rate, the
    separator's chunks and cross-fades, resampled back).

    Shapes: audio (T, C) at ``rate`` -> {target: (T, C) float32}.
    """
    return separator.separate(np.asarray(audio, dtype=np.float32), rate)


def write_estimates(estimates: Dict[str, np.ndarray], folder: str, rate: int) -> None:
    """``<folder>/<target>.wav`` (32-bit float) for each estimate, all appearing together
    (:class:`xumx.encode.StemWriter`, the writer of ``xumx.test``)."""
    from ..encode import write_stems
    write_stems({os.path.join(folder, f"{name}.wav"): audio for name, audio in estimates.items()},
                rate, "wav", "float")


def score_track(track, estimates: Dict[str, np.ndarray], path: str):
    """Score estimates with museval v4 (1 s windows) and write the track's JSON atomically."""
    import museval
    store = museval.eval_mus_track(track, estimates)
    store.validate()
    files.write_text(path, store.json)
    return store


# --------------------------------------------------------------------------- one track
def process_track(cfg: EvalConfig, separator, track, targets: Sequence[str],
                  methods: Sequence[Method],
                  phase: Optional[Callable[[str], None]] = None) -> Dict[str, str]:
    """Separate and score one track for each method not scored yet: {method: 'scored'|'skipped'}.

    ``phase(text)`` is told each step as it starts ("<track>: separating", "<track>: scoring
    <method>"). The estimates go to ``cfg.out_dir`` before the JSON, so a JSON on disk means
    the track is complete.
    """
    phase = phase or (lambda text: None)
    status = {}
    for method in methods:
        path = score_path(method, cfg.subset, track.name)
        if read_scores(path, targets) is not None:
            status[method.name] = "skipped"
            continue
        audio = track.audio
        if method.baseline:
            estimates = {t: audio for t in targets}
        else:
            phase(f"{track.name}: separating")
            estimates = estimate_track(separator, audio, track.rate)
            if cfg.out_dir:
                write_estimates(estimates, os.path.join(cfg.out_dir, cfg.subset, track.name),
                                track.rate)
        phase(f"{track.name}: scoring {method.name} (museval)")
        score_track(track, {t: estimates[t] for t in targets}, path)
        status[method.name] = "scored"
    return status


_WORKER: dict = {}


def _worker_init(cfg: EvalConfig, model: ModelFiles, load: LoadConfig,
                 separation: SeparationConfig, chunking: ChunkConfig, targets, methods) -> None:
    """Runs once in each worker process: open the data set and build the Separator once
    (``model`` is the parent's resolved one: workers download nothing)."""
    tracks = open_tracks(cfg.root, cfg.subset, cfg.is_wav)
    _WORKER.update(cfg=cfg, targets=targets, methods=methods, tracks={t.name: t for t in tracks},
                   separator=eval_separator(model, load, separation, chunking))


def _worker_track(name: str):
    w = _WORKER
    try:
        return name, process_track(w["cfg"], w["separator"], w["tracks"][name], w["targets"],
                                   w["methods"])
    except XumxError as e:  # sent back to the parent as one line
        raise EvalError(f"track {name!r}: {e}") from None


def eval_separator(model: ModelFiles, load: LoadConfig, separation: SeparationConfig,
                   chunking: ChunkConfig):
    """The Separator of ``model`` with the settings of ``load``, ``separation`` and
    ``chunking``, which must give museval at least two targets to score."""
    import dataclasses
    from ..separator import Separator
    sep = Separator.load(model, load.device, sample_rate=load.sample_rate,
                         **dataclasses.asdict(separation), **dataclasses.asdict(chunking))
    if len(sep.stems) < 2:
        raise ConfigError("museval needs at least two targets to score (--targets)")
    return sep


def _score_tracks(cfg: EvalConfig, separator, tracks, targets, methods, settings,
                  quiet: bool, label: str = "tracks") -> None:
    """Separate and score ``tracks`` here, or in ``cfg.cores`` worker processes that build
    their own separator of ``settings`` (model, load, separation, chunking); a progress bar
    named ``label`` unless ``quiet``."""
    from ..progress import progress_bar
    with progress_bar(len(tracks), label, quiet, "track") as bar:
        if cfg.cores == 1 or len(tracks) <= 1:
            for track in tracks:
                process_track(cfg, separator, track, targets, methods, bar.set_postfix_str)
                bar.update()
            return
        ctx = multiprocessing.get_context("spawn")
        workers = min(cfg.cores, len(tracks))
        bar.set_postfix_str(f"separating and scoring in {workers} processes")
        with ctx.Pool(workers, initializer=_worker_init,
                      initargs=(replace(cfg, tracks=None), *settings, targets, methods)) as pool:
            for name, _ in pool.imap_unordered(_worker_track, [t.name for t in tracks]):
                bar.set_postfix_str(f"{name}: scored")
                bar.update()


# --------------------------------------------------------------------------- the whole run
def methods_of(cfg: EvalConfig, model: ModelFiles) -> List[Method]:
    """The model's method (named ``cfg.name``, else after its run folder, UMX folder or weights
    file: :attr:`~xumx.modelfiles.ModelFiles.name`), then the baseline with ``cfg.baseline``."""
    out = [Method(cfg.name or model.name, cfg.eval_dir)]
    if cfg.baseline:
        out.append(Method(BASELINE, os.path.join(cfg.eval_dir, BASELINE), baseline=True))
    return out


def evaluate(cfg: EvalConfig, chunking: ChunkConfig = ChunkConfig(), load: LoadConfig = LoadConfig(),
             separation: SeparationConfig = SeparationConfig(), progress: bool = True,
             log=None, processes=None) -> Optional[Results]:
    """Separate (the model of ``load``, by default the published weights, in the chunks of
    ``chunking``) and score the tracks of ``cfg``, then aggregate (see the module docstring).
    Raises XumxError subclasses; EvalError for an eval folder holding other scores
    (:func:`~xumx.evaluation.identity.check_identity`).

    ``processes``: the ranks of ``mpirun -n N`` (:func:`xumx.mpi.world`; None: this process
    alone). Rank 0 checks the eval folder's identity and lists the tracks not scored yet; each
    rank separates and scores its share of them (:meth:`xumx.mpi.SingleProcess.share`), every
    track once, its JSON written as soon as it is scored (so a rerun resumes whatever stopped
    it); once all are done rank 0 aggregates every track and returns the Results, the other
    ranks return None. The eval folder (and ``cfg.out_dir``) must be one that every rank
    sees."""
    from ..mpi import SingleProcess
    from ..separator import needed_sources
    comm = processes or SingleProcess()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    tracks = open_tracks(cfg.root, cfg.subset, cfg.is_wav, cfg.tracks)
    model = comm.rank0_first(lambda: ModelFiles.resolve(   # one download, into the shared cache
        load.model, load.umx or None, needed_sources(separation), quiet=not progress))
    separator = eval_separator(model, load, separation, chunking)
    targets = tuple(separator.stems)
    known = set(tracks[0].sources)
    missing = [t for t in targets if t not in known]
    if missing:
        raise EvalError(f"the data set has no reference for target(s) {missing}")
    methods = methods_of(cfg, model)
    identity = identity_of(model, separator, separation, chunking)

    def unscored():
        return [t.name for t in tracks if any(
            read_scores(score_path(m, cfg.subset, t.name), targets) is None for m in methods)]

    def first_look():
        check_identity(cfg.eval_dir, identity, model.path)
        todo = unscored()
        if len(todo) < len(tracks):
            log(f"{len(tracks) - len(todo)} of {len(tracks)} track(s) already scored in "
                f"{cfg.eval_dir}: skipped")
        return todo

    pending = comm.on_rank0(first_look)   # one look, so that the ranks share the same list
    by_name = {t.name: t for t in tracks}
    mine = [by_name[name] for name in comm.share(pending)]
    if cfg.cores > 1 and len(mine) > 1:
        separator = None   # each worker builds its own: not held beside them
    if mine:
        _score_tracks(cfg, separator, mine, targets, methods, (model, load, separation, chunking),
                      not progress or comm.rank != 0,
                      "tracks" if comm.n_procs == 1 else f"tracks of rank 0 (of {len(pending)})")
    del separator
    comm.barrier()   # every rank's share is scored
    if comm.rank != 0:
        return None
    lost = unscored() if comm.n_procs > 1 else []
    if lost:
        raise EvalError(f"{len(lost)} track(s) scored by other processes have no scores in "
                        f"{cfg.eval_dir} (e.g. {lost[0]!r}): under mpirun every process must "
                        f"write to the same --eval-dir, a folder all machines share")
    return summarize(methods, cfg.subset, [t.name for t in tracks], targets, cfg.eval_dir)
