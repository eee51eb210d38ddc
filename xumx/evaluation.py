"""Scoring separators on MUSDB18 with museval (BSSEval v4), the library behind ``xumx.eval``.

Layout of what :func:`evaluate` writes (``S`` is the subset, usually ``test``)::

    <out_dir>/S/<track>/<target>.wav          estimates (only with out_dir)
    <eval_dir>/S/<track>.json                 museval v4 scores of the model, one file per track
    <eval_dir>/mixture/S/<track>.json         the mixture-as-estimate baseline (with baseline)
    <eval_dir>/scores.csv                     the aggregate table, one row per method and target
    <eval_dir>/scores.pandas                  a museval MethodStore (pandas pickle), every frame
    <eval_dir>/sdr.png                        boxplots of per-track SDR, per target and method
    <eval_dir>/identity.json                  what made the model's scores (see below)

The per-track JSONs are the layout ``museval.EvalStore.add_eval_dir`` and
``museval.MethodStore.add_eval_dir`` read. Aggregation is the SiSEC one: the median over the
1 s frames of a track, then the median over tracks, per target and metric.

Each file is written to a temporary name and renamed, and a track whose JSON exists and holds
every target is not scored again, so a run killed half-way loses at most the tracks in progress.

Scores are tied to what made them: ``identity.json`` records the SHA-256 of the model's files
(the published weights' when no model is given), the separation settings (targets, Wiener
settings, UMX or X-UMX, the rate the model runs at) and the chunking. A run reuses the scores
of an eval folder only when its identity is the same; another model or other settings are
refused (:func:`check_identity`), as is a folder holding model scores without a record. The
mixture baseline is the same whatever the model, so its scores are always reused.
"""
import dataclasses
import glob
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import files, inference
from .config import ChunkConfig, EvalConfig, LoadConfig, SeparationConfig
from .errors import ConfigError, EvalError, XumxError
from .separator import load_separator

METRICS = ("SDR", "SIR", "ISR", "SAR")
BASELINE = "mixture"
AGGREGATION_NOTE = ("museval v4, 1 s windows: median over the frames of each track, "
                    "then median over tracks")


@dataclass(frozen=True)
class Method:
    """One set of scores: its name, the folder its per-track JSONs go under, and whether it
    is the mixture-as-estimate baseline (no separation)."""
    name: str
    eval_dir: str
    baseline: bool = False


