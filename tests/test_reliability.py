"""Reliability (issue 7): every kind of bad or odd input gives correct stems or one clear line.

Separation inputs run through ``xumx.test.main`` in-process on generated files; API inputs
through ``separate_args_dict`` (plus a hypothesis property test); parameter files through
``load_xumx`` and the CLI; interruptions (SIGINT/SIGTERM, SIGKILL during training) through
subprocesses.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import adam_states, checkpoint_meta, sine_mix, tiny_config
from xumx import files
from xumx.config import MAX_AMPLITUDE
from xumx.errors import InputError
from xumx.test import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEMS = ["bass", "drums", "other", "vocals"]


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def separate(path, model, out, *flags):
    return main(["--inputs", str(path), "--outdir", str(out), "--quiet", "--model", model, *flags])


def stems_ok(folder, frames, channels=2, rate=None):
    """The four stems exist with exactly ``frames`` samples, finite; returns them."""
    assert sorted(os.path.splitext(f)[0] for f in os.listdir(folder)) == STEMS
    out = {}
    for s in STEMS:
        y, r = sf.read(os.path.join(folder, s + ".wav"), dtype="float32", always_2d=True)
        assert y.shape == (frames, channels), s
        assert np.isfinite(y).all(), s
        if rate:
            assert r == rate
        out[s] = y
    return out


def fails_cleanly(code, capsys, out, *words):
    """Non-zero exit, ONE line on stderr naming the problem, nothing written under ``out``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1, err
    assert err[0].startswith("xumx.test: ") and "Traceback" not in err[0]
    for w in words:
        assert w in err[0], err[0]
    assert not os.path.exists(out) or not os.listdir(out), os.listdir(out)
    return err[0]


# --------------------------------------------------------------------------- broken files
def _mp3(tmp_path, name="song.mp3", seconds=1.0):
    path = str(tmp_path / name)
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100",
           "-ac", "2", path)
    return path


@pytest.mark.parametrize("case,words", [
    ("zero-length", ["empty"]),
    ("header-only wav", ["no audio samples"]),
    ("random bytes .mp3", ["not an audio file"]),
    ("text file", ["not an audio file"]),
    ("missing", ["no such file"]),
    ("directory", ["folder"]),
])
def test_unreadable_inputs_fail_with_one_line(case, words, tmp_path, tiny_model, capsys):
    if case == "zero-length":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
    elif case == "header-only wav":
        path = tmp_path / "header.wav"
        sf.write(str(path), np.zeros((0, 2), np.float32), 44100, subtype="PCM_16")
        assert path.stat().st_size == 44
    elif case == "random bytes .mp3":
        path = tmp_path / "noise.mp3"
        path.write_bytes(np.random.RandomState(0).bytes(20000))
    elif case == "text file":
        path = tmp_path / "notes.wav"
        path.write_text("these are not samples\n" * 100)
    elif case == "missing":
        path = tmp_path / "absent.wav"
    else:
        path = tmp_path / "folder.wav"
        path.mkdir()
    out = tmp_path / "out"
    line = fails_cleanly(separate(path, tiny_model, out), capsys, out, *words)
    assert str(path) in line


def test_truncated_mp3_separates_what_is_there(tmp_path, tiny_model, capsys):
    """A cut download: ffmpeg decodes the frames that are complete; the stems have the length
    of what was decoded, and are finite."""
    full = _mp3(tmp_path, "full.mp3", 1.0)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:len(data) // 2])
    decoded = str(tmp_path / "decoded.wav")   # what ffmpeg itself makes of it
    ffmpeg("-i", str(cut), decoded)
    frames = sf.info(decoded).frames
    assert 0.2 * 44100 < frames < 0.8 * 44100
    out = tmp_path / "out"
    assert separate(cut, tiny_model, out) == 0
    stems_ok(out / "cut", frames, rate=44100)


# --------------------------------------------------------------------------- containers
@pytest.mark.parametrize("container,codec", [("mkv", "flac"), ("mp4", "aac")])
def test_video_with_audio_track_separates_its_audio(container, codec, tmp_path, tiny_model):
    path = str(tmp_path / f"clip.{container}")
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=0.5:size=64x48:rate=10",
           "-f", "lavfi", "-i", "sine=frequency=330:duration=0.5:sample_rate=44100",
           "-ac", "2", "-c:v", "mpeg4", "-c:a", codec, "-shortest", path)
    out = tmp_path / "out"
    assert separate(path, tiny_model, out) == 0
    stems_ok(out / "clip", 22050, rate=44100)


