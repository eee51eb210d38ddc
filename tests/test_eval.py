"""xumx.eval on a generated two-track MUSDB-like WAV data set and a tiny 8 kHz model.

museval is slow (several seconds per second of audio with four targets), so the tracks are
1 s long and most runs score two targets.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from xumx import eval as eval_cli
from xumx import evaluation, files
from xumx.errors import EvalError
from xumx.evaluation import identity as identity_mod
from xumx.weights import save_model
from seeded import random_arrays

RATE = 44100
TRACKS = ("Alpha - First", "Beta - Second")
SOURCES = ("bass", "drums", "vocals", "other")
TARGETS = ("vocals", "drums")
SECONDS = 1.0


def make_musdb(root, names=TRACKS, seconds=SECONDS, subset="test"):
    """The musdb is_wav layout: each source a sine at its own pitch (whole cycles per second,
    so the sources are orthogonal over each 1 s museval window) plus a little noise, all of the
    same power; the mixture is their sum."""
    import soundfile as sf
    t = np.arange(int(seconds * RATE)) / RATE
    for i, name in enumerate(names):
        r = np.random.RandomState(i)
        folder = os.path.join(root, subset, name)
        os.makedirs(folder)
        mix = 0
        for j, source in enumerate(SOURCES):
            x = 0.2 * np.sin(2 * np.pi * (70 + 300 * j * (i + 1)) * t)[:, None] * [1.0, 0.7]
            x = x + 0.02 * r.standard_normal(x.shape)
            sf.write(os.path.join(folder, f"{source}.wav"), x, RATE, subtype="FLOAT")
            mix = mix + x
        sf.write(os.path.join(folder, "mixture.wav"), mix, RATE, subtype="FLOAT")
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    root = make_musdb(base / "musdb")
    cfg = tiny_config()          # 8 kHz: evaluation resamples 44.1 kHz tracks to it and back
    model = str(base / "tiny.h5")
    save_model(model, cfg, random_arrays(cfg, seed=3))
    return {"base": base, "root": root, "model": model}


def run_eval(data, evaldir, *extra, outdir=None):
    argv = ["--model", data["model"], "--root", data["root"], "--is-wav",
            "--evaldir", str(evaldir), "--targets", *TARGETS, *extra]
    if outdir:
        argv += ["--out-dir", str(outdir)]
    return eval_cli.main(argv)


@pytest.fixture(scope="module")
def scored(data):
    """One full run (cores 1, with the baseline), shared by the tests below."""
    evaldir, outdir = data["base"] / "scores", data["base"] / "estimates"
    assert run_eval(data, evaldir, "--baseline", outdir=outdir) == 0
    return evaldir, outdir


def sdr_by_track(evaldir, subset="test"):
    """{(track, target): median SDR over frames}, read straight from the JSON files."""
    out = {}
    for name in TRACKS:
        with open(os.path.join(evaldir, subset, f"{name}.json")) as f:
            for t in json.load(f)["targets"]:
                out[name, t["name"]] = np.nanmedian([fr["metrics"]["SDR"] for fr in t["frames"]])
    return out


def test_eval_writes_estimates_scores_table_and_plot(data, scored):
    import museval
    import pandas as pd
    import soundfile as sf
    evaldir, outdir = scored
    for name in TRACKS:
        for target in TARGETS:
            audio, rate = sf.read(os.path.join(outdir, "test", name, f"{target}.wav"))
            assert rate == RATE and audio.shape == (int(SECONDS * RATE), 2)  # track rate and length
            assert np.abs(audio).max() > 1e-3
    # the per-track JSONs are in the layout museval's own readers use
    store = museval.EvalStore()
    store.add_eval_dir(str(evaldir))
    assert set(store.df["track"]) == set(TRACKS) and set(store.df["target"]) == set(TARGETS)
    base = museval.EvalStore()
    base.add_eval_dir(str(evaldir / "mixture"))
    assert set(base.df["track"]) == set(TRACKS)
    # the CSV is the median over tracks of the per-track medians over frames
    rows = [line.split(",") for line in open(evaldir / "scores.csv").read().splitlines()]
    assert rows[0] == ["method", "target", "SDR", "SIR", "ISR", "SAR"]
    csv = {(r[0], r[1]): float(r[2]) for r in rows[1:]}
    assert {m for m, _ in csv} == {"tiny", "mixture"}
    per_track = sdr_by_track(evaldir)
    for target in TARGETS:
        want = np.median([per_track[name, target] for name in TRACKS])
        assert csv["tiny", target] == pytest.approx(want, abs=1e-3)
    # known answer: the mixture of four equal-power, mutually orthogonal sources scored as one
    # of them has SDR = 10 log10(1/3) = -4.77 dB
    for target in TARGETS:
        assert csv["mixture", target] == pytest.approx(-10 * np.log10(3), abs=0.1)
    assert any(abs(csv["tiny", t] - csv["mixture", t]) > 0.1 for t in TARGETS)
    df = pd.read_pickle(evaldir / "scores.pandas")
    assert set(df["method"]) == {"tiny", "mixture"} and set(df["metric"]) == {"SDR", "SIR", "ISR", "SAR"}
    with open(evaldir / "sdr.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(evaldir) if p.endswith(files.SUFFIX)]


def test_scores_are_of_each_estimate_against_its_own_reference(data, tmp_path, monkeypatch):
    """Known answer: each target's estimate is its own reference plus a tenth of the bass (an
    orthogonal source of the same power), so its SDR is 10 log10(1 / 0.1^2) = 20 dB. An
    estimate scored against another target's reference (targets swapped or misnamed on the
    way to museval) scores far below 0 dB."""
    import soundfile as sf
    from xumx.evaluation import run as running
    stems = {}
    for name in TRACKS:
        folder = os.path.join(data["root"], "test", name)
        stems[name] = {s: sf.read(os.path.join(folder, f"{s}.wav"), dtype="float32")[0]
                       for s in SOURCES + ("mixture",)}

    def known(separator, audio, rate):
        gap = {n: np.abs(stems[n]["mixture"] - audio).max() for n in TRACKS}
        name = min(gap, key=gap.get)
        assert gap[name] < 0.01, gap   # the mixture as musdb reads it (16-bit steps)
        return {t: stems[name][t] + 0.1 * stems[name]["bass"] for t in separator.stems}

    monkeypatch.setattr(running, "estimate_track", known)
    assert run_eval(data, tmp_path / "known") == 0
    sdr = sdr_by_track(tmp_path / "known")
    assert set(sdr) == {(n, t) for n in TRACKS for t in TARGETS}
    for key, value in sdr.items():
        assert value == pytest.approx(20.0, abs=1.0), (key, value)


def test_rerun_skips_scored_tracks_and_resumes_a_killed_run(data, scored, monkeypatch, capsys):
    evaldir, _ = scored
    calls = []
    from xumx.evaluation import run as running
    real = running.estimate_track
    monkeypatch.setattr(running, "estimate_track", lambda *a: calls.append(1) or real(*a))
    jsons = [evaldir / "test" / f"{n}.json" for n in TRACKS]
    mtimes = [os.stat(p).st_mtime_ns for p in jsons]
    before = sdr_by_track(evaldir)
    assert run_eval(data, evaldir, "--baseline") == 0
    assert calls == [] and [os.stat(p).st_mtime_ns for p in jsons] == mtimes
    assert "2 of 2 track(s) already scored" in capsys.readouterr().err
    # a run killed after the first track: its JSON is there, the second is not (or truncated)
    with open(jsons[1], "w") as f:
        f.write('{"targets": [')
    assert run_eval(data, evaldir) == 0
    assert len(calls) == 1 and os.stat(jsons[0]).st_mtime_ns == mtimes[0]
    after = sdr_by_track(evaldir)
    assert after.keys() == before.keys()
    assert all(after[k] == pytest.approx(before[k], abs=1e-6) for k in before)


def test_cores_2_gives_the_same_scores_as_cores_1(data, scored, tmp_path):
    evaldir, _ = scored
    assert run_eval(data, tmp_path / "par", "--cores", "2") == 0
    one, two = sdr_by_track(evaldir), sdr_by_track(tmp_path / "par")
    assert one.keys() == two.keys() and len(one) == len(TRACKS) * len(TARGETS)
    for k in one:
        assert two[k] == pytest.approx(one[k], abs=1e-4)


def test_tracks_selects_by_name(data, tmp_path, capsys):
    args = ["--model", data["model"], "--root", data["root"], "--is-wav", "--evaldir",
            str(tmp_path), "--baseline", "--targets", *TARGETS]
    assert eval_cli.main(args + ["--tracks", TRACKS[1]]) == 0
    assert os.listdir(tmp_path / "mixture" / "test") == [f"{TRACKS[1]}.json"]
    assert "over 1 track(s)" in capsys.readouterr().out
    assert eval_cli.main(args + ["--tracks", "Nobody - Nothing"]) != 0
    assert "Nobody - Nothing" in capsys.readouterr().err


def test_resample_round_trip_keeps_length_and_band_limited_signal():
    from oracles import resample
    t = np.arange(RATE) / RATE
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 300 * t)], axis=1)
    y = resample(x, RATE, 8000)
    assert y.shape == (8000, 2)
    z = resample(y, 8000, RATE, length=RATE)
    assert z.shape == x.shape
    assert np.max(np.abs(z - x)[2000:-2000]) < 1e-2


def offline(monkeypatch, tmp_path):
    """No network: every download fails at once; an empty weights cache."""
    import urllib.error
    import urllib.request

    def refuse(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_bad_input_is_one_line_and_nonzero(data, tmp_path, capsys, monkeypatch):
    def run(*argv):
        return eval_cli.main(["--evaldir", str(tmp_path / "s"), *argv])
    assert run("--model", data["model"], "--root", str(tmp_path / "missing"), "--is-wav") != 0
    assert "no such folder" in one_error_line(capsys)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    assert run("--model", data["model"], "--root", str(tmp_path / "empty"), "--is-wav") != 0
    assert "no tracks" in one_error_line(capsys)
    bad = tmp_path / "bad.h5"
    bad.write_text("not an h5 file")
    assert run("--model", str(bad), "--root", data["root"], "--is-wav") != 0
    assert str(bad) in one_error_line(capsys)
    offline(monkeypatch, tmp_path)   # without --model: the published weights, which it cannot fetch
    assert run("--root", data["root"], "--is-wav") == 1
    assert "cannot download the published X-UMX weights" in one_error_line(capsys)
    assert run("--model", data["model"], "--root", data["root"], "--is-wav", "--cores", "0") != 0
    assert "--cores" in one_error_line(capsys)
    assert run("--model", data["model"], "--root", data["root"], "--is-wav",
               "--targets", "vocals") != 0
    assert "two targets" in one_error_line(capsys)
    assert run("--model", data["model"], "--root", data["root"], "--is-wav",
               "--targets", "vocals", "piano") != 0
    assert "piano" in one_error_line(capsys)
    assert not (tmp_path / "s" / "scores.csv").exists()
    # as a command, stderr is exactly that one line
    out = subprocess.run([sys.executable, "-m", "xumx.eval", "--model", str(bad), "--root",
                          data["root"], "--is-wav"], capture_output=True, text=True)
    assert out.returncode != 0 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"xumx.eval: error: cannot load the model: {bad}: ")


def test_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "xumx.eval", "--help"], capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0
    for flag in ("--evaldir", "--eval-dir", "--outdir", "--out-dir", "--cores", "--chunk-dur",
                 "--tracks", "--baseline", "--subset", "--is-wav"):
        assert flag in out.stdout


def test_readme_flag_table_matches_the_parser():
    """docs/flags.md's table of xumx.eval (the README links it) has the parser's flags, their
    defaults and their help."""
    import argparse
    from xumx.parsing import build_parser
    from conftest import flag_rows
    documented = flag_rows("eval")
    actions = [a for a in build_parser("eval")._actions
               if a.dest not in ("help", "version") and a.help != argparse.SUPPRESS]
    assert set(documented) == {tuple(a.option_strings) for a in actions}
    for a in actions:
        default, meaning = documented[tuple(a.option_strings)]
        assert a.help in (meaning, f"{meaning} (default: {default})"), a.option_strings


def test_tracks_are_separated_in_the_chunks_of_xumx_test(data, tmp_path, monkeypatch):
    """Tracks go through xumx.test's separation path with its chunking rule (--chunk-dur,
    --overlap): the network sees chunks of at most --chunk-dur."""
    from xumx.separator import Separator
    sizes = []
    real = Separator._separate_chunks
    monkeypatch.setattr(Separator, "_separate_chunks",
                        lambda self, xs: sizes.extend(x.shape[0] for x in xs) or real(self, xs))
    argv = ["--model", data["model"], "--root", data["root"], "--is-wav", "--targets", *TARGETS,
            "--tracks", TRACKS[0]]
    assert eval_cli.main(argv + ["--evaldir", str(tmp_path / "a"), "--chunk-dur", "0"]) == 0
    assert len(sizes) == 1
    whole = sizes[0]
    sizes.clear()
    assert eval_cli.main(argv + ["--evaldir", str(tmp_path / "b"), "--chunk-dur", "0.5",
                                 "--overlap", "0.125"]) == 0
    rate = Separator.load(data["model"]).sample_rate
    assert len(sizes) >= 3 and max(sizes) <= rate // 2 and sum(sizes) > whole


# ----------------------------------------------------------------- what made the scores
def copy_model(data, path):
    """A copy of the tiny model (and its sidecar) under another name: the same content."""
    import shutil
    from xumx.weights import sidecar_path
    shutil.copyfile(data["model"], path)
    shutil.copyfile(sidecar_path(data["model"]), sidecar_path(str(path)))
    return str(path)


def test_scores_of_another_model_or_settings_are_refused(data, scored, tmp_path, capsys):
    """Issue 15: a second model in the same --eval-dir got the first one's scores under its
    name. Now the folder records what made its scores, and anything else is refused."""
    evaldir, _ = scored
    with open(evaldir / "identity.json") as f:
        recorded = json.load(f)["identity"]
    assert recorded["model_sha256"] == files_sha256(data["model"])
    assert recorded["targets"] == list(TARGETS) and recorded["chunk_dur"] == 30.0
    csv = (evaldir / "scores.csv").read_bytes()
    other = str(tmp_path / "other.h5")
    cfg = tiny_config()
    save_model(other, cfg, random_arrays(cfg, seed=4))
    refused = {("--model", other): "the model file",
               ("--niter", "2"): "--niter: 1 there, 2 now",
               ("--chunk-dur", "0.5", "--overlap", "0.1"): "--chunk-dur: 30.0 there, 0.5 now",
               ("--softmask",): "--softmask: False there, True now",
               ("--targets", "vocals", "drums", "bass"):   # the last --targets counts
                   "--targets: vocals drums there, vocals drums bass now"}
    for extra, words in refused.items():
        argv = ["--root", data["root"], "--is-wav", "--evaldir", str(evaldir), "--targets",
                *TARGETS, "--model", data["model"], *extra]
        assert eval_cli.main(argv) == 1, extra
        line = one_error_line(capsys)
        assert line.startswith(f"xumx.eval: error: --eval-dir {evaldir} holds the scores of "
                               f"another model or other settings"), line
        assert words in line and "pick another --eval-dir" in line, line
    assert (evaldir / "scores.csv").read_bytes() == csv
    # the other model in its own folder is scored, and scores differently
    assert eval_cli.main(["--model", other, "--root", data["root"], "--is-wav", "--evaldir",
                          str(tmp_path / "s2"), "--targets", *TARGETS]) == 0
    assert sdr_by_track(tmp_path / "s2") != pytest.approx(sdr_by_track(evaldir), abs=1e-3)


def files_sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_same_model_under_another_name_reuses_the_scores(data, scored, monkeypatch, capsys):
    evaldir, _ = scored
    calls = []
    monkeypatch.setattr(evaluation, "estimate_track", lambda *a: calls.append(1))
    same = copy_model(data, data["base"] / "renamed.h5")
    assert eval_cli.main(["--model", same, "--root", data["root"], "--is-wav", "--evaldir",
                          str(evaldir), "--targets", *TARGETS, "--tracks", TRACKS[0]]) == 0
    assert calls == [] and "1 of 1 track(s) already scored" in capsys.readouterr().err


def test_an_eval_dir_with_scores_and_no_record_is_refused(data, scored, tmp_path, capsys):
    import shutil
    evaldir, _ = scored
    old = tmp_path / "old"
    shutil.copytree(evaldir / "test", old / "test")     # scores of an older xumx: no record
    assert run_eval(data, old) == 1
    line = one_error_line(capsys)
    assert f"--eval-dir {old} holds scores with no record" in line and "identity.json" in line
    assert not (old / "identity.json").exists()
    # a folder of baseline scores only: those are the mixture's whatever the model, so kept
    identity = {"model_sha256": "0" * 64}
    shutil.copytree(evaldir / "mixture", tmp_path / "base" / "mixture")
    identity_mod.check_identity(str(tmp_path / "base"), identity, "m.h5")
    identity_mod.check_identity(str(tmp_path / "base"), identity, "m.h5")     # the same: fine
    with pytest.raises(EvalError, match="the model file: SHA-256 000000000000... "
                                                   "there, SHA-256 111111111111... now"):
        identity_mod.check_identity(str(tmp_path / "base"), {"model_sha256": "1" * 64}, "m.h5")
    (tmp_path / "base" / "identity.json").write_text("{not json")
    with pytest.raises(EvalError, match="cannot read the record"):
        identity_mod.check_identity(str(tmp_path / "base"), identity, "m.h5")


def test_without_model_the_published_weights_are_scored(data, tmp_path, monkeypatch, capsys):
    """Issue 15 item 9: as in xumx.test, no --model means the published weights (here a
    stand-in placed in the cache: the real download is impossible offline)."""
    from xumx import pretrained
    cache = tmp_path / "cache"
    cache.mkdir()
    published = copy_model(data, cache / pretrained.FILENAME)
    monkeypatch.setattr(pretrained, "published_model", lambda **kw: published)
    evaldir = tmp_path / "s"
    argv = ["--root", data["root"], "--is-wav", "--evaldir", str(evaldir), "--targets", *TARGETS,
            "--tracks", TRACKS[0]]
    assert eval_cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "\nx-umx\n" in out   # the table of the method named after the weights
    with open(evaldir / "identity.json") as f:
        assert json.load(f)["identity"]["model_sha256"] == files_sha256(published)
    # its scores are the published weights', whichever way they are named
    assert eval_cli.main(argv + ["--model", published]) == 0
    assert "1 of 1 track(s) already scored" in capsys.readouterr().err


def test_progress_says_separating_and_scoring_per_track(data, tmp_path, capsys):
    """Issue 15 item 12: with stderr not a terminal, one plain line per track and phase (no
    bar frames); museval's scoring is named, as it is the long part."""
    assert eval_cli.main(["--model", data["model"], "--root", data["root"], "--is-wav",
                          "--evaldir", str(tmp_path), "--targets", *TARGETS, "--baseline"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    name = os.path.splitext(os.path.basename(data["model"]))[0]
    want = ["tracks: 2 track(s)"] + [
        f"tracks {i + 1}/2: {track}: {phase}" for i, track in enumerate(TRACKS)
        for phase in ("separating", f"scoring {name} (museval)", "scoring mixture (museval)")]
    assert err.splitlines() == want


def test_identity_of_a_umx_folder_hashes_each_target_file(tmp_path):
    """--umx-infer: the model is a folder of <target>.h5; each file read is in the identity."""
    from types import SimpleNamespace
    from xumx.config import ChunkConfig, SeparationConfig
    for name in ("vocals", "drums", "bass"):
        (tmp_path / f"{name}.h5").write_bytes(name.encode())
    (tmp_path / "vocals.json").write_text("{}")
    from xumx.modelfiles import ModelFiles
    sep = SimpleNamespace(targets=("vocals", "drums"), sample_rate=44100)

    def identity():
        from xumx import digests
        digests.forget()
        model = ModelFiles.resolve(str(tmp_path), True, sep.targets)
        return identity_mod.identity_of(model, sep, SeparationConfig(), ChunkConfig())
    first = identity()
    assert first["model_sha256"] == {t: files_sha256(tmp_path / f"{t}.h5") for t in sep.targets}
    assert first["sidecar_sha256"] == {"vocals": files_sha256(tmp_path / "vocals.json"),
                                       "drums": None}
    (tmp_path / "bass.h5").write_bytes(b"not read")       # not a target: no part of it
    assert identity() == first
    (tmp_path / "drums.h5").write_bytes(b"retrained")
    second = identity()
    assert second["model_sha256"]["drums"] != first["model_sha256"]["drums"]
    assert second["model_sha256"]["vocals"] == first["model_sha256"]["vocals"]
    assert json.loads(json.dumps(second)) == second   # compares equal once recorded


def test_a_bad_command_line_exits_2(data, tmp_path, capsys, monkeypatch):
    """Issue 22 item 10: no --root, an unknown --tracks name or --targets name are a bad
    command line (2), as everywhere; a --root that is not there is a failed run (1)."""
    monkeypatch.delenv("MUSDB_PATH", raising=False)
    base = ["--model", data["model"], "--evaldir", str(tmp_path / "s")]
    assert eval_cli.main(base) == 2
    assert one_error_line(capsys).startswith("xumx.eval: error: no --root")
    base += ["--root", data["root"], "--is-wav"]
    assert eval_cli.main(base + ["--tracks", "Nobody - Nothing"]) == 2
    assert "Nobody - Nothing" in one_error_line(capsys)
    assert eval_cli.main(base + ["--targets", "vocals,piano"]) == 2
    assert "['piano']" in one_error_line(capsys)
    assert eval_cli.main(base[:-3] + ["--root", str(tmp_path / "missing")]) == 1
    assert "no such folder" in one_error_line(capsys)


def test_scores_name_the_run_folder_or_name_and_quiet_prints_nothing(data, tmp_path, capsys):
    """Issue 22 items 12 and 9: a run folder's best_xumx.h5, named as a file or by its folder,
    is labelled with the folder's name; --name labels it as asked; --quiet prints nothing
    (the scores are in the files)."""
    import shutil
    run = tmp_path / "run-b"
    run.mkdir()
    for ext in (".h5", ".json"):
        shutil.copy(os.path.splitext(data["model"])[0] + ext, run / f"best_xumx{ext}")

    def methods(evaldir):
        rows = open(evaldir / "scores.csv").read().splitlines()[1:]
        return {r.split(",")[0] for r in rows}
    args = ["--root", data["root"], "--is-wav", "--tracks", TRACKS[0], "--targets", *TARGETS]
    assert eval_cli.main(["--model", str(run / "best_xumx.h5"), "--evaldir",
                          str(tmp_path / "a"), "-q", *args]) == 0
    assert capsys.readouterr() == ("", "")
    assert methods(tmp_path / "a") == {"run-b"}
    assert eval_cli.main(["--model", str(run), "--name", "second try", "--evaldir",
                          str(tmp_path / "b"), "--quiet", *args]) == 0
    assert methods(tmp_path / "b") == {"second try"}