# --------------------------------------------------------------------------- data set
def open_tracks(root: Optional[str], subset: str, is_wav: bool,
                names: Optional[Sequence[str]] = None) -> list:
    """The musdb tracks of ``subset`` under ``root`` (all, or those named, in that order)."""
    import musdb
    root = root or os.environ.get("MUSDB_PATH")
    if not root:
        raise EvalError("no --root given and $MUSDB_PATH is not set")
    if not os.path.isdir(root):
        raise EvalError(f"--root {root}: no such folder")
    try:
        db = musdb.DB(root=root, subsets=subset, is_wav=is_wav, download=False)
    except Exception as e:  # musdb raises bare RuntimeErrors / OSErrors on odd layouts
        raise EvalError(f"--root {root}: cannot read it as MUSDB18: {e}") from None
    if not db.tracks:
        layout = ("<track>/mixture.wav and one WAV per source" if is_wav
                  else "<track>.stem.mp4 files; for WAV folders add --is-wav")
        raise EvalError(f"no tracks in {os.path.join(root, subset)}: expected {layout}")
    if not names:
        return list(db.tracks)
    by_name = {t.name: t for t in db.tracks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise EvalError(f"--tracks: no track named {', '.join(map(repr, unknown))} in "
                        f"{os.path.join(root, subset)}")
    return [by_name[n] for n in names]


# --------------------------------------------------------------------------- separation
def estimate_track(separator, audio: np.ndarray, rate: int,
                   chunking: ChunkConfig) -> Dict[str, np.ndarray]:
    """The separator's estimates of a track at the track's rate and length, by the separation
    path of ``xumx.test`` (:func:`xumx.inference.separate_audio`: resampled to the model's
    rate, the same chunks and cross-fades, resampled back).

    Shapes: audio (T, C) at ``rate`` -> {target: (T, C) float32}.
    """
    return inference.separate_audio(separator, np.asarray(audio, dtype=np.float32), rate,
                                    chunking)


def write_estimates(estimates: Dict[str, np.ndarray], folder: str, rate: int) -> None:
    """``<folder>/<target>.wav`` (32-bit float) for each estimate, all appearing together
    (:class:`xumx.audio.StemWriter`, the writer of ``xumx.test``)."""
    from .audio import write_stems
    write_stems({os.path.join(folder, f"{name}.wav"): audio for name, audio in estimates.items()},
                rate, "wav", "float")


def score_path(method: Method, subset: str, track_name: str) -> str:
    return os.path.join(method.eval_dir, subset, f"{track_name}.json")


def read_scores(path: str, targets: Sequence[str]) -> Optional[dict]:
    """The museval JSON at ``path`` if it is complete (every target has frames), else None."""
    try:
        with open(path) as f:
            data = json.load(f)
        found = {t["name"]: t["frames"] for t in data["targets"]}
        if all(found.get(t) for t in targets) and all(
                set(METRICS) <= set(fr["metrics"]) for t in targets for fr in found[t]):
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def score_track(track, estimates: Dict[str, np.ndarray], path: str):
    """Score estimates with museval v4 (1 s windows) and write the track's JSON atomically."""
    import museval
    store = museval.eval_mus_track(track, estimates)
    store.validate()
    files.write_text(path, store.json)
    return store


# --------------------------------------------------------------------------- identity
IDENTITY = "identity.json"

#: How each field of an identity is named in the message of a refused folder.
IDENTITY_WORDS = {"model_sha256": "the model file", "sidecar_sha256": "the model's .json sidecar",
                  "umx": "--umx-infer", "sample_rate": "the model's rate", "targets": "--targets",
                  "niter": "--niter", "softmask": "--softmask", "alpha": "--alpha",
                  "residual_model": "--residual-model", "chunk_dur": "--chunk-dur",
                  "overlap": "--overlap"}


def identity_of(model: str, umx: bool, separator, separation: SeparationConfig,
                chunking: ChunkConfig) -> dict:
    """What makes the model's scores: the SHA-256 of the model's files (the ``.h5``, or with
    ``umx`` each target's ``<target>.h5``; and their ``.json`` sidecars, None where absent), the
    rate the model runs at, the targets and Wiener settings of ``separation``, and the chunking.
    Only JSON types, so that it compares equal to itself read back."""
    from .pretrained import digest_of
    from .weights import sidecar_path
    paths = {t: os.path.join(model, f"{t}.h5") for t in separator.targets} if umx else {"": model}

    def digests(file_of):   # {target: SHA-256 or None} with umx, else the one SHA-256
        out = {k: digest_of(file_of(p), "sha256") if os.path.isfile(file_of(p)) else None
               for k, p in paths.items()}
        return out if umx else out[""]
    return {"model_sha256": digests(str), "sidecar_sha256": digests(sidecar_path), "umx": bool(umx),
            "sample_rate": int(separator.cfg.sample_rate), "targets": list(separator.targets),
            "niter": int(separation.niter), "softmask": bool(separation.softmask),
            "alpha": float(separation.alpha), "residual_model": bool(separation.residual_model),
            "chunk_dur": float(chunking.chunk_dur), "overlap": float(chunking.overlap)}


def _shown(value) -> str:
    if isinstance(value, str) and len(value) == 64:   # a SHA-256
        return f"SHA-256 {value[:12]}..."
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)


