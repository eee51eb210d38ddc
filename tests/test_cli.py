"""python -m xumx.test: formats in and out, lengths, spans, targets, errors, download, layout."""
import hashlib
import importlib
import io
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from conftest import sine_mix
from xumx import audio, files
from xumx.config import build_parser
from xumx.pretrained import PUBLISHED_SHA1, PUBLISHED_URL
from xumx.test import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEMS = ["bass", "drums", "other", "vocals"]
N = 11025   # 0.25 s at 44.1 kHz


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def song(tmp_path):
    """A 0.25 s stereo 16-bit wav at 44.1 kHz."""
    path = str(tmp_path / "song.wav")
    sf.write(path, sine_mix(N, 44100), 44100, subtype="PCM_16")
    return path


def run(*argv, model=None):
    argv = list(argv) + (["--model", model] if model else [])
    return main(argv)


def stems_of(folder):
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder))


def test_wav_in_four_stems_out_with_exact_length(song, tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, model=tiny_model) == 0
    folder = os.path.join(out, "song")
    assert stems_of(folder) == STEMS
    for s in STEMS:
        info = sf.info(os.path.join(folder, s + ".wav"))
        assert (info.frames, info.samplerate, info.channels, info.subtype) == (N, 44100, 2, "PCM_16")
    captured = capsys.readouterr()
    assert "real time" in captured.out and folder in captured.out      # the summary line
    assert "chunk" in captured.err                                     # the progress bar


@pytest.mark.parametrize("kind", ["mp3", "ogg", "m4a", "flac", "wav24", "wav32f"])
def test_input_formats(song, tiny_model, tmp_path, kind):
    ext = kind[:3] if kind.startswith("wav") else kind
    path = str(tmp_path / f"in-{kind}.{ext}")
    if kind == "wav24":
        sf.write(path, sine_mix(N, 44100), 44100, subtype="PCM_24")
    elif kind == "wav32f":
        sf.write(path, sine_mix(N, 44100), 44100, subtype="FLOAT")
    else:
        ffmpeg("-i", song, path)
    out = str(tmp_path / "out")
    assert run("--inputs", path, "--outdir", out, "--quiet", model=tiny_model) == 0
    folder = os.path.join(out, f"in-{kind}")
    assert stems_of(folder) == STEMS
    for s in STEMS:
        assert sf.info(os.path.join(folder, s + ".wav")).frames == N


def test_mono_48k_flac_gives_mono_stems_at_48k(tiny_model, tmp_path):
    path = str(tmp_path / "mono.flac")
    sf.write(path, sine_mix(12000, 48000, nb_channels=1), 48000, subtype="PCM_16")
    out = str(tmp_path / "out")
    assert run("--inputs", path, "--outdir", out, "--format", "flac", "--quiet", model=tiny_model) == 0
    for s in STEMS:
        info = sf.info(os.path.join(out, "mono", s + ".flac"))
        assert (info.frames, info.samplerate, info.channels, info.format) == (12000, 48000, 1, "FLAC")


def test_six_channels_use_the_first_two_with_a_warning(tiny_model, tmp_path, capsys):
    path = str(tmp_path / "surround.wav")
    x = sine_mix(N, 44100, nb_channels=6)
    sf.write(path, x, 44100, subtype="PCM_16")
    out = str(tmp_path / "out")
    assert run("--inputs", path, "--outdir", out, "--quiet", model=tiny_model) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: .*surround\.wav: has 6 channels; separating the first 2", err)
    for s in STEMS:
        info = sf.info(os.path.join(out, "surround", s + ".wav"))
        assert (info.frames, info.channels) == (N, 2)
    # the same as separating just the first two channels
    two = str(tmp_path / "two.wav")
    sf.write(two, sf.read(path, dtype="float32")[0][:, :2], 44100, subtype="FLOAT")
    assert run("--inputs", two, "--outdir", out, "--quiet", model=tiny_model) == 0
    np.testing.assert_array_equal(sf.read(os.path.join(out, "surround", "bass.wav"))[0],
                                  sf.read(os.path.join(out, "two", "bass.wav"))[0])


@pytest.mark.parametrize("fmt,bits,subtype", [("wav", "24", "PCM_24"), ("wav", "float", "FLOAT"),
                                              ("flac", "24", "PCM_24"), ("mp3", "16", None)])
