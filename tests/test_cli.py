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
from xumx import files
from xumx import encode
import oracles
from xumx.parsing import build_parser
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


@pytest.fixture
def terminal(monkeypatch):
    """stderr counts as a terminal: progress bars are drawn."""
    from xumx import progress
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)


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
    assert captured.err == ""          # stderr is not a terminal here: no progress frames


def test_progress_bar_only_on_a_terminal(song, tiny_model, tmp_path, request, capsys):
    """Redirected stderr (a log file) gets no '\r' frames, only the plain summary line on
    stdout; a terminal gets the bar."""
    log = tmp_path / "log.txt"
    r = subprocess.run([sys.executable, "-m", "xumx.test", str(song), "--model", tiny_model,
                        "--outdir", str(tmp_path / "a")], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=open(log, "w"))
    assert r.returncode == 0 and "real time" in r.stdout.decode()
    assert "\r" not in log.read_text() and "chunk" not in log.read_text()
    request.getfixturevalue("terminal")
    assert run("--inputs", song, "--outdir", str(tmp_path / "b"), model=tiny_model) == 0
    assert "chunk" in capsys.readouterr().err


def test_ctrl_c_on_a_terminal_starts_a_new_line(monkeypatch, capsys):
    from xumx import cli, parsing

    def interrupted(*a, **k):
        raise KeyboardInterrupt()
    monkeypatch.setattr(parsing, "parse", interrupted)
    assert main(["x.wav"]) == 130
    assert capsys.readouterr().err.startswith("xumx.test: interrupted")   # a log: no blank line
    monkeypatch.setattr(cli, "on_terminal", lambda stream=None: True)
    assert main(["x.wav"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("\nxumx.test: interrupted") and err.count("\n") == 2, repr(err)


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


@pytest.mark.parametrize("fmt,quality,subtype", [("wav", "24", "PCM_24"), ("wav", "float", "FLOAT"),
                                                 ("flac", "24", "PCM_24"), ("mp3", "128", None)])
def test_output_formats(song, tiny_model, tmp_path, fmt, quality, subtype):
    out = str(tmp_path / "out")
    flag = "--bitrate" if fmt == "mp3" else "--bits"
    assert run("--inputs", song, "--outdir", out, "--format", fmt, flag, quality, "--quiet",
               model=tiny_model) == 0
    folder = os.path.join(out, "song")
    assert stems_of(folder) == STEMS
    for s in STEMS:
        path = os.path.join(folder, f"{s}.{fmt}")
        if subtype:
            assert sf.info(path).subtype == subtype
        y, rate, info = oracles.load(path)
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
    mix = oracles.resample(sf.read(song, dtype="float32")[0], 44100, 8000, length=len(total))
    assert np.sqrt(np.mean((total - mix) ** 2)) < 1e-3 * np.sqrt(np.mean(mix ** 2))


def test_umx_infer_reads_a_folder_of_target_files(song, tmp_path):
    from conftest import tiny_config, write_umx_folder
    from seeded import random_arrays
    cfg = tiny_config(crossing=False)
    folder = write_umx_folder(tmp_path / "umx", cfg, random_arrays(cfg, seed=2))
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--umx-infer", "--quiet", model=folder) == 0
    assert stems_of(os.path.join(out, "song")) == STEMS


def test_chunked_run_and_model_rate_output(song, tiny_model, tmp_path, capsys, terminal):
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


def test_batched_chunks_give_the_stems_of_one_chunk_at_a_time(song, tiny_model, tmp_path,
                                                               monkeypatch):
    """xumx.test with --batch-frames runs equal chunks through the network together, and
    writes the stems of the default (0: one chunk at a time) to >= 100 dB."""
    from xumx.engine import OnnxNet
    batches = []
    real = OnnxNet.batch_sources
    monkeypatch.setattr(OnnxNet, "batch_sources",
                        lambda self, mag: batches.append(mag.shape[1]) or real(self, mag))
    out = {}
    for frames in (None, "2600"):
        out[frames] = str(tmp_path / f"out-{frames}")
        extra = ("--batch-frames", frames) if frames else ()
        assert run("--inputs", song, "--outdir", out[frames], "--chunk-dur", "0.1", "--overlap",
                   "0.02", "--output-rate", "model", "--bits", "float", "--quiet", *extra,
                   model=tiny_model) == 0
    assert batches == [1, 1, 1, 2, 1], batches   # 3 chunks: 2 of 0.1 s, then the rest
    for s in STEMS:
        a, _ = sf.read(os.path.join(out["2600"], "song", s + ".wav"))
        b, _ = sf.read(os.path.join(out[None], "song", s + ".wav"))
        assert a.shape == b.shape
        assert 10 * np.log10(np.sum(b ** 2) / max(np.sum((a - b) ** 2), 1e-300)) >= 100


def _three_songs(tmp_path):
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"song{k}.wav"))
        sf.write(paths[-1], sine_mix(N + 1000 * k, 44100, seed=k), 44100, subtype="PCM_16")
    return paths