def check_identity(eval_dir: str, identity: dict, model: str) -> None:
    """Refuse ``eval_dir`` (EvalError, one line) when it holds model scores made by another
    identity (:func:`identity_of`), or model scores with no record of what made them; else
    record ``identity`` there (from then on its scores are this identity's)."""
    path = os.path.join(eval_dir, IDENTITY)
    advice = f"pick another --eval-dir, or delete {eval_dir} to score again"
    try:
        with open(path) as f:
            recorded = json.load(f)["identity"]
        if not isinstance(recorded, dict):
            raise TypeError("not a JSON object")
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{path}: cannot read the record of what made the scores of {eval_dir} "
                        f"({e}): {advice}") from None
    if recorded is None:
        scored = [p for p in glob.glob(os.path.join(glob.escape(eval_dir), "*", "*.json"))
                  if os.path.basename(os.path.dirname(p)) != BASELINE]
        if scored:
            raise EvalError(f"--eval-dir {eval_dir} holds scores with no record of the model and "
                            f"settings that made them ({IDENTITY}): {advice}")
        files.write_text(path, json.dumps({"identity": identity, "model": model}, indent=2) + "\n")
        return
    differs = [f"{IDENTITY_WORDS.get(key, key)}: {_shown(recorded.get(key))} there, "
               f"{_shown(value)} now"
               for key, value in identity.items() if recorded.get(key) != value]
    if differs:
        raise EvalError(f"--eval-dir {eval_dir} holds the scores of another model or other "
                        f"settings ({'; '.join(differs)}): {advice}")