def test_video_without_audio_is_one_line(tmp_path, tiny_model, capsys):
    path = str(tmp_path / "silent film.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=0.3:size=64x48:rate=10", "-c:v", "mpeg4", path)
    out = tmp_path / "out"
    fails_cleanly(separate(path, tiny_model, out), capsys, out, "no audio stream")


# --------------------------------------------------------------------------- odd content
def test_silence_gives_silent_stems(tmp_path, tiny_model):
    path = str(tmp_path / "silence.wav")
    sf.write(path, np.zeros((4000, 2), np.float32), 44100, subtype="PCM_16")
    out = tmp_path / "out"
    assert separate(path, tiny_model, out, "--bits", "float") == 0
    for y in stems_ok(out / "silence", 4000).values():
        assert np.abs(y).max() < 1e-6


@pytest.mark.parametrize("value,words", [(np.nan, ["NaN"]), (np.inf, ["NaN or infinity"]),
                                         (3e7, ["peak at 3e+07"])])
def test_nan_inf_and_absurd_samples_are_a_clear_error(value, words, tmp_path, tiny_model, capsys):
    """Policy: samples that are not finite, or beyond +-1e6 (full scale is 1), are refused with
    one line (never separated into NaN stems, never silently changed)."""
    audio = sine_mix(4000, 44100)
    audio[100, 0] = value
    path = str(tmp_path / "odd.wav")
    sf.write(path, audio, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    fails_cleanly(separate(path, tiny_model, out), capsys, out, path, *words)


@pytest.mark.parametrize("frames", [1, 5, 63])
def test_shorter_than_one_hop(frames, tmp_path, tiny_model):
    """Fewer samples than one STFT hop (64 at the tiny model's 8 kHz) still give stems of
    exactly the input's length."""
    path = str(tmp_path / "tiny.wav")
    sf.write(path, sine_mix(frames, 8000), 8000, subtype="FLOAT")
    out = tmp_path / "out"
    assert separate(path, tiny_model, out, "--bits", "float") == 0
    stems_ok(out / "tiny", frames, rate=8000)


@pytest.mark.parametrize("rate", [8000, 192000])
def test_low_and_high_sample_rates(rate, tmp_path, tiny_model):
    frames = rate // 4
    path = str(tmp_path / f"r{rate}.wav")
    sf.write(path, sine_mix(frames, rate), rate, subtype="PCM_24")
    out = tmp_path / "out"
    assert separate(path, tiny_model, out) == 0
    stems_ok(out / f"r{rate}", frames, rate=rate)


def test_float_beyond_full_scale(tmp_path, tiny_model, capsys):
    """32-bit float input peaking at 8: float output keeps the level; 16-bit output clips with a
    warning line."""
    audio = 8.0 * sine_mix(4000, 8000)   # at the model's rate: no resampling, sum = mixture
    path = str(tmp_path / "loud.wav")
    sf.write(path, audio, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    assert separate(path, tiny_model, out, "--bits", "float") == 0
    stems = stems_ok(out / "loud", 4000)
    total = sum(stems.values())
    assert np.abs(total).max() > 2.0
    np.testing.assert_allclose(total, audio, atol=0.05 * np.abs(audio).max())
    capsys.readouterr()
    assert separate(path, tiny_model, tmp_path / "out16") == 0
    assert "clipped" in capsys.readouterr().err
    stems_ok(tmp_path / "out16" / "loud", 4000)


def test_path_with_spaces_and_non_ascii(tmp_path, tiny_model):
    folder = tmp_path / "my música ♫"
    folder.mkdir()
    path = folder / "Björk – été 2.wav"
    sf.write(str(path), sine_mix(3000, 44100), 44100, subtype="PCM_16")
    out = tmp_path / "sortie é"
    assert separate(path, tiny_model, out) == 0
    stems_ok(out / "Björk – été 2", 3000)


# --------------------------------------------------------------------------- API input
def _args(model):
    return dict(model=model, umx_infer=False, targets=None, softmask=False, alpha=1.0,
                residual_model=False, niter=1)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 3000), np.float32), r"\(channels, samples\).*audio\.T"),
    (np.zeros((1, 3000), np.float32), r"\(channels, samples\).*audio\.T"),
    (np.zeros((6, 3000), np.float32), r"1 or 2 channels"),
    (np.zeros((3000, 2, 1), np.float32), r"\(nb_timesteps, nb_channels\)"),
    (np.zeros((), np.float32), r"\(nb_timesteps, nb_channels\)"),
    (np.zeros((3000, 0), np.float32), r"1 or 2 channels"),
    (np.zeros((0, 2), np.float32), r"empty"),
    (np.zeros((3000, 2), np.complex64), r"floating point"),
    (np.zeros((3000, 2), bool), r"floating point"),
    (np.zeros((3000, 2), object), r"floating point"),
    ("song.wav", r"numpy array"),
    (np.full((3000, 2), 1e30, np.float32), r"peaks at 1e\+30.*\[-1, 1\]"),
    (np.full((3000, 2), np.inf, np.float64), r"NaN or infinite"),
])
def test_api_rejects_wrong_arrays_saying_what_is_expected(bad, match, tiny_model):
    from xumx.api import separate_args_dict
    with pytest.raises(ValueError, match=match) as e:
        separate_args_dict(bad, _args(tiny_model))
    assert "expected" in str(e.value) or "must" in str(e.value)   # says what is wanted


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", [1e-40, 1e-7, 1e6])
def test_api_extreme_but_allowed_values_give_finite_stems(dtype, value, tiny_model):
    """Up to the 1e6 limit (and down to subnormals) every float dtype separates to finite stems."""
    from xumx.api import separate_args_dict
    with np.errstate(over="ignore"):
        noise = (value * np.random.RandomState(0).uniform(-1, 1, (3000, 2))).astype(dtype)
        flat = np.full((3000, 2), value).astype(dtype)
    for audio in (noise, flat):
        if not np.isfinite(audio).all():   # 1e6 does not fit float16: refused as infinite
            with pytest.raises(ValueError, match="infinite"):
                separate_args_dict(audio, _args(tiny_model))
            continue
        out = separate_args_dict(audio, _args(tiny_model))
        for y in out.values():
            assert y.shape == audio.shape and np.isfinite(y).all()