def _batch_sizes(monkeypatch):
    """The batch size of each network run (a wrapped OnnxNet.batch_sources)."""
    from xumx.engine import OnnxNet
    runs = []
    real = OnnxNet.batch_sources
    monkeypatch.setattr(OnnxNet, "batch_sources",
                        lambda self, mag: runs.append(mag.shape[1]) or real(self, mag))
    return runs


def ser_db(got, want):
    """Signal-to-error ratio of ``got`` against ``want`` in dB (inf when equal)."""
    err = np.sum((got - want) ** 2)
    return np.inf if err == 0 else 10 * np.log10(np.sum(want ** 2) / err)


BATCH_ARGS = ("--chunk-dur", "0.1", "--overlap", "0.02", "--bits", "float", "--quiet")


def test_chunks_of_several_inputs_share_network_runs(tiny_model, tmp_path, monkeypatch):
    """xumx.test of 3 songs with --batch-frames large enough for all their chunks: the network
    runs the equal chunks of every song at once (the tiny model runs at 8 kHz: songs of 2000,
    2181 and 2363 samples, chunks of 800 every 640: 2 + 3 + 3 of 800), then their three last
    chunks (of different lengths: one run each); each song's stems are those of one
    chunk at a time (--batch-frames 0: one chunk per run) to >= 100 dB (not bit for bit: a
    batched run rounds some samples differently, by one float32 step). With 0 each input is
    opened only once the one before is finished (its stems committed); batched, all three
    are open before the first is finished (the per-input seams of stemfiles._Song)."""
    from xumx import stemfiles
    songs, runs = _three_songs(tmp_path), _batch_sizes(monkeypatch)
    seams, real_open, real_finish = [], stemfiles._Song.open, stemfiles._Song.finish
    monkeypatch.setattr(stemfiles._Song, "open",
                        lambda song: seams.append(("open", song.path)) or real_open(song))
    monkeypatch.setattr(stemfiles._Song, "finish",
                        lambda song: real_finish(song) or seams.append(("done", song.path)))
    out = {}
    for frames in ("0", "100000"):
        runs.clear()
        seams.clear()
        out[frames] = str(tmp_path / f"out-{frames}")
        assert run("--inputs", *songs, "--outdir", out[frames], "--batch-frames", frames,
                   *BATCH_ARGS, model=tiny_model) == 0
        assert runs == ([1] * 11 if frames == "0" else [8, 1, 1, 1]), (frames, runs)
        opened, done = [("open", p) for p in songs], [("done", p) for p in songs]
        assert seams == ([e for pair in zip(opened, done) for e in pair] if frames == "0"
                         else opened + done), (frames, seams)
    for k in range(3):
        for s in STEMS:
            a, _ = sf.read(os.path.join(out["100000"], f"song{k}", s + ".wav"))
            b, _ = sf.read(os.path.join(out["0"], f"song{k}", s + ".wav"))
            assert a.shape == b.shape == (N + 1000 * k, 2)
            assert ser_db(a, b) >= 100, (k, s, ser_db(a, b))


