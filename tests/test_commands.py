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


def test_mp3_at_a_rate_mp3_cannot_hold_says_so(song, tiny_model, tmp_path, capsys):
    """Item 2: the stems' rate changes for mp3 only with one warning line naming both rates."""
    from xumx import decode
    from xumx.test import main
    hi = str(tmp_path / "hi.wav")
    sf.write(hi, sine_mix(9600, 96000), 96000)
    for path, asked, got in ((song, ["--output-rate", "12345"], 16000), (hi, [], 48000),
                             (song, [], 44100)):
        out = tmp_path / f"o{got}"
        assert main([path, "--model", tiny_model, "-o", str(out), "--format", "mp3", "-q",
                     "--targets", "vocals", *asked]) == 0
        err = capsys.readouterr().err.splitlines()
        stem = out / os.path.splitext(os.path.basename(path))[0] / "vocals.mp3"
        assert decode.probe(str(stem)).rate == got
        if got == 44100:
            assert err == []
        else:
            rate = 12345 if asked else 96000
            assert err == [f"xumx.test: warning: mp3 cannot hold {rate} Hz: the stems are "
                           f"written at {got} Hz (wav and flac keep any rate)"], err


def test_inputs_are_checked_before_the_model_is_fetched(tmp_path, monkeypatch, capsys):
    """Item 5: a missing input is reported at once, offline or not: nothing is downloaded."""
    from xumx import pretrained
    from xumx.test import main

    def no_download(*a, **k):
        raise AssertionError("the model was fetched for inputs that cannot be separated")
    monkeypatch.setattr(pretrained, "fetch_published", no_download)
    assert main([str(tmp_path / "nosuch.mp3")]) == 1
    assert one_error(capsys) == f"xumx.test: error: {tmp_path / 'nosuch.mp3'}: no such file"


def test_an_interruption_names_the_inputs_not_separated(song, tiny_model, tmp_path,
                                                        monkeypatch, capsys):
    """Item 6: Ctrl-C during the second of three inputs: the first's stems are kept and the
    line names the second and third as not separated."""
    from xumx import stemfiles
    from xumx.test import main
    real, seen = stemfiles._Song.open, []

    def second_interrupted(song):   # the per-input seam: each input's start
        seen.append(song.path)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(song)
    monkeypatch.setattr(stemfiles._Song, "open", second_interrupted)
    songs = []
    for name in ("a", "b", "c"):
        songs.append(str(tmp_path / f"{name}.wav"))
        sf.write(songs[-1], sine_mix(4000, 44100), 44100)
    out = tmp_path / "out"
    assert main([*songs, "--model", tiny_model, "-o", str(out), "-q"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "xumx.test: interrupted; stems already finished are kept, no partial stem was written; "
        f"not separated: {songs[1]}, {songs[2]}"]
    assert os.listdir(out) == ["a"]


def test_recursive_takes_the_sub_folders_and_without_it_says_so(song, tiny_model, tmp_path,
                                                                 capsys):
    """Item 7: albums/<album>/<song>: the folder alone names --recursive; with it every song
    is separated, folder by folder in name order."""
    from xumx.test import main
    albums = tmp_path / "albums"
    for album, name in (("b-side", "two"), ("a-side", "one"), ("a-side/live", "three")):
        (albums / album).mkdir(parents=True, exist_ok=True)
        sf.write(str(albums / album / f"{name}.wav"), sine_mix(4000, 44100), 44100)
    out = tmp_path / "out"
    assert main([str(albums), "--model", tiny_model, "-o", str(out)]) == 1
    assert one_error(capsys) == (f"xumx.test: error: {albums}: a folder without audio files "
                                 f"(its sub-folders hold 3: add --recursive)")
    assert main([str(albums), "--model", tiny_model, "-o", str(out), "-r"]) == 0
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [str(albums / "a-side" / "one.wav"),
                       str(albums / "a-side" / "live" / "three.wav"),
                       str(albums / "b-side" / "two.wav")]
    assert sorted(os.listdir(out)) == ["one", "three", "two"]


def test_standard_input(song, tiny_model, tmp_path):
    """Item 14: `-` reads the audio from standard input (any format ffmpeg reads) into
    <out-dir>/stdin; the same stems as from the file."""
    mp3 = str(tmp_path / "song.mp3")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", song, mp3], check=True)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))   # where the piped audio is kept while separated
    for path in (song, mp3):
        with open(path, "rb") as f:
            done = subprocess.run([sys.executable, "-m", "xumx.test", "-", "--model", tiny_model,
                                   "-o", str(out / os.path.splitext(path)[1][1:])], stdin=f,
                                  capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("stdin: ")
    from xumx.test import main
    assert main([song, "--model", tiny_model, "-o", str(out / "file"), "-q"]) == 0
    import numpy as np
    piped, _ = sf.read(str(out / "wav" / "stdin" / "vocals.wav"))
    direct, _ = sf.read(str(out / "file" / "song" / "vocals.wav"))
    assert np.array_equal(piped, direct)
    assert sf.info(str(out / "mp3" / "stdin" / "vocals.wav")).frames >= 11025
    done = subprocess.run([sys.executable, "-m", "xumx.test", "-", "-", "--model", tiny_model],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 2 and "standard input" in done.stderr
    assert not [n for n in os.listdir(tmp) if n.startswith("xumx-stdin-")]   # removed
