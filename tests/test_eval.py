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
from xumx.weights import random_arrays, save_model

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


def test_rerun_skips_scored_tracks_and_resumes_a_killed_run(data, scored, monkeypatch, capsys):
    evaldir, _ = scored
    calls = []
    real = evaluation.estimate_track
    monkeypatch.setattr(evaluation, "estimate_track", lambda *a: calls.append(1) or real(*a))
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
    args = ["--root", data["root"], "--is-wav", "--evaldir", str(tmp_path), "--baseline",
            "--targets", *TARGETS]
    assert eval_cli.main(args + ["--tracks", TRACKS[1]]) == 0
    assert os.listdir(tmp_path / "mixture" / "test") == [f"{TRACKS[1]}.json"]
    assert "over 1 track(s)" in capsys.readouterr().out
    assert eval_cli.main(args + ["--tracks", "Nobody - Nothing"]) != 0
    assert "Nobody - Nothing" in capsys.readouterr().err


def test_resample_round_trip_keeps_length_and_band_limited_signal():
    from xumx.audio import resample
    t = np.arange(RATE) / RATE
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 300 * t)], axis=1)
    y = resample(x, RATE, 8000)
    assert y.shape == (8000, 2)
    z = resample(y, 8000, RATE, length=RATE)
    assert z.shape == x.shape
    assert np.max(np.abs(z - x)[2000:-2000]) < 1e-2


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_bad_input_is_one_line_and_nonzero(data, tmp_path, capsys):
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
    assert run("--root", data["root"], "--is-wav") != 0
    assert "--model" in one_error_line(capsys)
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
    from xumx.config import build_parser
    from conftest import flag_rows
    documented = flag_rows("eval")
    actions = [a for a in build_parser("eval")._actions
               if a.dest != "help" and a.help != argparse.SUPPRESS]
    assert set(documented) == {tuple(a.option_strings) for a in actions}
    for a in actions:
        default, meaning = documented[tuple(a.option_strings)]
        assert a.help in (meaning, f"{meaning} (default: {default})"), a.option_strings


def test_tracks_are_separated_in_the_chunks_of_xumx_test(tiny_cfg):
    """Tracks go through xumx.test's separation path with its chunking rule (--chunk-dur,
    --overlap), at the model's rate here."""
    from conftest import sine_mix
    from xumx.chunking import separate_chunked
    from xumx.config import ChunkConfig
    from xumx.separator import Separator
    from xumx.weights import random_arrays
    sep = Separator(tiny_cfg, random_arrays(tiny_cfg))
    audio = sine_mix(2 * tiny_cfg.sample_rate, tiny_cfg.sample_rate)
    calls = []

    class Counting:
        cfg = sep.cfg

        def separate(self, x):
            calls.append(x.shape[0])
            return sep.separate(x)
    rate = tiny_cfg.sample_rate
    whole = evaluation.estimate_track(Counting(), audio, rate, ChunkConfig(chunk_dur=0))
    assert calls == [audio.shape[0]]
    for k, v in sep.separate(audio).items():
        np.testing.assert_array_equal(whole[k], v)
    calls.clear()
    chunked = evaluation.estimate_track(Counting(), audio, rate, ChunkConfig(0.5, 0.125))
    assert len(calls) > 3 and max(calls) <= tiny_cfg.sample_rate // 2
    ref = separate_chunked(sep.separate, audio, rate // 2, int(round(0.125 * rate)))
    for k in ref:
        assert chunked[k].shape == audio.shape
        np.testing.assert_array_equal(chunked[k], ref[k])