def test_output_formats(song, tiny_model, tmp_path, fmt, bits, subtype):
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--format", fmt, "--bits", bits, "--bitrate",
               "128", "--quiet", model=tiny_model) == 0
    folder = os.path.join(out, "song")
    assert stems_of(folder) == STEMS
    for s in STEMS:
        path = os.path.join(folder, f"{s}.{fmt}")
        if subtype:
            assert sf.info(path).subtype == subtype
        y, rate, info = audio.load(path)
        assert y.shape == (N, 2) and rate == 44100
        if fmt == "mp3":
            assert info.codec == "mp3"


def test_odd_lengths_are_preserved_exactly(tiny_model, tmp_path):
    lengths = (1, 100, 4411)
    paths = []
    for n in lengths:
        paths.append(str(tmp_path / f"len{n}.wav"))
        sf.write(paths[-1], np.full((n, 2), 0.1, np.float32), 44100, subtype="PCM_16")
    out = str(tmp_path / "out")
    assert run("--inputs", *paths, "--outdir", out, "--quiet", model=tiny_model) == 0
    half = str(tmp_path / "half")
    assert run("--inputs", *paths, "--outdir", half, "--output-rate", "22050", "--quiet",
               model=tiny_model) == 0
    for n in lengths:
        for s in STEMS:
            info = sf.info(os.path.join(out, f"len{n}", s + ".wav"))
            assert (info.frames, info.samplerate) == (n, 44100)
            info = sf.info(os.path.join(half, f"len{n}", s + ".wav"))
            assert (info.frames, info.samplerate) == (max(1, round(n / 2 + 1e-9)), 22050)


def test_start_duration_select_the_span_exactly(song, tiny_model, tmp_path):
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--start", "0.05", "--duration", "0.15",
               "--quiet", model=tiny_model) == 0
    # the same samples cut beforehand give the same stems
    cut = str(tmp_path / "cut.wav")
    x, _ = sf.read(song, dtype="int16")
    sf.write(cut, x[2205:2205 + 6615], 44100, subtype="PCM_16")
    assert run("--inputs", cut, "--outdir", out, "--quiet", model=tiny_model) == 0
    for s in STEMS:
        a, _ = sf.read(os.path.join(out, "song", s + ".wav"))
        b, _ = sf.read(os.path.join(out, "cut", s + ".wav"))
        assert a.shape == (6615, 2)
        np.testing.assert_array_equal(a, b)


def test_targets_vocals_gives_the_vocals_stem(song, tiny_model, tmp_path):
    full, only = str(tmp_path / "full"), str(tmp_path / "only")
    assert run("--inputs", song, "--outdir", full, "--quiet", model=tiny_model) == 0
    assert run("--inputs", song, "--outdir", only, "--targets", "vocals", "--quiet",
               model=tiny_model) == 0
    assert stems_of(os.path.join(only, "song")) == ["vocals"]
    a = sf.read(os.path.join(full, "song", "vocals.wav"))[0]
    b = sf.read(os.path.join(only, "song", "vocals.wav"))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sf.read(os.path.join(full, "song", "bass.wav"))[0])


def test_residual_model_stems_add_up_to_the_mixture(song, tiny_model, tmp_path):
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--residual-model", "--output-rate", "model",
               "--bits", "float", "--quiet", model=tiny_model) == 0
    folder = os.path.join(out, "song")
    assert stems_of(folder) == sorted(STEMS + ["residual"])
    total = sum(sf.read(os.path.join(folder, f"{s}.wav"))[0] for s in STEMS + ["residual"])
    mix = audio.resample(sf.read(song, dtype="float32")[0], 44100, 8000, length=len(total))
    assert np.sqrt(np.mean((total - mix) ** 2)) < 1e-3 * np.sqrt(np.mean(mix ** 2))


def test_umx_infer_reads_a_folder_of_target_files(song, tmp_path):
    from conftest import tiny_config
    from xumx.weights import random_arrays, write_h5
    cfg = tiny_config(crossing=False)
    arrays = random_arrays(cfg, seed=2)
    folder = tmp_path / "umx"
    folder.mkdir()
    for t in cfg.sources:   # Open-Unmix names: the target suffix dropped
        write_h5(str(folder / f"{t}.h5"), {k.replace(f"_{t}", ""): v for k, v in arrays.items()
                                          if k.split("/")[0].endswith(f"_{t}")})
        (folder / f"{t}.json").write_text(cfg.to_json())
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--umx-infer", "--quiet", model=str(folder)) == 0
    assert stems_of(os.path.join(out, "song")) == STEMS


