"""``python -m xumx.demo --workdir DIR``: the whole job, offline, on a CPU.

1. ``xumx.synth``  generates a small MUSDB-like WAV data set in DIR/data,
2. ``xumx.train``  trains a small X-UMX on it with recipes/demo.yaml (DIR/model/best_xumx.h5,
   training.png),
3. ``xumx.test``   separates one test song into DIR/stems/<track name>/,
4. ``xumx.eval``   scores the test set (DIR/scores) together with the mixture-as-estimate baseline,

then prints SDR per target for the trained model next to the baseline (eval's own table is
not shown, so the scores are printed once). Each step is the entry module run as a subprocess
with its documented flags, printed as a command that can be pasted into a shell; a step that
fails stops the demo with one line naming it and the step's own error (which is not printed
twice). nnabla, which training needs, is checked before any step runs. Steps already
completed in DIR are not run again; a training step that was stopped resumes from its
checkpoint.
"""
import glob
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Sequence

from .config import DEFAULT_SOURCES
from .modelfiles import BEST_NAME
from .errors import DemoError

#: The training recipe of the demo (recipes/demo.yaml: the small model and its budget).
RECIPE = "demo"
EVAL_CORES = 2          # museval costs several seconds per track and method: score two at a time

DONE = ".done"          # marker written in a step's output folder once the step succeeded


@dataclass(frozen=True)
class Step:
    name: str
    argv: List[str]      # arguments after ``python``
    output: str          # folder that holds the step's results (and its DONE marker)
    stdout: bool = True  # pass the step's standard output through (eval's table: not shown)


def paths(workdir: str) -> dict:
    w = os.path.abspath(workdir)
    return {"data": os.path.join(w, "data"), "model": os.path.join(w, "model"),
            "stems": os.path.join(w, "stems"), "estimates": os.path.join(w, "estimates"),
            "scores": os.path.join(w, "scores")}


def test_song(data_dir: str) -> str:
    """The mixture of the first test track (by name) of the generated data set."""
    songs = sorted(glob.glob(os.path.join(data_dir, "test", "*", "mixture.wav")))
    if not songs:
        raise DemoError(f"step 'test': no test song in {os.path.join(data_dir, 'test')}")
    return songs[0]


def plan(workdir: str) -> List[Step]:
    """The steps, with the flags of each entry module (the test song is resolved when run)."""
    from .recipes import recipe_path, resumable, run_files
    p = paths(workdir)
    model = os.path.join(p["model"], BEST_NAME)
    train = ["--config", recipe_path(RECIPE), "--root", p["data"], "--is-wav", "--output", p["model"]]
    if resumable(p["model"]):      # a demo stopped during training goes on from its checkpoint
        train += ["--resume", p["model"]]
    elif run_files(p["model"]):    # ... or, stopped before a checkpoint, starts the run again
        train += ["--force"]
    return [
        Step("synth", ["-m", "xumx.synth", "--out", p["data"]], p["data"]),
        Step("train", ["-m", "xumx.train", *train], p["model"]),
        Step("test", ["-m", "xumx.test", "--inputs", "{test_song}", "--model", model,
                      "--outdir", p["stems"]], p["stems"]),
        Step("eval", ["-m", "xumx.eval", "--model", model, "--root", p["data"], "--is-wav",
                      "--outdir", p["estimates"], "--evaldir", p["scores"], "--baseline",
                      "--cores", str(EVAL_CORES)],
             p["scores"], stdout=False),
    ]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


#: The error line of an entry module (:mod:`xumx.cli`): the demo's own line repeats its cause.
_STEP_ERROR = re.compile(rb"^xumx\.\w+: error: ")


