"""xumx.demo: the step runner and the closing table (the steps themselves have their own tests)."""
import json
import os
import sys

import numpy as np
import pytest

from xumx import demo
from xumx.modelfiles import BEST_NAME

TARGETS = ("bass", "drums", "vocals", "other")


def write_scores(folder, track, sdr_frames):
    """A museval v4 JSON whose SDR frames are given per target (other metrics fixed)."""
    os.makedirs(folder, exist_ok=True)
    data = {"targets": [{"name": t, "frames": [
        {"time": float(i), "duration": 1.0, "metrics": {"SDR": v, "SIR": 1.0, "ISR": 2.0, "SAR": 3.0}}
        for i, v in enumerate(frames)]} for t, frames in sdr_frames.items()],
        "museval_version": "0.4.1"}
    with open(os.path.join(folder, f"{track}.json"), "w") as f:
        json.dump(data, f)


def test_table_is_median_over_frames_then_tracks(tmp_path):
    r = np.random.RandomState(0)
    scores = tmp_path / "scores"
    model, base = {}, {}
    for k in range(3):
        m = {t: list(r.uniform(0, 10, size=4)) for t in TARGETS}
        b = {t: list(r.uniform(-10, 0, size=4)) for t in TARGETS}
        write_scores(scores / "test", f"Song {k}", m)
        write_scores(scores / "mixture" / "test", f"Song {k}", b)
        for t in TARGETS:
            model.setdefault(t, []).append(np.median(m[t]))
            base.setdefault(t, []).append(np.median(b[t]))
    text = demo.report(str(tmp_path))
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if ln.split()
            and ln.split()[0] in TARGETS + ("average",)}
    for t in TARGETS:
        want_m, want_b = np.median(model[t]), np.median(base[t])
        assert float(rows[t][0]) == pytest.approx(want_m, abs=0.006)
        assert float(rows[t][1]) == pytest.approx(want_b, abs=0.006)
        assert float(rows[t][2]) == pytest.approx(want_m - want_b, abs=0.011)
    assert "beats the baseline on 4 of 4 targets" in text
    assert "median over the frames of each track, then median over tracks" in text
    assert os.path.join(str(tmp_path), "model", "training.png") in text
    assert os.path.join(str(tmp_path), "scores", "sdr.png") in text


def test_missing_scores_name_the_eval_step(tmp_path):
    with pytest.raises(demo.DemoError, match="step 'eval'"):
        demo.report(str(tmp_path))


def test_plan_uses_the_documented_flags(tmp_path):
    steps = {s.name: s.argv for s in demo.plan(str(tmp_path))}
    assert list(steps) == ["synth", "train", "test", "eval"]
    data = os.path.join(str(tmp_path), "data")
    assert steps["synth"][:2] == ["-m", "xumx.synth"] and data in steps["synth"]
    train = steps["train"]
    for flag in ("--root", "--is-wav", "--output", "--config"):
        assert flag in train
    recipe = train[train.index("--config") + 1]   # recipes/demo.yaml: the small model's budget
    assert os.path.isfile(recipe) and os.path.basename(recipe) == "demo.yaml"
    from xumx.recipes import read_recipe
    assert read_recipe(recipe)["hidden_size"] == 64 and read_recipe(recipe)["epochs"] == 14
    model = os.path.join(str(tmp_path), "model", BEST_NAME)
    assert model in steps["test"] and model in steps["eval"] and "--baseline" in steps["eval"]


def test_a_failing_step_is_one_line_naming_it_and_done_steps_are_skipped(tmp_path, monkeypatch, capsys):
    steps = [demo.Step("first", ["-c", "print('ok')"], str(tmp_path / "a")),
             demo.Step("second", ["-c", "import sys; sys.exit('second: no dataset here')"],
                       str(tmp_path / "b"))]
    monkeypatch.setattr(demo, "plan", lambda workdir: steps)
    assert demo.main(["--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "xumx.demo: error: step 'second' failed (exit 1): second: no dataset here"
    assert os.path.exists(tmp_path / "a" / demo.DONE) and not os.path.exists(tmp_path / "b" / demo.DONE)
    assert demo.main(["--workdir", str(tmp_path)]) == 1
    assert "first: already done" in capsys.readouterr().out


def test_a_step_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(demo.DemoError, match="step 'synth' could not start"):
        demo.run_step("synth", ["-c", "pass"], echo=False)


def test_nnabla_is_checked_before_any_step(tmp_path, monkeypatch, capsys):
    """Issue 22 item 11: where training cannot run (Python 3.13), the demo says so in one line
    before it writes the data set, not after."""
    from xumx.errors import NnablaMissing
    from xumx.training import backend

    def missing(feature):
        raise NnablaMissing(backend.missing_message(feature, version=(3, 13)))
    monkeypatch.setattr(backend, "require_nnabla", missing)
    work = tmp_path / "work here"
    assert demo.main(["--workdir", str(work)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("xumx.demo: error: the demo (its training step) needs nnabla")
    assert not work.exists()


def test_commands_are_quoted_and_a_step_error_is_printed_once(tmp_path, monkeypatch, capfd):
    """Item 11: the printed commands paste into a shell (a folder with a space); a failing
    step's own error line is not echoed and then repeated by the demo's."""
    folder = str(tmp_path / "with space")
    fail = ("import sys; print('working', file=sys.stderr); "
            "print('xumx.train: error: no tracks in ' + sys.argv[1], file=sys.stderr); "
            "sys.exit(1)")
    steps = [demo.Step("first", ["-c", "print('ok')", folder], str(tmp_path / "a")),
             demo.Step("second", ["-c", fail, folder], str(tmp_path / "b"))]
    monkeypatch.setattr(demo, "plan", lambda workdir: steps)
    with pytest.raises(demo.DemoError) as e:
        demo.run_steps(str(tmp_path))
    out, err = capfd.readouterr()
    assert f"[demo] first: python -c 'print('\"'\"'ok'\"'\"')' '{folder}'" in out
    assert str(e.value) == f"step 'second' failed (exit 1): no tracks in {folder}"
    assert err.splitlines() == ["working"]   # the step's other lines still pass through


def test_eval_step_output_is_not_shown_so_the_table_is_printed_once(tmp_path, capfd):
    eval_step = {s.name: s for s in demo.plan(str(tmp_path))}["eval"]
    assert eval_step.stdout is False
    demo.run_step("eval", ["-c", "print('SDR table')"], stdout=eval_step.stdout)
    demo.run_step("test", ["-c", "print('song: separated')"])
    assert capfd.readouterr().out == "song: separated\n"