def test_chunked_run_and_model_rate_output(song, tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--chunk-dur", "0.1", "--overlap", "0.02",
               "--output-rate", "model", "--bits", "float", model=tiny_model) == 0
    assert "0/3 [" in capsys.readouterr().err   # a bar over 3 chunks: 0.25 s in 0.1 s sharing 0.02 s
    unchunked = str(tmp_path / "whole")
    assert run("--inputs", song, "--outdir", unchunked, "--chunk-dur", "0", "--output-rate",
               "model", "--bits", "float", "--quiet", model=tiny_model) == 0
    for s in STEMS:
        a, rate = sf.read(os.path.join(out, "song", s + ".wav"))
        b, _ = sf.read(os.path.join(unchunked, "song", s + ".wav"))
        assert rate == 8000 and a.shape == b.shape == (round(N * 8000 / 44100), 2)
        assert 10 * np.log10(np.sum(b ** 2) / np.sum((a - b) ** 2)) > 15


def test_separator_is_built_once_for_all_files_and_chunks(song, tiny_model, tmp_path, monkeypatch):
    from xumx import separator as separator_mod
    built = []
    real = separator_mod.Separator.__init__

    def counting(self, *a, **k):
        built.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(separator_mod.Separator, "__init__", counting)
    other = str(tmp_path / "other.wav")
    sf.write(other, sine_mix(N, 44100, seed=5), 44100)
    assert run("--inputs", song, other, "--outdir", str(tmp_path / "o"), "--chunk-dur", "0.1",
               "--overlap", "0.02", "--quiet", model=tiny_model) == 0
    assert len(built) == 1


def test_layout_same_names_and_default_folder(song, tiny_model, tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    twin = str(sub / "song.flac")
    ffmpeg("-i", song, twin)
    monkeypatch.chdir(tmp_path)
    assert run("--inputs", song, twin, "--quiet", model=tiny_model) == 0
    assert stems_of(tmp_path / "song") == STEMS and stems_of(tmp_path / "song_2") == STEMS


def test_bad_inputs_one_line_each_others_still_separated(song, tiny_model, tmp_path, capsys):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "readme.wav"
    text.write_text("not audio at all\n" * 20)
    missing = str(tmp_path / "missing.flac")
    out = str(tmp_path / "out")
    code = run("--inputs", str(empty), song, str(text), missing, str(tmp_path), "--outdir", out,
               "--quiet", model=tiny_model)
    assert code == 1
    assert stems_of(os.path.join(out, "song")) == STEMS
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("xumx.test")]
    assert len(err) == 5, "\n".join(err)
    for path, cause in [(empty, "empty"), (text, "not an audio file"), (missing, "no such file"),
                        (tmp_path, "folder")]:
        assert any(str(path) in ln and cause in ln for ln in err), (path, err)
    assert "4 of 5 inputs failed" in err[-1]
    assert not os.path.exists(os.path.join(out, "readme"))


def test_missing_and_broken_model(song, tmp_path, capsys):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    for model, cause in [(str(tmp_path / "nope.h5"), "no such file"), (str(broken), "HDF5")]:
        assert run("--inputs", song, "--outdir", str(tmp_path / "o"), model=model) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and model in err[0] and cause in err[0], err
        assert "Traceback" not in err[0]


def test_unwritable_output_folder(song, tiny_model, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert run("--inputs", song, "--outdir", str(blocker), "--quiet", model=tiny_model) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0] and "output folder" in err[0]