@pytest.mark.parametrize("where", ["decoding", "writing"])
def test_an_input_failing_inside_a_shared_batch_fails_alone(where, tiny_model, tmp_path,
                                                            monkeypatch, capsys):
    """The middle one of 3 songs fails while its chunks share a batch with the others' (its
    decoder raises after two blocks, or its stems cannot be written): one line, exit 1, no
    folder or temporary of it left; the other two are written, the stems of separating each
    alone."""
    from xumx import decode, encode as encoder, stemfiles
    from xumx.errors import AudioError, WriteError
    songs = _three_songs(tmp_path)
    monkeypatch.setattr(stemfiles, "DECODE_BLOCK", 2048)   # several blocks per song
    real_stream, real_write = decode.stream, encoder.StemWriter.write

    def stream(path, *a, **k):
        for i, block in enumerate(real_stream(path, *a, **k)):
            if where == "decoding" and path == songs[1] and i == 2:
                raise AudioError(f"{path}: broken on purpose")
            yield block

    def write(self, path, audio):
        if where == "writing" and os.sep + "song1" + os.sep in path:
            raise WriteError(28, f"{path}: cannot write (No space left on device)")
        return real_write(self, path, audio)
    monkeypatch.setattr(decode, "stream", stream)
    monkeypatch.setattr(encoder.StemWriter, "write", write)
    alone = str(tmp_path / "alone")
    for k in (0, 2):
        assert run("--inputs", songs[k], "--outdir", alone, *BATCH_ARGS, model=tiny_model) == 0
    runs, out = _batch_sizes(monkeypatch), str(tmp_path / "out")
    capsys.readouterr()
    assert run("--inputs", *songs, "--outdir", out, "--batch-frames", "100000", *BATCH_ARGS,
               model=tiny_model) == 1
    assert max(runs) > 2, runs   # the chunks of more than one song in a run
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("xumx.test")]
    cause = "broken on purpose" if where == "decoding" else "No space left on device"
    assert len(err) == 2 and "song1" in err[0], err
    assert cause in err[0] and "1 of 3 inputs failed" in err[1], err
    assert sorted(os.listdir(out)) == ["song0", "song2"]   # no folder, no temporary of song1
    for k in (0, 2):
        assert stems_of(os.path.join(out, f"song{k}")) == STEMS
        for s in STEMS:
            a, _ = sf.read(os.path.join(out, f"song{k}", s + ".wav"))
            b, _ = sf.read(os.path.join(alone, f"song{k}", s + ".wav"))
            assert a.shape == b.shape and ser_db(a, b) >= 100, (k, s)


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


@pytest.mark.parametrize("frames", ["0", "100000"])   # one input at a time; all in one batch
def test_bad_inputs_one_line_each_others_still_separated(frames, song, tiny_model, tmp_path,
                                                         capsys):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "readme.wav"
    text.write_text("not audio at all\n" * 20)
    missing = str(tmp_path / "missing.flac")
    out = str(tmp_path / "out")
    folder = tmp_path / "no-audio"
    folder.mkdir()
    code = run("--inputs", str(empty), song, str(text), missing, str(folder), "--outdir", out,
               "--quiet", "--batch-frames", frames, model=tiny_model)
    assert code == 1
    assert stems_of(os.path.join(out, "song")) == STEMS
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("xumx.test")]
    assert len(err) == 5, "\n".join(err)
    for path, cause in [(empty, "empty"), (text, "not an audio file"), (missing, "no such file"),
                        (folder, "folder without audio files")]:
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
    real, calls = encode._Encoder.write, []
    out = str(tmp_path / "out")

    def interrupted(self, block):
        calls.append(sorted(os.listdir(os.path.join(out, "song"))))
        if len(calls) == 6:   # half-way: every stem has a temporary file with samples in it
            raise KeyboardInterrupt
        return real(self, block)

    monkeypatch.setattr(encode._Encoder, "write", interrupted)
    assert run("--inputs", song, "--outdir", out, "--quiet", "--chunk-dur", "0.1", "--overlap",
               "0.02", model=tiny_model) == 130
    assert len(calls[-1]) == 4 and all(f.endswith(files.SUFFIX) for f in calls[-1])
    # no stems, no temporaries, not even an empty folder: --outdir's own, which this run made,
    # is gone too (issue 22 item 6)
    assert not os.path.exists(out)
    assert capsys.readouterr().err.splitlines() == [
        "xumx.test: interrupted; stems already finished are kept, no partial stem was written; "
        f"not separated: {song}"]


def test_interrupt_inside_a_shared_batch_keeps_only_finished_inputs(tiny_model, tmp_path,
                                                                     monkeypatch, capsys):
    """Ctrl-C while the second of 3 songs is written, its chunks and the third's in one batch
    with the first's: the first song's stems (committed) stay; the second's temporaries and
    the third's folder (made when its chunks joined the batch) are gone."""
    songs, out = _three_songs(tmp_path), str(tmp_path / "out")
    real, calls = encode.StemWriter.write, []
    opened = []

    def interrupted(self, path, audio):
        if os.sep + "song1" + os.sep in path:
            calls.append(path)
            opened.append(sorted(os.listdir(out)))
            if len(calls) == 6:   # song1 half-written
                raise KeyboardInterrupt
        return real(self, path, audio)
    monkeypatch.setattr(encode.StemWriter, "write", interrupted)
    assert run("--inputs", *songs, "--outdir", out, "--batch-frames", "100000", *BATCH_ARGS,
               model=tiny_model) == 130
    assert opened[-1] == ["song0", "song1", "song2"]   # all three open at once
    assert os.listdir(out) == ["song0"] and stems_of(os.path.join(out, "song0")) == STEMS
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"not separated: {songs[1]}, {songs[2]}")


