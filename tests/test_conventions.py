"""The command-line convention of every entry module (xumx.cli): a bad command line exits 2
with one line, a failed run exits 1 with one line, an interruption 130/143 with one line, and
a bug keeps its traceback. Also: a flag means the same in every command that has it."""
import importlib.util
import os
import signal
import subprocess
import sys

import pytest
import soundfile as sf

from conftest import ROOT, sine_mix
from xumx import config, parsing
from xumx.interrupt import Terminated

COMMANDS = ["test", "train", "eval", "export", "synth", "demo"]


def main_of(command):
    import importlib
    return importlib.import_module(f"xumx.{command}").main


def error_lines(capsys, command):
    """The lines of stderr that are not nnabla's own log."""
    err = [ln for ln in capsys.readouterr().err.splitlines() if "[nnabla]" not in ln]
    assert all(ln.startswith(f"xumx.{command}: ") for ln in err), err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_command_line_is_one_line_and_status_2(command, capsys):
    for argv in (["--no-such-flag"], ["--help-me"]):
        assert main_of(command)(argv + ([] if command in ("demo",) else [])) == 2
        err = error_lines(capsys, command)
        assert len(err) == 1 and err[0].startswith(f"xumx.{command}: error: "), err


@pytest.fixture
def failing_runs(tmp_path, tiny_model):
    """A command line of each module that parses but cannot be done."""
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(4000, 8000), 8000)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    missing = str(tmp_path / "missing")
    return {
        "test": ["--inputs", missing + ".wav", "--model", tiny_model, "--outdir", str(tmp_path)],
        "train": ["--root", missing, "--output", str(tmp_path / "run")],
        "eval": ["--model", tiny_model, "--root", missing],
        "export": ["--model", missing + ".h5", "--out", str(tmp_path / "x.onnx")],
        "synth": ["--out", str(blocker / "data"), "--train", "1", "--test", "0",
                  "--song-dur", "0.1"],
        "demo": ["--workdir", str(blocker)],
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_a_failed_run_is_one_line_and_status_1(command, failing_runs, capsys):
    assert main_of(command)(failing_runs[command]) == 1
    err = capsys.readouterr().err.splitlines()
    err = [ln for ln in err if "[nnabla]" not in ln]
    assert len(err) == 1 and err[0].startswith(f"xumx.{command}: error: "), err
    if command == "demo" and importlib.util.find_spec("nnabla") is None:
        # without nnabla the demo stops before it writes anything, saying so
        assert err[0].startswith("xumx.demo: error: the demo (its training step) needs nnabla"), err
    elif command == "demo":   # the failing step's own line is carried by the demo's, not repeated
        assert err[0].startswith("xumx.demo: error: step 'synth' failed (exit 1): ") and \
            "cannot write" in err[0], err
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("signal_kind", [KeyboardInterrupt, Terminated])
def test_an_interruption_is_one_line_and_130_or_143(command, signal_kind, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise signal_kind()
    monkeypatch.setattr(parsing, "parse", interrupted)
    code = main_of(command)(["--anything"])
    word = "terminated" if signal_kind is Terminated else "interrupted"
    assert code == (143 if signal_kind is Terminated else 130)
    err = error_lines(capsys, command)
    assert len(err) == 1 and err[0].startswith(f"xumx.{command}: {word}"), err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bug_is_not_turned_into_a_message(command, monkeypatch):
    def bug(*a, **k):
        raise ZeroDivisionError("a planted bug")
    monkeypatch.setattr(parsing, "parse", bug)
    with pytest.raises(ZeroDivisionError, match="a planted bug"):
        main_of(command)([])


def test_a_bug_while_separating_a_file_keeps_its_traceback(tiny_model, tmp_path):
    """Not 'separation failed' for the file and on to the next: Python's traceback, status 1."""
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(4000, 8000), 8000)
    planted = ("import sys, xumx.stemfiles as i\n"
               "def bug(*a, **k): raise RuntimeError('a planted bug')\n"
               "i._Song.open = bug\n"   # the per-input seam of separate_files
               "from xumx.test import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, "-c", planted, "--inputs", song, song, "--model",
                        tiny_model, "--outdir", str(tmp_path / "out")], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert p.returncode == 1
    assert "Traceback" in p.stderr and "RuntimeError: a planted bug" in p.stderr
    assert "xumx.test: error" not in p.stderr


def test_sigterm_of_a_command_is_143(tmp_path):
    """A real SIGTERM through the module (synth writing a large data set), sent once the
    first song is in the temporary folder: status 143, one line, and neither the data set
    (it appears whole or not at all) nor the temporary is left."""
    import glob
    import time
    proc = subprocess.Popen([sys.executable, "-m", "xumx.synth", "--out", str(tmp_path / "d"),
                             "--train", "50", "--song-dur", "30"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    start = time.time()
    while not glob.glob(str(tmp_path / ".*" / "train" / "*")) and time.time() - start < 120:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert proc.stderr.read().strip().splitlines() == [
        "xumx.synth: terminated; no data set was written (it appears whole or not at all)"]
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ one meaning per flag
def test_a_flag_means_the_same_in_every_command():
    """An option string in several commands is one Flag (one help, one group); the only
    exception is a deprecated spelling, which says what it stands for."""
    seen = {}
    for command in parsing.COMMANDS:
        for _, f in parsing.command_fields(command):
            flag = f.metadata["flag"]
            for name in flag.names:
                assert seen.setdefault(name, flag) is flag, (command, name)
    deprecated = {old: flag for command in parsing.COMMANDS
                  for _, f in parsing.command_fields(command)
                  for flag in [f.metadata["flag"]] for old in flag.deprecated}
    assert deprecated == {"--model": config.TrainConfig.__dataclass_fields__["resume"]
                          .metadata["flag"]}
    assert "--model: the old spelling" in deprecated["--model"].help


def test_every_published_flag_still_parses():
    """The flags of the published test.py/eval.py/train.py (reference 4.1, 6.1) and their
    aliases are accepted."""
    for command, flags in {
            "test": ["--inputs", "--targets", "--out-dir", "--outdir", "--start", "--duration",
                     "--model", "--context", "--softmask", "--niter", "--alpha", "--sample-rate",
                     "--residual-model", "--chunk-dur", "--umx-infer"],
            "eval": ["--model", "--outdir", "--evaldir", "--root", "--subset", "--cores",
                     "--is-wav", "--context", "--niter", "--alpha", "--softmask", "--targets",
                     "--umx-infer", "--out-dir"],
            "train": ["--root", "--output", "--sources", "--epochs", "--batch-size", "--lr",
                      "--patience", "--lr-decay-patience", "--lr-decay-gamma", "--weight-decay",
                      "--seed", "--seq-dur", "--unidirectional", "--nfft", "--nhop",
                      "--hidden-size", "--bandwidth", "--nb-channels", "--sample-rate",
                      "--mcoef", "--device-id", "-d", "--context", "-c", "--valid_dur",
                      "--is-wav", "--samples-per-track", "--source-augmentations", "--model"]}.items():
        known = {s for a in parsing.build_parser(command)._actions for s in a.option_strings}
        assert set(flags) <= known, (command, set(flags) - known)


def test_deprecated_train_model_warns_and_resumes(tmp_path, capsys):
    from xumx.cli import run
    got = {}

    def body(argv):
        got["cfg"] = parsing.parse("train", argv)[1]
        return 0
    assert run("train", body, ["--model", str(tmp_path)]) == 0
    assert got["cfg"].resume == str(tmp_path)
    assert capsys.readouterr().err.splitlines() == [
        "xumx.train: warning: --model is deprecated here: use --resume"]


def test_resume_with_another_model_flag_is_refused(tmp_path, capsys):
    """Issue 20: a resumed run keeps its model, so a model flag (or a recipe's) that differs
    from its config.yaml is one line and status 2, not silently dropped; the same value, or a
    training flag, is fine."""
    from xumx.config import ModelConfig, TrainConfig
    from xumx.recipes import RUN_CONFIG, recipe_text
    from xumx.train import main as train_main
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG).write_text(recipe_text(ModelConfig(hidden_size=64), TrainConfig(output=str(run))))
    assert train_main(["--resume", str(run), "--hidden-size", "128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hidden-size 128 differs from the resumed run's 64" in err[0], err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("nb_layers: 2\n")
    assert train_main(["--resume", str(run), "--config", str(recipe)]) == 2
    assert "--nb-layers 2 differs from the resumed run's 3" in capsys.readouterr().err
    model, train = parsing.parse("train", ["--resume", str(run), "--hidden-size", "64",
                                           "--epochs", "7"])
    assert model.hidden_size == 64 and train.epochs == 7 and train.output == str(run)