def test_interrupt_leaves_no_partial_stems(song, tiny_model, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the stems are being streamed to their temporary files: none is kept."""
    real, calls = audio._Encoder.write, []
    out = str(tmp_path / "out")

    def interrupted(self, block):
        calls.append(sorted(os.listdir(os.path.join(out, "song"))))
        if len(calls) == 6:   # half-way: every stem has a temporary file with samples in it
            raise KeyboardInterrupt
        return real(self, block)

    monkeypatch.setattr(audio._Encoder, "write", interrupted)
    assert run("--inputs", song, "--outdir", out, "--quiet", "--chunk-dur", "0.1", "--overlap",
               "0.02", model=tiny_model) == 130
    assert len(calls[-1]) == 4 and all(f.endswith(files.SUFFIX) for f in calls[-1])
    assert os.listdir(out) == []    # no stems, no temporaries, not even an empty folder
    assert "interrupted" in capsys.readouterr().err


def test_bad_flag_values_are_usage_errors(song, tiny_model, capsys):
    for bad in (["--format", "flac", "--bits", "float"], ["--start", "-1"],
                ["--output-rate", "fast"], ["--chunk-dur", "1", "--overlap", "0.5"]):
        assert run("--inputs", song, *bad, model=tiny_model) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("xumx.test: error: "), err
    assert run("--inputs", song, "--targets", "guitar", "--quiet", model=tiny_model) == 1


# ----------------------------------------------------------------- published weights download
class _Response(io.BytesIO):
    headers = {}


@pytest.mark.parametrize("network", ["offline", "wrong bytes"])
def test_without_model_failed_download_says_how_to_download(song, tmp_path, monkeypatch, capsys,
                                                             network):
    def opener(url, timeout=None):
        if network == "offline":
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return _Response(b"<html>captive portal</html>")
    monkeypatch.setattr(urllib.request, "urlopen", opener)
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    assert run("--inputs", song, "--outdir", str(tmp_path / "o")) == 1
    text = capsys.readouterr().err
    err = [ln for ln in text.splitlines() if ln.startswith("xumx.test:")]   # not the byte bar
    assert len(err) == 1 and "Traceback" not in text
    cause = "name resolution" if network == "offline" else "has SHA-1"
    for part in (PUBLISHED_URL, PUBLISHED_SHA1, "sha1sum", "--model", cause):
        assert part in err[0]
    assert os.listdir(tmp_path / "cache") == []


def test_download_checksum_and_cache(tmp_path):
    from xumx.pretrained import DownloadError, published_model
    folder = str(tmp_path / "cache")
    good = b"pretend weights" * 1000
    sha = hashlib.sha1(good).hexdigest()
    with pytest.raises(DownloadError, match="SHA-1") as e:
        published_model("https://example.invalid/x-umx.h5", sha, folder,
                        opener=lambda url, timeout: _Response(b"wrong bytes"))
    assert "sha1sum" in str(e.value) and os.listdir(folder) == []
    src = tmp_path / "served.h5"
    src.write_bytes(good)
    path = published_model(src.as_uri(), sha, folder)        # a real urllib fetch (file://)
    assert open(path, "rb").read() == good and os.listdir(folder) == ["x-umx.h5"]

    def no_network(url, timeout):
        raise AssertionError("the cached file should be used")
    assert published_model("https://example.invalid/x-umx.h5", sha, folder, opener=no_network) == path


def test_cache_folder_rule(monkeypatch, tmp_path):
    from xumx.pretrained import cache_dir
    monkeypatch.delenv("XUMX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == os.path.join(str(tmp_path), "xumx")
    monkeypatch.setenv("XUMX_CACHE", "/somewhere")
    assert cache_dir() == "/somewhere"


# ----------------------------------------------------------------- the module and its help
def test_help_lists_every_flag_and_the_readme_table_matches():
    help_text = build_parser("test").format_help()
    published = ["--inputs", "--targets", "--out-dir", "--outdir", "--start", "--duration",
                 "--model", "--context", "--softmask", "--niter", "--alpha", "--sample-rate",
                 "--residual-model", "--chunk-dur", "--umx-infer"]
    added = ["--format", "--bits", "--bitrate", "--output-rate", "--overlap", "--device-id", "--quiet"]
    for flag in published + added:
        assert re.search(rf"(^|[\s,]){flag}\b", help_text), flag
    in_help = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))
    from conftest import flag_rows   # docs/flags.md, which the README links
    in_table = {n for names in flag_rows("test") for n in names if n.startswith("--")}
    assert in_table == in_help - {"--help"}


def test_import_does_no_work(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--no-such-flag"])
    mod = importlib.reload(importlib.import_module("xumx.test"))
    assert callable(mod.separate) and callable(mod.separate_args_dict) and callable(mod.main)


def test_module_entry_point_runs(song, tiny_model, tmp_path):
    out = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "xumx.test", "--inputs", song, "--model",
                           tiny_model, "--outdir", out], env=env, cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert stems_of(os.path.join(out, "song")) == STEMS
    assert "song.wav: 0:00.250 separated" in proc.stdout


def test_a_musdb_mixture_is_named_after_its_track(tmp_path):
    """<track>/mixture.wav (MUSDB18's WAV layout, the demo's test song) gives <out>/<track>/."""
    from xumx.inference import output_folders
    track = tmp_path / "Artist - Title"
    track.mkdir()
    song = str(track / "mixture.wav")
    assert output_folders([song, str(tmp_path / "mix.flac")], "out") == [
        os.path.join("out", "Artist - Title"), os.path.join("out", "mix")]