def _refusal_is_due(audio, message) -> bool:
    """Whether the input checks had a reason to refuse ``audio`` with ``message``: mono and
    stereo of any length, float or int16, finite and within a sane peak, must be separated."""
    shape_ok = audio.ndim == 2 and audio.shape[1] in (1, 2) and audio.shape[0] >= 1
    with np.errstate(all="ignore"):
        values = audio.astype(np.float64)
    finite = bool(np.isfinite(values).all())
    peak = float(np.abs(values).max()) if values.size and finite else 0.0
    if "NaN or infinite" in message:
        return not finite
    if "peaks at" in message:
        return finite and peak > MAX_AMPLITUDE
    return not shape_ok


def test_api_property_finite_stems_of_the_input_shape_or_value_error(tiny_model):
    """Random shapes, lengths (1..5000), dtypes and values (huge, tiny, NaN): separate_args_dict
    returns finite stems of exactly the input's shape, or raises ValueError; nothing else."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from xumx.api import separate_args_dict
    args = _args(tiny_model)
    seen = []
    values = st.sampled_from([0.5, 0.0, 1e-40, 1e-30, 1e-7, 1.0, 7.0, 1e6, 1e30, 3e38,
                              np.nan, np.inf])

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(length=st.integers(1, 5000), channels=st.sampled_from([2, 1, 2, 0, 3]),
           transpose=st.sampled_from([False, False, False, True]),
           dtype=st.sampled_from([np.float32, np.float64, np.float32, np.float16, np.int16]),
           scale=values, spike=values, seed=st.integers(0, 2 ** 16))
    def check(length, channels, transpose, dtype, scale, spike, seed):
        r = np.random.RandomState(seed)
        with np.errstate(all="ignore"):
            audio = (scale * r.uniform(-1, 1, (length, channels)))
            if audio.size:
                audio.flat[r.randint(audio.size)] = spike
            audio = audio.astype(dtype)
        if transpose:
            audio = audio.T
        try:
            out = separate_args_dict(audio, args)
        except InputError as e:   # the input checks' own refusals, each naming the audio;
            assert str(e).startswith("audio "), e   # a ValueError from inside separation fails
            assert _refusal_is_due(audio, str(e)), (audio.shape, audio.dtype, str(e))
            seen.append("error")
            return
        seen.append("stems")
        assert sorted(out) == STEMS
        for y in out.values():
            assert y.shape == audio.shape and y.dtype == np.float32
            assert np.isfinite(y).all()
    check()
    assert seen.count("stems") >= 3 and seen.count("error") >= 3, seen   # both outcomes exercised


# --------------------------------------------------------------------------- parameter files
def test_weights_loading_never_unpickles(monkeypatch, tmp_path):
    """The loader reads HDF5 through h5py only; datasets that are not numbers (strings, variable
    length, opaque bytes such as a pickle) are refused before anything could decode them."""
    import inspect
    import pickle

    import h5py
    import xumx.weights as weights
    source = inspect.getsource(weights)
    for call in ("pickle.load", "np.load(", "allow_pickle", "load_parameters"):
        assert call not in source, call

    def forbidden(*a, **k):
        raise AssertionError("unpickling attempted")
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    cfg = tiny_config()
    from xumx.weights import WeightsError, load_xumx, write_h5
    from seeded import random_arrays
    payload = pickle.dumps({"not": "weights"})
    for kind, make in [
        ("vlen str", lambda f: f.create_dataset("x", data=["a", "bc"], dtype=h5py.string_dtype())),
        ("vlen float", lambda f: f.create_dataset("x", (2,), dtype=h5py.vlen_dtype(np.float32))),
        ("opaque pickle", lambda f: f.create_dataset("x", data=np.void(payload))),
    ]:
        path = str(tmp_path / f"{kind}.h5")
        write_h5(path, random_arrays(cfg))
        with h5py.File(path, "a") as f:
            make(f)
        with pytest.raises(WeightsError, match=r"dataset 'x' holds .* not numbers"):
            load_xumx(path)


def _cli_model_error(model, tmp_path, capsys, *flags):
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(2000, 8000), 8000, subtype="PCM_16")
    out = tmp_path / "out"
    return fails_cleanly(main(["--inputs", song, "--outdir", str(out), "--quiet", "--model",
                               str(model), *flags]), capsys, out, str(model))


@pytest.mark.parametrize("case,words", [
    ("empty", ["not an HDF5"]),
    ("truncated", ["damaged or truncated"]),
    ("foreign", ["not an X-UMX parameter file"]),
    ("umx file", ["Open-Unmix", "--umx-infer"]),
    ("checkpoint", ["training checkpoint", "best_xumx.h5"]),
    ("nan parameter", ["fc2_vocals/affine/W", "NaN"]),
    ("object dataset", ["not numbers"]),
])
def test_bad_parameter_files_are_one_line_from_the_cli(case, words, tmp_path, capsys):
    import h5py
    from xumx.training.checkpoints import write_checkpoint
    from xumx.weights import save_model, write_h5
    from seeded import random_arrays
    cfg = tiny_config()
    arrays = random_arrays(cfg)
    path = tmp_path / "model.h5"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        save_model(str(path), cfg, arrays)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) * 2 // 3])
    elif case == "foreign":
        with h5py.File(str(path), "w") as f:
            f["conv1/W"] = np.zeros((3, 3), np.float32)
    elif case == "umx file":
        write_h5(str(path), {k.replace("_vocals", ""): v for k, v in arrays.items()
                             if "_vocals" in k})
    elif case == "checkpoint":
        write_checkpoint(str(path), arrays, {"adam/m": np.zeros(3, np.float32)}, {"epoch": 1})
    elif case == "nan parameter":
        arrays["fc2_vocals/affine/W"][1, 2] = np.nan
        write_h5(str(path), arrays)
    else:
        write_h5(str(path), arrays)
        with h5py.File(str(path), "a") as f:
            f.create_dataset("notes", data=["hello"], dtype=h5py.string_dtype())
    line = _cli_model_error(path, tmp_path, capsys)
    assert "cannot load the model" in line
    for w in words:
        assert w in line, line


def test_model_of_other_sources_is_one_line(tmp_path, capsys):
    """An X-UMX file with 3 sources asked for the 4 usual targets."""
    from xumx.weights import save_model
    from seeded import random_arrays
    cfg = tiny_config(sources=("drums", "vocals", "other"))
    path = tmp_path / "three.h5"
    save_model(str(path), cfg, random_arrays(cfg))
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(2000, 8000), 8000, subtype="PCM_16")
    out = tmp_path / "out"
    code = main(["--inputs", song, "--outdir", str(out), "--quiet", "--model", str(path),
                 "--targets", "bass", "drums", "vocals", "other"])
    line = fails_cleanly(code, capsys, out, "bass", "drums', 'vocals', 'other")
    assert "unknown target" in line


# --------------------------------------------------------------------------- interruptions
def _reader(stream, sink):
    import threading

    def pump():
        for block in iter(lambda: stream.read1(256), b""):
            sink.append(block)
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def _interrupt_when(proc, ready, signum, wait=15):
    """Send ``signum`` to ``proc`` once ``ready(its stderr so far)`` is true (a minute at most);
    returns (exit status, seconds from the signal to the exit, its stderr text)."""
    err = []
    reader = _reader(proc.stderr, err)
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None and not ready(b"".join(err)):
            time.sleep(0.02)
        assert proc.poll() is None, b"".join(err).decode()[-500:]
        proc.send_signal(signum)
        sent = time.time()
        code = proc.wait(timeout=wait)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    return code, took, b"".join(err).decode("utf-8", "replace").replace("\r", "\n")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_separation_stops_promptly_leaving_nothing(signum, tmp_path, tiny_model):
    """Ctrl-C and SIGTERM while chunks are being separated: exit within seconds with 130/143,
    one line on stderr, no stems and no temporaries."""
    path = str(tmp_path / "long.wav")
    sf.write(path, sine_mix(8000 * 240, 8000), 8000, subtype="PCM_16")   # 4 min, 600 chunks
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "xumx.test", "--inputs", path, "--model",
                             tiny_model, "--outdir", str(out), "--chunk-dur", "0.5",
                             "--overlap", "0.1"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env, cwd=str(tmp_path))

    def five_chunks_done(err):   # stderr is a pipe, so no bar: the stems' temporaries grow
        sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs]
        return sizes and max(sizes) >= 5 * 0.5 * 8000 * 4   # 5 chunks of 16-bit stereo
    code, took, text = _interrupt_when(proc, five_chunks_done, signum)
    said = [ln for ln in text.splitlines() if ln.strip() and "chunk/s" not in ln]
    assert code == 128 + signum, (code, took, said[-10:])   # by the signal, within wait=15 s
    lines = [ln for ln in text.splitlines()
             if ln.startswith("xumx.test:") or "Traceback" in ln or "Error" in ln]
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert lines == [f"xumx.test: {word}; stems already finished are kept, "
                     f"no partial stem was written; not separated: {path}"], lines
    left = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs] if out.exists() else []
    assert left == []
    assert not out.exists() or not os.listdir(out)


TRAIN_FLAGS = ["--is-wav", "--seed", "7", "--epochs", "3", "--hidden-size", "16", "--nb-layers", "1",
               "--nfft", "256", "--nhop", "64", "--sample-rate", "8000", "--bandwidth", "3000",
               "--batch-size", "2", "--seq-dur", "0.25", "--samples-per-track", "2",
               "--valid-dur", "0.5"]


@pytest.mark.nnabla
def test_training_killed_with_sigkill_resumes_to_the_same_parameters(tiny_musdb, tmp_path):
    """SIGKILL right after the first checkpoint appears (so mid-way through epoch 2): the
    checkpoint left is whole, and resuming with --model reaches the parameters of an
    uninterrupted 3-epoch run with the same seed. One LSTM layer: nnabla's multi-layer LSTM
    dropout is not reproducible."""
    from xumx.modelfiles import CHECKPOINT_NAME
    from xumx.training.checkpoints import read_checkpoint
    env = dict(os.environ, PYTHONPATH=ROOT)

    def start(output, *extra):
        return subprocess.Popen([sys.executable, "-m", "xumx.train", "--root", tiny_musdb,
                                 "--output", str(output), *TRAIN_FLAGS, *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    full = start(tmp_path / "full")
    killed = start(tmp_path / "part")
    ckpt = tmp_path / "part" / CHECKPOINT_NAME
    deadline = time.time() + 60
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read().decode()[-500:]
    params, solver, meta = read_checkpoint(str(ckpt))      # whole, readable
    assert 1 <= meta["epoch"] < 3 and params and solver
    resumed = subprocess.run([sys.executable, "-m", "xumx.train", "--root", tiny_musdb,
                              "--output", str(tmp_path / "part"), "--model", str(tmp_path / "part"),
                              *TRAIN_FLAGS], capture_output=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()[-800:]
    assert full.wait(timeout=120) == 0, full.stderr.read().decode()[-800:]
    want, want_solver, want_meta = read_checkpoint(str(tmp_path / "full" / CHECKPOINT_NAME))
    got, got_solver, got_meta = read_checkpoint(str(ckpt))
    assert got_meta["epoch"] == want_meta["epoch"] == 3
    assert [h["epoch"] for h in got_meta["history"]] == [1, 2, 3]
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
    for k in want_solver:
        np.testing.assert_allclose(got_solver[k], want_solver[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("writer", ["checkpoint", "weights"])
def test_interrupted_parameter_writes_keep_the_previous_file(writer, tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM while a checkpoint or weights file is written: the previous file stays
    whole and no temporary is left."""
    import h5py
    from xumx.training.checkpoints import read_checkpoint, write_checkpoint
    from xumx.weights import load_xumx, save_model
    from seeded import random_arrays
    cfg = tiny_config()
    arrays = random_arrays(cfg, seed=1)
    path = str(tmp_path / "file.h5")
    if writer == "checkpoint":
        write_checkpoint(path, arrays, adam_states(cfg, 0.0), checkpoint_meta(cfg, 1))
    else:
        save_model(path, cfg, arrays)
    before = open(path, "rb").read()
    real = h5py.Group.create_dataset
    calls = []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    other = random_arrays(cfg, seed=2)
    with pytest.raises(KeyboardInterrupt):
        if writer == "checkpoint":
            write_checkpoint(path, other, adam_states(cfg, 1.0), checkpoint_meta(cfg, 2))
        else:
            save_model(path, cfg, other)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == (["file.h5"] if writer == "checkpoint" else
                                            ["file.h5", "file.json"])   # no temporary
    assert open(path, "rb").read() == before
    if writer == "checkpoint":
        assert read_checkpoint(path)[2]["epoch"] == 1
    else:
        np.testing.assert_array_equal(load_xumx(path)[1]["fc1_bass/affine/W"],
                                      arrays["fc1_bass/affine/W"])