def run_step(name: str, argv: Sequence[str], echo=True, stdout=True) -> None:
    """Run ``python argv...``; its stderr is passed through (unless not ``echo``), except an
    entry module's error line, which the DemoError of a failed step carries instead.
    ``stdout`` False: the step's standard output is discarded."""
    cmd = [sys.executable, *argv]
    try:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE,
                                stdout=None if stdout else subprocess.DEVNULL)
    except OSError as e:
        raise DemoError(f"step '{name}' could not start: {e}") from None
    tail, pending, held = b"", b"", b""

    def show(data: bytes):
        if echo and data:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()
    while True:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        tail = (tail + chunk)[-4096:]
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if _STEP_ERROR.match(line):
                held = line
            else:
                show(line + b"\n")
        cut = pending.rfind(b"\r") + 1   # a progress bar's redraws: shown as they come
        show(pending[:cut])
        pending = pending[cut:]
    show(pending)
    rc = proc.wait()
    if rc != 0:
        why = _STEP_ERROR.sub(b"", held).decode("utf-8", "replace").strip() if held else \
            _last_line(tail.decode("utf-8", "replace")) or "no message"
        raise DemoError(f"step '{name}' failed (exit {rc}): {why}")
    show(held + b"\n" if held else b"")


def run_steps(workdir: str, echo=True, log=print) -> float:
    """Run every step not yet done in ``workdir``; returns the wall time in seconds."""
    start = time.time()
    p = paths(workdir)
    for step in plan(workdir):
        marker = os.path.join(step.output, DONE)
        if os.path.exists(marker):
            log(f"[demo] {step.name}: already done in {step.output}, skipped")
            continue
        argv = [a.replace("{test_song}", test_song(p["data"])) if "{test_song}" in a else a
                for a in step.argv]
        log(f"[demo] {step.name}: {shlex.join(['python', *argv])}")
        t0 = time.time()
        run_step(step.name, argv, echo, step.stdout)
        os.makedirs(step.output, exist_ok=True)
        open(marker, "w").close()
        log(f"[demo] {step.name}: done in {time.time() - t0:.0f} s")
    return time.time() - start


def comparison(scores_dir: str, subset: str = "test") -> str:
    """SDR per target (median over frames, then tracks) of the model next to the baseline."""
    from .evaluation import AGGREGATION_NOTE, BASELINE, Method, aggregate, load_store, sdr_comparison
    names = sorted(os.path.splitext(os.path.basename(f))[0]
                   for f in glob.glob(os.path.join(scores_dir, subset, "*.json")))
    if not names:
        raise DemoError(f"step 'eval': no scores in {os.path.join(scores_dir, subset)}")
    columns = {"trained X-UMX": Method("model", scores_dir),
               "mixture baseline": Method(BASELINE, os.path.join(scores_dir, BASELINE),
                                          baseline=True)}
    targets = list(DEFAULT_SOURCES)
    tables = {}
    for label, method in columns.items():
        store = load_store(method, subset, names, targets)
        if not len(store.df):
            raise DemoError(f"step 'eval': no complete scores for the {label} in {method.eval_dir}")
        tables[label] = aggregate(store, targets)
    model, base = (tables[k]["SDR"] for k in columns)
    beaten = [t for t in targets if model[t] > base[t]]
    return "\n".join([f"On {len(names)} test track(s) ({AGGREGATION_NOTE}):",
                      sdr_comparison(tables),
                      f"the model beats the baseline on {len(beaten)} of {len(targets)} targets"])


def report(workdir: str) -> str:
    """The closing summary: the comparison table and where the stems and plots are."""
    p = paths(workdir)
    stems = sorted(glob.glob(os.path.join(p["stems"], "**", "*.wav"), recursive=True))
    return "\n".join([
        comparison(p["scores"]), "",
        "stems of one test song: " + (", ".join(stems) if stems else p["stems"]),
        f"training curves: {os.path.join(p['model'], 'training.png')}",
        f"SDR per track:   {os.path.join(p['scores'], 'sdr.png')}",
        f"scores:          {os.path.join(p['scores'], 'scores.csv')}",
    ])


def main(argv=None) -> int:
    from .cli import run
    return run("demo", _demo, argv, "completed steps are kept, run again to go on")


def _demo(argv) -> int:
    from .parsing import parse
    (cfg,) = parse("demo", argv)
    if any(s.name == "train" and not os.path.exists(os.path.join(s.output, DONE))
           for s in plan(cfg.workdir)):   # checked before the data set is written
        from .training.backend import require_nnabla
        require_nnabla("the demo (its training step)")
    seconds = run_steps(cfg.workdir)
    print()
    print(report(cfg.workdir))
    print(f"\nwall time: {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
