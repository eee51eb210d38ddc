"""Reporting scores: museval stores of the per-track JSONs, the SiSEC aggregation (median over
the frames of a track, then over tracks), the printed tables, scores.csv, scores.pandas and
sdr.png."""
import os
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from .. import files
from ..errors import EvalError

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


def score_path(method: Method, subset: str, track_name: str) -> str:
    return os.path.join(method.eval_dir, subset, f"{track_name}.json")


def read_scores(path: str, targets: Sequence[str]):
    """The museval JSON at ``path`` if it is complete (every target has frames), else None."""
    import json
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