@pytest.mark.nnabla
def test_a_lost_interrupt_stops_training_after_the_step(tiny_musdb, tmp_path, monkeypatch, capsys):
    """A signal whose KeyboardInterrupt was lost (raised in a finaliser, or inside a kernel's
    callback and swallowed there) is remembered by the handler: training stops after the step,
    143, the resume line, not 50 epochs later."""
    from xumx import interrupt
    from xumx.train import main as train_main
    from xumx.training.data import MusdbTraining
    real, steps = MusdbTraining.batches, []

    def batches(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            steps.append(1)
            if len(steps) == 3:   # in the second epoch: the signal came, its exception lost
                interrupt._pending.append(signal.SIGTERM)
            yield batch
    monkeypatch.setattr(MusdbTraining, "batches", batches)
    flags = list(TRAIN_FLAGS)
    flags[flags.index("--epochs") + 1] = "50"
    out = tmp_path / "run"
    assert train_main(["--root", tiny_musdb, "--output", str(out), *flags]) == 143
    assert len(steps) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"xumx.train: terminated; resume with --resume {out}"


@pytest.mark.nnabla
def test_training_stopped_with_sigterm_exits_cleanly_with_a_whole_checkpoint(tiny_musdb, tmp_path):
    """SIGTERM (a scheduler, ``timeout``) during training: status 143 within seconds, the resume
    hint as the last line, the last checkpoint whole and no temporary left."""
    from xumx.modelfiles import CHECKPOINT_NAME
    from xumx.training.checkpoints import read_checkpoint
    out = tmp_path / "run"
    flags = list(TRAIN_FLAGS)
    flags[flags.index("--epochs") + 1] = "50"   # still running when the signal comes
    proc = subprocess.Popen([sys.executable, "-m", "xumx.train", "--root", tiny_musdb,
                             "--output", str(out), *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.time() + 60
    while not (out / CHECKPOINT_NAME).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    try:
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.time() - sent
    err = proc.stderr.read().decode("utf-8", "replace").replace("\r", "\n").strip().splitlines()
    assert code == 143, (code, took, err[-3:])   # by the signal, within the 15 s wait
    assert err[-1] == f"xumx.train: terminated; resume with --resume {out}"
    assert not [f for f in os.listdir(out) if f.endswith(files.SUFFIX)]
    params, solver, meta = read_checkpoint(str(out / CHECKPOINT_NAME))
    assert 1 <= meta["epoch"] < 50 and params and solver


def test_interrupted_plot_and_history_keep_the_previous_files(tmp_path, monkeypatch):
    """The slow part after a checkpoint (matplotlib) is where a SIGTERM most often lands."""
    import matplotlib.figure
    from xumx.training.trainer import plot_history, write_history
    history = [{"epoch": 1, "train_loss": 2.0, "valid_loss": 1.0, "lr": 1e-3, "best": True,
                "seconds": 1.0}]
    png = str(tmp_path / "training.png")
    plot_history(png, history)
    write_history(str(tmp_path), history)
    before = {f: open(tmp_path / f, "rb").read() for f in os.listdir(tmp_path)}

    def interrupted(self, fname, **k):
        open(fname, "wb").write(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plot_history(png, history * 2)
    monkeypatch.setattr("xumx.training.trainer.csv.DictWriter.writerows",
                        lambda self, rows: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_history(str(tmp_path), history * 2)
    assert sorted(os.listdir(tmp_path)) == sorted(before)          # no temporary left
    for name in ("training.png", "history.csv"):                    # interrupted: unchanged
        assert open(tmp_path / name, "rb").read() == before[name]


def test_an_interrupt_swallowed_by_a_finaliser_is_raised_again(capsys):
    """A KeyboardInterrupt raised inside __del__ is lost ("Exception ignored"); check() brings it
    back at the next chunk, so a signal always ends the run, and no traceback is printed."""
    import gc
    from xumx import interrupt

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)   # its Terminated is raised here and ignored

    with interrupt.sigterm_as_interrupt():
        interrupt.check()                          # nothing pending
        Finalised()
        gc.collect()
        with pytest.raises(interrupt.Terminated):
            interrupt.check()
    interrupt.check()                              # outside: forgotten
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_evaluation_exits_cleanly_leaving_only_whole_files(signum, tmp_path):
    """Ctrl-C / SIGTERM while ``xumx.eval`` separates and scores: status 130/143 within
    seconds, its one line, no temporary anywhere, and every file there is whole: each JSON
    complete, each track's estimates all present at full length (rerunning goes on)."""
    from test_eval import make_musdb
    from xumx.evaluation import read_scores
    from xumx.weights import save_model
    from seeded import random_arrays
    names = [f"Track {i:02d}" for i in range(8)]
    root = make_musdb(tmp_path / "musdb", names=names)
    cfg = tiny_config()
    model = str(tmp_path / "tiny.h5")
    save_model(model, cfg, random_arrays(cfg, seed=3))
    evaldir, outdir = tmp_path / "scores", tmp_path / "estimates"
    proc = subprocess.Popen([sys.executable, "-m", "xumx.eval", "--model", model, "--root", root,
                             "--is-wav", "--evaldir", str(evaldir), "--out-dir", str(outdir),
                             "--targets", "vocals", "drums"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
    def scored_one(err):   # a whole score file, not the atomic writer's temporary
        return (evaldir / "test").is_dir() and any(
            not (f.endswith(files.SUFFIX) or f.startswith(".")) for f in os.listdir(evaldir / "test"))
    code, took, text = _interrupt_when(   # once a track is scored: the run is in its loop
        proc, scored_one, signum, wait=30)
    lines = [ln for ln in text.splitlines() if ln.startswith("xumx.eval") or "Traceback" in ln]
    assert code == 128 + signum, (code, took, text[-800:])   # by the signal, within 30 s
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert lines == [f"xumx.eval: {word}; scored tracks are kept, run again to go on"], lines
    written = [os.path.join(d, f) for top in (evaldir, outdir) if top.exists()
               for d, _, fs in os.walk(top) for f in fs]
    assert not [p for p in written if p.endswith(files.SUFFIX) or os.path.basename(p).startswith(".")]
    scored = os.listdir(evaldir / "test")
    assert 1 <= len(scored) < len(names), scored
    for name in scored:
        assert read_scores(str(evaldir / "test" / name), ["vocals", "drums"]) is not None, name
    for track in os.listdir(outdir / "test"):
        stems = sorted(os.listdir(outdir / "test" / track))
        assert stems == ["drums.wav", "vocals.wav"], (track, stems)
        for s in stems:
            assert sf.info(str(outdir / "test" / track / s)).frames == 44100