# --------------------------------------------------------------------------- one track
def process_track(cfg: EvalConfig, chunking: ChunkConfig, separator, track,
                  targets: Sequence[str], methods: Sequence[Method],
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
            estimates = estimate_track(separator, audio, track.rate, chunking)
            if cfg.out_dir:
                write_estimates(estimates, os.path.join(cfg.out_dir, cfg.subset, track.name),
                                track.rate)
        phase(f"{track.name}: scoring {method.name} (museval)")
        score_track(track, {t: estimates[t] for t in targets}, path)
        status[method.name] = "scored"
    return status


_WORKER: dict = {}


def _worker_init(cfg: EvalConfig, chunking: ChunkConfig, load: LoadConfig,
                 separation: SeparationConfig, targets, methods) -> None:
    """Runs once in each worker process: open the data set and build the Separator once
    (``load.model`` is the parent's resolved path: workers download nothing)."""
    tracks = open_tracks(cfg.root, cfg.subset, cfg.is_wav)
    _WORKER.update(cfg=cfg, chunking=chunking, targets=targets, methods=methods,
                   tracks={t.name: t for t in tracks}, separator=eval_separator(load, separation))


def _worker_track(name: str):
    w = _WORKER
    try:
        return name, process_track(w["cfg"], w["chunking"], w["separator"], w["tracks"][name],
                                   w["targets"], w["methods"])
    except XumxError as e:  # sent back to the parent as one line
        raise EvalError(f"track {name!r}: {e}") from None


def eval_separator(load: LoadConfig, separation: SeparationConfig):
    """The Separator of ``load`` (:func:`xumx.separator.load_separator`), which must give
    museval at least two targets to score."""
    sep = load_separator(**dataclasses.asdict(load), separation=separation)
    if len(sep.targets) < 2:
        raise ConfigError("museval needs at least two targets to score (--targets)")
    return sep


# --------------------------------------------------------------------------- aggregation
def load_store(method: Method, subset: str, track_names: Sequence[str], targets: Sequence[str]):
    """A museval EvalStore of every frame of the named tracks' JSONs (missing ones skipped)."""
    import museval
    store = museval.EvalStore(frames_agg="median", tracks_agg="median")
    for name in track_names:
        data = read_scores(score_path(method, subset, name), targets)
        if data is not None:
            data = dict(data, targets=[t for t in data["targets"] if t["name"] in targets])
            store.add_track(museval.json2df(data, name))
    return store


def track_medians(store):
    """Per-track medians over frames: a DataFrame with columns track, target, metric, score."""
    return store.agg_frames_scores().reset_index()


def aggregate(store, targets: Sequence[str]):
    """The aggregate table: rows ``targets``, columns SDR/SIR/ISR/SAR (median of medians)."""
    table = store.agg_frames_tracks_scores().unstack()
    return table.reindex(index=list(targets), columns=list(METRICS))


def method_store(stores: Dict[str, object]):
    """A museval MethodStore holding each method's EvalStore under its name."""
    import museval
    ms = museval.MethodStore(frames_agg="median", tracks_agg="median")
    for name, store in stores.items():
        if len(store.df):
            ms.add_evalstore(store, name)
    return ms


def format_table(tables: Dict[str, object], nb_tracks: int) -> str:
    """The printed table: one block of targets x metrics per method, with the aggregation note."""
    lines = [f"Scores in dB over {nb_tracks} track(s) ({AGGREGATION_NOTE})"]
    for name, table in tables.items():
        lines.append(f"\n{name}")
        lines.append("target".ljust(10) + "".join(m.rjust(9) for m in table.columns))
        for target, row in table.iterrows():
            lines.append(target.ljust(10) + "".join(f"{v:9.2f}" for v in row.values))
    return "\n".join(lines)


def sdr_comparison(tables: Dict[str, object]) -> str:
    """SDR per target, one column per method; with two methods, the gain of the first."""
    names = list(tables)
    width = max([10] + [len(n) + 2 for n in names])
    gain = len(names) == 2
    sdr = {n: tables[n]["SDR"] for n in names}
    rows = [(t, [sdr[n][t] for n in names]) for t in sdr[names[0]].index]
    rows.append(("average", [float(np.nanmean(sdr[n].values)) for n in names]))
    lines = ["SDR (dB)".ljust(10) + "".join(n.rjust(width) for n in names)
             + ("gain".rjust(8) if gain else "")]
    for label, values in rows:
        lines.append(label.ljust(10) + "".join(f"{v:{width}.2f}" for v in values)
                     + (f"{values[0] - values[1]:+8.2f}" if gain else ""))
    return "\n".join(lines)


def results_csv(tables: Dict[str, object]) -> str:
    """CSV of the aggregate tables: method,target,SDR,SIR,ISR,SAR."""
    rows = ["method,target," + ",".join(METRICS)]
    for name, table in tables.items():
        for target, row in table.iterrows():
            rows.append(f"{name},{target}," + ",".join(f"{v:.4f}" for v in row.values))
    return "\n".join(rows) + "\n"


def plot_sdr(stores: Dict[str, object], targets: Sequence[str], path: str) -> None:
    """Boxplots of per-track SDR (median over frames), per target, one box per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n, s in stores.items() if len(s.df)]
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(targets) * max(1, len(names)) / 2, 4.0))
    width = 0.8 / max(1, len(names))
    colours = plt.get_cmap("tab10")
    for j, name in enumerate(names):
        med = track_medians(stores[name])
        sdr = med[med["metric"] == "SDR"]
        data = [sdr[sdr["target"] == t]["score"].dropna().values for t in targets]
        pos = [i + (j - (len(names) - 1) / 2) * width for i in range(len(targets))]
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                        showfliers=True, medianprops={"color": "black"})
        for box in bp["boxes"]:
            box.set_facecolor(colours(j))
            box.set_alpha(0.6)
        ax.plot([], [], "s", color=colours(j), alpha=0.6, label=name)
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(targets)
    ax.set_ylabel("SDR (dB), median over frames of each track")
    nb_tracks = max(stores[n].df["track"].nunique() for n in names) if names else 0
    ax.set_title(f"BSSEval v4 SDR per track ({nb_tracks} tracks)")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    try:
        with files.replacing(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


@dataclass
class Results:
    """{method name: aggregate table (targets x metrics DataFrame)} and how many tracks."""
    tables: Dict[str, object]
    nb_tracks: int


def summarize(methods: Sequence[Method], subset: str, track_names: Sequence[str],
              targets: Sequence[str], eval_dir: str) -> Results:
    """Aggregate the JSONs of the named tracks; write scores.csv, scores.pandas and sdr.png."""
    stores = {m.name: load_store(m, subset, track_names, targets) for m in methods}
    stores = {n: s for n, s in stores.items() if len(s.df)}
    if not stores:
        raise EvalError(f"no scores found under {eval_dir} for the selected tracks")
    tables = {n: aggregate(s, targets) for n, s in stores.items()}
    plot_sdr(stores, targets, os.path.join(eval_dir, "sdr.png"))
    files.write_text(os.path.join(eval_dir, "scores.csv"), results_csv(tables))
    ms = method_store(stores)
    with files.replacing(os.path.join(eval_dir, "scores.pandas")) as tmp:
        ms.df.to_pickle(tmp, compression=None)
    nb_tracks = max(s.df["track"].nunique() for s in stores.values())
    return Results(tables, nb_tracks)


# --------------------------------------------------------------------------- the whole run
def methods_of(cfg: EvalConfig, model: str) -> List[Method]:
    """The model's method (named after its file), then the baseline with ``cfg.baseline``."""
    name = os.path.splitext(os.path.basename(os.path.normpath(model)))[0] or "model"
    out = [Method(name, cfg.eval_dir)]
    if cfg.baseline:
        out.append(Method(BASELINE, os.path.join(cfg.eval_dir, BASELINE), baseline=True))
    return out


def evaluate(cfg: EvalConfig, chunking: ChunkConfig = ChunkConfig(), load: LoadConfig = LoadConfig(),
             separation: SeparationConfig = SeparationConfig(), progress: bool = True,
             log=None) -> Results:
    """Separate (the model of ``load``, by default the published weights, in the chunks of
    ``chunking``) and score the tracks of ``cfg``, then aggregate (see the module docstring).
    Raises XumxError subclasses; EvalError for an eval folder holding other scores
    (:func:`check_identity`)."""
    from .pretrained import model_path
    from .progress import progress_bar
    log = log or (lambda msg: print(msg, file=sys.stderr))
    tracks = open_tracks(cfg.root, cfg.subset, cfg.is_wav, cfg.tracks)
    load = replace(load, model=model_path(load.model, load.umx, quiet=not progress))
    separator = eval_separator(load, separation)
    targets = tuple(separator.targets)
    known = set(tracks[0].sources)
    missing = [t for t in targets if t not in known]
    if missing:
        raise EvalError(f"the data set has no reference for target(s) {missing}")
    check_identity(cfg.eval_dir, identity_of(load.model, load.umx, separator, separation, chunking),
                   load.model)
    methods = methods_of(cfg, load.model)
    pending = [t for t in tracks if any(
        read_scores(score_path(m, cfg.subset, t.name), targets) is None for m in methods)]
    if len(pending) < len(tracks):
        log(f"{len(tracks) - len(pending)} of {len(tracks)} track(s) already scored in "
            f"{cfg.eval_dir}: skipped")
    if not pending:
        return summarize(methods, cfg.subset, [t.name for t in tracks], targets, cfg.eval_dir)
    with progress_bar(len(pending), "tracks", not progress, "track") as bar:
        if cfg.cores == 1 or len(pending) <= 1:
            for track in pending:
                process_track(cfg, chunking, separator, track, targets, methods,
                              bar.set_postfix_str)
                bar.update()
        else:
            del separator  # each worker builds its own
            ctx = multiprocessing.get_context("spawn")
            worker_cfg = replace(cfg, tracks=None)
            processes = min(cfg.cores, len(pending))
            bar.set_postfix_str(f"separating and scoring in {processes} processes")
            with ctx.Pool(processes, initializer=_worker_init,
                          initargs=(worker_cfg, chunking, load, separation, targets,
                                    methods)) as pool:
                for name, _ in pool.imap_unordered(_worker_track, [t.name for t in pending]):
                    bar.set_postfix_str(f"{name}: scored")
                    bar.update()
    return summarize(methods, cfg.subset, [t.name for t in tracks], targets, cfg.eval_dir)