def test_bad_flag_values_are_usage_errors(song, tiny_model, capsys):
    for bad in (["--format", "flac", "--bits", "float"], ["--start", "-1"],
                ["--output-rate", "fast"], ["--chunk-dur", "1", "--overlap", "0.5"]):
        assert run("--inputs", song, *bad, model=tiny_model) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("xumx.test: error: "), err
    # a target the model does not have is a bad command line too (issue 22 item 10)
    assert run("--inputs", song, "--targets", "guitar", "--quiet", model=tiny_model) == 2


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
    assert in_table == in_help - {"--help", "--version"}   # every command's: docs/flags.md says so


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
    from xumx.stemfiles import output_folders
    track = tmp_path / "Artist - Title"
    track.mkdir()
    song = str(track / "mixture.wav")
    assert output_folders([song, str(tmp_path / "mix.flac")], "out") == [
        os.path.join("out", "Artist - Title"), os.path.join("out", "mix")]


# ----------------------------------------------------------------- issue 15: flags and times
def test_a_sample_rate_that_contradicts_the_model_is_refused(song, tiny_model, tmp_path, capsys):
    """tiny_model's sidecar says 8000 Hz: --sample-rate 16000 is one line, status 2; the same
    rate is accepted; a file without a sidecar runs at the rate given."""
    out = str(tmp_path / "out")
    assert run("--inputs", song, "--outdir", out, "--sample-rate", "16000", model=tiny_model) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--sample-rate 16000" in err[0] and "8000 Hz" in err[0], err
    assert not os.path.exists(out)
    assert run("--inputs", song, "--outdir", out, "--sample-rate", "8000", "--quiet",
               model=tiny_model) == 0
    bare = str(tmp_path / "bare.h5")
    with open(tiny_model, "rb") as f, open(bare, "wb") as g:
        g.write(f.read())
    from xumx import Separator
    assert Separator.load(bare).sample_rate == 44100          # no sidecar: the default
    assert Separator.load(bare, sample_rate=8000).sample_rate == 8000


@pytest.mark.parametrize("bad,words", [(["--format", "mp3", "--bits", "24"], ["--bits", "mp3"]),
                                       (["--format", "wav", "--bitrate", "128"], ["--bitrate", "mp3"]),
                                       (["--format", "flac", "--bits", "float"], ["flac"])])
def test_format_flags_that_do_not_apply_are_errors(song, tiny_model, bad, words, capsys):
    from xumx.config import OutputConfig
    assert run("--inputs", song, *bad, model=tiny_model) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("xumx.test: error: "), err
    assert all(w in err[0] for w in words), err
    with pytest.raises(ValueError):   # the dataclass checks them, not the command line
        OutputConfig(inputs=("a.wav",), out_format="mp3", bits="24")
    OutputConfig(inputs=("a.wav",), out_format="mp3", bitrate=128)
    OutputConfig(inputs=("a.wav",), out_format="flac", bits="24")


@pytest.mark.parametrize("text,seconds", [("90", 90.0), ("1:30", 90.0), ("1:02.5", 62.5),
                                          ("0:00.250", 0.25), ("1:00:05", 3605.0), ("2.5", 2.5)])
def test_times_as_seconds_or_clock(text, seconds):
    from xumx.parsing import parse
    output = parse("test", ["--inputs", "a.wav", "--start", text, "--duration", text])[0]
    assert output.start == output.duration == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1:60", "a:10", "1::2", "1:2:3:4", ":30"])
def test_a_malformed_time_is_a_usage_error(song, tiny_model, text, capsys):
    assert run("--inputs", song, "--start", text, model=tiny_model) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--start" in err[0] and "m:ss" in err[0], err


def test_times_past_the_end_say_the_length(tiny_model, tmp_path, capsys):
    """A 2 s file: --start 3 says that it is 2 s long; --start 1.5 --duration 1 warns (one
    line) that it gives 0.5 s, and gives it."""
    path = str(tmp_path / "two.wav")
    sf.write(path, sine_mix(88200, 44100), 44100, subtype="PCM_16")
    out = str(tmp_path / "out")
    assert run("--inputs", path, "--outdir", out, "--start", "3", "--quiet", model=tiny_model) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "0:02.000" in err[0] and "--start" in err[0], err
    assert run("--inputs", path, "--outdir", out, "--start", "0:01.5", "--duration", "1",
               "--quiet", model=tiny_model) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("xumx.test: warning: ") and "0:00.500" in err[0], err
    assert sf.info(os.path.join(out, "two", "bass.wav")).frames == 22050
    assert run("--inputs", path, "--outdir", out, "--start", "1", "--duration", "1",
               "--quiet", model=tiny_model) == 0
    assert capsys.readouterr().err == ""   # exactly to the end: no warning


