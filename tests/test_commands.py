"""The command line as open-unmix and Demucs users expect it (issue 22): one convention of
flags, help, versions, console scripts and exit statuses across the entry modules."""
import ast
import importlib
import os
import subprocess
import sys

import pytest
import soundfile as sf

from conftest import sine_mix
from xumx import __version__
from xumx.parsing import COMMANDS, build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def song(tmp_path):
    path = str(tmp_path / "song.wav")
    sf.write(path, sine_mix(11025, 44100), 44100, subtype="PCM_16")
    return path


def one_error(capsys, command="test") -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"xumx.{command}: error: "), err
    return err[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_version(command, capsys):
    main = importlib.import_module(f"xumx.{command}").main
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"xumx {__version__}"


def test_python_m_xumx_lists_the_commands_and_its_version():
    done = subprocess.run([sys.executable, "-m", "xumx"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in COMMANDS:
        assert f"python -m xumx.{command} " in done.stdout
    done = subprocess.run([sys.executable, "-m", "xumx", "--version"], capture_output=True,
                          text=True)
    assert (done.returncode, done.stdout) == (0, f"xumx {__version__}\n")
    done = subprocess.run([sys.executable, "-m", "xumx", "separate", "song.mp3"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("xumx: error: "), done.stderr
    assert done.stderr.count("\n") == 1


def test_every_command_is_a_console_script_that_names_itself():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    assert sorted(points["console_scripts"]) == sorted(
        f"xumx-{c}=xumx.{c}:main" for c in COMMANDS)
    # started as the console script, the usage line names the script, not python -m
    code = ("import sys; sys.argv[0] = '/venv/bin/xumx-test'; from xumx.test import main; "
            "sys.exit(main(['--help']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: xumx-test "), done.stdout
    assert build_parser("test").prog == "python -m xumx.test"   # under pytest: not the script


def help_of(command, flag):
    parser = build_parser(command)
    return next(a.help for a in parser._actions if flag in a.option_strings)


def test_help_of_a_command_describes_that_command_only():
    """Shared flags whose meaning differs per command have their own help."""
    assert "subset" not in help_of("test", "--out-dir")
    assert "<input name>" in help_of("test", "--out-dir")
    assert "<subset>" in help_of("eval", "--out-dir") and "input" not in help_of("eval", "--out-dir")
    assert "train" not in help_of("test", "--sample-rate")
    assert "data set" in help_of("train", "--sample-rate")
    assert "ONNX" in help_of("export", "--out") and "data set" not in help_of("export", "--out")
    assert "ONNX" not in help_of("synth", "--out") and "data set" in help_of("synth", "--out")
    for command in COMMANDS:   # no command's help speaks of another command
        text = build_parser(command).format_help()
        others = [c for c in COMMANDS if c != command and f"xumx.{c}" in text]
        assert not others, (command, others)


@pytest.mark.parametrize("flag,hint", [("--ext", "--format"), ("--mp3", "--format mp3"),
                                       ("--flac", "--format flac")])
def test_another_tools_flag_names_ours(song, flag, hint, capsys):
    from xumx.test import main
    assert main([song, flag, "x"]) == 2
    line = one_error(capsys)
    assert line.endswith(f"(did you mean {hint}?)"), line
    assert "--context" not in line


def test_o_is_the_output_folder_and_targets_split_on_commas(song, tiny_model, tmp_path, capsys):
    from xumx.test import main
    out = tmp_path / "sep"
    assert main([song, "--model", tiny_model, "-o", str(out), "--targets", "vocals,drums",
                 "-q"]) == 0
    assert sorted(os.listdir(out / "song")) == ["drums.wav", "vocals.wav"]
    assert main([song, "--model", tiny_model, "--outdir", str(out / "umx"), "-q"]) == 0
    assert len(os.listdir(out / "umx" / "song")) == 4


def test_an_unknown_target_is_a_bad_command_line(song, tiny_model, tmp_path, capsys):
    from xumx.test import main
    assert main([song, "--model", tiny_model, "-o", str(tmp_path), "--targets", "voice"]) == 2
    assert "unknown target(s) ['voice']" in one_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["song.wav", "tiny.h5", "tiny.json"]   # no stems


def test_bitrate_only_when_given_applies_to_mp3_only(song, tiny_model, tmp_path, capsys):
    from xumx.test import main
    assert main([song, "--model", tiny_model, "-o", str(tmp_path), "--format", "wav", "-q"]) == 0
    assert main([song, "--model", tiny_model, "-o", str(tmp_path), "--bitrate", "320"]) == 2
    assert "--bitrate applies to mp3 stems only" in one_error(capsys)


def test_library_failures_are_value_and_runtime_errors(tmp_path):
    """The README's promise: failures are ValueError/RuntimeError subclasses of XumxError."""
    from xumx import errors
    for name in dir(errors):
        kind = getattr(errors, name)
        if isinstance(kind, type) and issubclass(kind, errors.XumxError) \
                and kind is not errors.XumxError:
            assert issubclass(kind, (ValueError, RuntimeError, OSError, ImportError)), name
    assert issubclass(errors.AudioError, ValueError)
    assert issubclass(errors.DownloadError, RuntimeError)
    from xumx import Separator
    from conftest import tiny_config, separator_of
    from seeded import random_arrays
    cfg = tiny_config()
    sep = separator_of(cfg, random_arrays(cfg, seed=1))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="junk.wav"):
        sep.separate_file(str(junk), str(tmp_path / "out"))
    assert isinstance(Separator, type)