# ----------------------------------------------------------------- issue 15: inputs and names
def test_positional_inputs_folders_and_wildcards(song, tiny_model, tmp_path, capsys):
    """Inputs without --inputs (as umx and demucs take them), a folder as its audio files and
    a quoted wildcard as its matches give the same stems as the files named one by one."""
    songs = tmp_path / "songs"
    songs.mkdir()
    for name in ("b.wav", "a.flac"):
        sf.write(str(songs / name), sine_mix(N, 44100), 44100)
    (songs / "notes.txt").write_text("not audio")
    (songs / "sub").mkdir()
    for argv in ([str(songs)], [str(songs / "*.wav"), str(songs / "a.*")],
                 ["--inputs", str(songs / "[ab].*")], [str(songs / "a.flac"), "--inputs",
                                                   str(songs / "b.wav")]):
        out = tmp_path / "out"
        assert run(*argv, "--outdir", str(out), "--quiet", model=tiny_model) == 0, argv
        assert sorted(os.listdir(out)) == ["a", "b"], argv
        assert stems_of(str(out / "a")) == STEMS
        import shutil
        shutil.rmtree(out)
    assert run(str(songs / "sub"), model=tiny_model) == 1
    assert "without audio files" in capsys.readouterr().err
    assert run(str(songs / "*.mp3"), model=tiny_model) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "matches no file" in err[0], err
    assert run("--outdir", str(tmp_path), model=tiny_model) == 2
    assert "python -m xumx.test FILE" in capsys.readouterr().err


def test_a_musdb_track_folder_is_its_mixture(tiny_model, tmp_path):
    track = tmp_path / "Artist - Title"
    track.mkdir()
    for name in ("mixture", "bass", "vocals"):
        sf.write(str(track / f"{name}.wav"), sine_mix(N, 44100), 44100)
    from xumx.stemfiles import expand_inputs
    assert expand_inputs([str(track)]) == [str(track / "mixture.wav")]


@pytest.mark.parametrize("typo,right", [("--outdri", "--outdir"), ("--quite", "--quiet"),
                                        ("--taregts", "--targets")])
def test_a_mistyped_flag_suggests_the_close_one(song, typo, right, capsys):
    assert run(song, typo) == 2 if typo == "--quite" else run(song, typo, "x") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"did you mean {right}?" in err[0], err


def test_a_training_run_folder_as_model_uses_its_best_weights(song, tiny_model, tmp_path):
    import shutil
    from xumx.weights import sidecar_path
    from xumx.modelfiles import BEST_NAME
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(tiny_model, run_dir / BEST_NAME)
    shutil.copy(sidecar_path(tiny_model), sidecar_path(str(run_dir / BEST_NAME)))
    assert run(song, "--outdir", str(tmp_path / "a"), "--quiet", model=tiny_model) == 0
    assert run(song, "--outdir", str(tmp_path / "b"), "--quiet", model=str(run_dir)) == 0
    for s in STEMS:
        a, _ = sf.read(str(tmp_path / "a" / "song" / f"{s}.wav"))
        b, _ = sf.read(str(tmp_path / "b" / "song" / f"{s}.wav"))
        np.testing.assert_array_equal(a, b)


def test_a_folder_without_best_weights_says_so(song, tmp_path, capsys):
    assert run(song, model=str(tmp_path)) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "best_xumx.h5" in err[0] and "--umx-infer" in err[0], err


def test_a_stem_mp4_is_named_without_stem_and_one_target_prints_its_file(tiny_model, tmp_path,
                                                                        capsys):
    from xumx.stemfiles import input_name
    assert input_name("/data/Artist - Song.stem.mp4") == "Artist - Song"
    assert input_name("/data/.stem.mp4") == ".stem"
    path = str(tmp_path / "Artist - Song.stem.mp4")
    wav = str(tmp_path / "x.wav")
    sf.write(wav, sine_mix(N, 44100), 44100)
    ffmpeg("-i", wav, "-c:a", "aac", path)
    out = tmp_path / "out"
    assert run(path, "--outdir", str(out), "--targets", "vocals", model=tiny_model) == 0
    assert os.listdir(out) == ["Artist - Song"]
    line = capsys.readouterr().out.strip()
    assert line.endswith(os.path.join(str(out), "Artist - Song", "vocals.wav")), line
    assert "{" not in line


@pytest.mark.parametrize("command", ["test", "train", "eval", "export", "synth", "demo"])
def test_help_is_plain_text(command):
    text = build_parser(command).format_help()
    assert not re.search(r"``|:(func|class|mod|data):|^\s*\.\. ", text, re.M), text
