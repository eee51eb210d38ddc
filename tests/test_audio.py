"""xumx.audio: ffmpeg decoding, sample-accurate spans, resampling, atomic stem writing."""
import os
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from conftest import sine_mix
from xumx import decode
from xumx import encode
from xumx import errors
import oracles
from xumx import resample as resample_mod


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def wav44(tmp_path):
    """A 0.5 s stereo 16-bit wav at 44.1 kHz and its samples."""
    x = sine_mix(22050, 44100)
    path = str(tmp_path / "mix.wav")
    sf.write(path, x, 44100, subtype="PCM_16")
    return path, sf.read(path, dtype="float32")[0]


@pytest.mark.parametrize("subtype,tol", [("PCM_16", 0), ("PCM_24", 0), ("FLOAT", 0)])
def test_lossless_wav_depths_decode_exactly(tmp_path, subtype, tol):
    x = sine_mix(4410, 44100)
    path = str(tmp_path / f"x-{subtype}.wav")
    sf.write(path, x, 44100, subtype=subtype)
    ref = sf.read(path, dtype="float32")[0]
    y, rate, info = oracles.load(path)
    assert rate == 44100 and info.channels == 2
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, atol=1e-7)


@pytest.mark.parametrize("ext,codec", [("mp3", "libmp3lame"), ("ogg", "libvorbis"),
                                       ("m4a", "aac"), ("flac", "flac")])
def test_compressed_inputs_keep_their_length(wav44, tmp_path, ext, codec):
    src, ref = wav44
    path = str(tmp_path / f"mix.{ext}")
    ffmpeg("-i", src, "-c:a", codec, path)
    y, rate, info = oracles.load(path)
    assert rate == 44100 and y.shape == ref.shape
    if ext == "flac":
        np.testing.assert_array_equal(y, ref)
    else:   # lossy, but the same signal: well correlated after the codec's delay is removed
        c = np.corrcoef(y[2000:-2000, 0], ref[2000:-2000, 0])[0, 1]
        assert c > 0.9


def test_start_and_duration_are_sample_accurate(tmp_path):
    rate = 8000
    ramp = (np.arange(rate * 2) / (rate * 2)).astype(np.float32)[:, None]  # value = index / T
    path = str(tmp_path / "ramp.wav")
    sf.write(path, ramp, rate, subtype="FLOAT")
    y, _, _ = oracles.load(path, start=0.25, duration=0.5)
    assert y.shape == (4000, 1)
    np.testing.assert_array_equal(y[:, 0], ramp[2000:6000, 0])
    y, _, _ = oracles.load(path, start=1.5)          # to the end
    np.testing.assert_array_equal(y[:, 0], ramp[12000:, 0])
    with pytest.warns(errors.AudioWarning, match=r"0:02\.000 long.*gives only 0:00\.100"):
        y, _, _ = oracles.load(path, start=1.9, duration=5)  # past the end: what there is
    assert y.shape == (800, 1)


def test_mono_stays_mono_and_many_channels_keep_first_two(tmp_path):
    x = np.random.RandomState(0).uniform(-0.5, 0.5, (1000, 6)).astype(np.float32)
    path = str(tmp_path / "six.wav")
    sf.write(path, x, 48000, subtype="FLOAT")
    with pytest.warns(errors.AudioWarning, match="6 channels"):
        y, rate, _ = oracles.load(path)
    assert rate == 48000
    np.testing.assert_array_equal(y, x[:, :2])
    sf.write(path, x[:, :1], 48000, subtype="FLOAT")
    y, _, _ = oracles.load(path)
    np.testing.assert_array_equal(y, x[:, :1])


def test_unreadable_inputs_give_one_line_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n" * 50)
    image = str(tmp_path / "image.png")
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", image)
    cases = {str(tmp_path / "missing.wav"): "no such file", str(tmp_path): "folder",
             str(empty): "empty", str(text): "not an audio file", image: "no audio stream"}
    for path, cause in cases.items():
        with pytest.raises(errors.AudioError) as e:
            oracles.load(path)
        msg = str(e.value)
        assert cause in msg and path in msg and "\n" not in msg


def test_start_after_end_is_an_error(wav44):
    with pytest.raises(errors.AudioError, match="after the end"):
        oracles.load(wav44[0], start=10.0)


def test_resample_keeps_duration_and_signal():
    rate = 44100
    t = np.arange(rate) / rate
    x = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32)
    y = oracles.resample(x, rate, 8000)
    assert y.shape == (8000, 2)
    back = oracles.resample(y, 8000, rate, length=rate)
    assert back.shape == x.shape
    inner = slice(2000, -2000)   # away from the filter's edge effects
    assert np.max(np.abs(back[inner] - x[inner])) < 1e-2
    np.testing.assert_array_equal(oracles.resample(x, rate, rate), x)
    assert resample_mod.resampled_length(22050, 44100, 48000) == 24000


@pytest.mark.parametrize("fmt,bits", [("wav", "16"), ("wav", "24"), ("wav", "float"),
                                      ("flac", "16"), ("flac", "24"), ("mp3", "16")])
def test_write_formats_round_trip(tmp_path, fmt, bits):
    x = 0.5 * sine_mix(4410, 44100)
    path = str(tmp_path / f"stem.{fmt}")
    oracles.write(path, x, 44100, fmt, bits, bitrate=192)
    assert sorted(os.listdir(tmp_path)) == [f"stem.{fmt}"]   # no temporary left
    y, rate, info = oracles.load(path)
    assert rate == 44100 and y.shape == x.shape
    if fmt == "mp3":
        assert info.codec == "mp3"
        assert np.corrcoef(y[1000:-1000, 0], x[1000:-1000, 0])[0, 1] > 0.9
    else:
        step = {"16": 2.0 ** -15, "24": 2.0 ** -23, "float": 0}[bits]
        assert np.max(np.abs(y - x)) <= step
        if fmt == "wav":
            assert sf.info(path).subtype == {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}[bits]


def test_integer_outputs_clip_with_a_warning_float_does_not(tmp_path):
    x = np.array([[0.5, 1.5], [-2.0, 0.0]], dtype=np.float32).repeat(50, axis=0)
    with pytest.warns(errors.AudioWarning, match="clipped"):
        oracles.write(str(tmp_path / "a.wav"), x, 8000, "wav", "16")
    assert sf.read(str(tmp_path / "a.wav"))[0].max() <= 1.0
    oracles.write(str(tmp_path / "b.wav"), x, 8000, "wav", "float")
    np.testing.assert_array_equal(sf.read(str(tmp_path / "b.wav"), dtype="float32")[0], x)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_writes_leave_no_stem(tmp_path, monkeypatch, error):
    real = encode._Encoder.write
    calls = []

    def failing(self, block):
        calls.append(self.tmp)
        if len(calls) == 3:   # the third stem fails half-way
            raise error
        return real(self, block)

    monkeypatch.setattr(encode._Encoder, "write", failing)
    x = sine_mix(800, 8000)
    stems = {str(tmp_path / f"{n}.wav"): x for n in ("bass", "drums", "vocals", "other")}
    with pytest.raises(type(error) if isinstance(error, KeyboardInterrupt) else errors.AudioError):
        encode.write_stems(stems, 8000)
    assert os.listdir(tmp_path) == []


def test_unwritable_folder_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(errors.AudioError, match="cannot write"):
        oracles.write(str(blocker / "bass.wav"), sine_mix(100, 8000), 8000)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                         ("WAV", "PCM_U8"), ("WAV", "PCM_32"), ("FLAC", "PCM_16"),
                                         ("FLAC", "PCM_24"), ("AIFF", "PCM_16")])
def test_libsndfile_files_decode_to_exactly_what_ffmpeg_gives(tmp_path, fmt, subtype):
    """WAV/FLAC/AIFF are read in-process by libsndfile (no ffprobe and ffmpeg to start): the
    same samples, the same span selection and the same length as the ffmpeg path."""
    x = np.clip(sine_mix(44100 + 37, 44100), -0.999, 0.999)
    path = str(tmp_path / f"x.{fmt.lower()}")
    sf.write(path, x, 44100, format=fmt, subtype=subtype)
    fast, slow = decode.probe(path), decode.probe(path, sndfile=False)
    assert fast.sndfile and not slow.sndfile
    assert (fast.channels, fast.rate, fast.nb_samples) == (2, 44100, x.shape[0])
    for start, duration in [(0.0, -1.0), (0.25, 0.5), (0.9, 5.0)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", errors.AudioWarning)   # (0.9, 5.0): past the end
            a = np.concatenate(list(decode.stream(path, start, duration, fast, block=1000)))
            b = np.concatenate(list(decode.stream(path, start, duration, slow, block=1000)))
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_other_files_go_to_ffmpeg(tmp_path):
    path = str(tmp_path / "x.wav")
    sf.write(path, sine_mix(8000, 8000), 8000, subtype="ULAW")   # a codec, not plain PCM
    assert not decode.probe(path).sndfile
    y, rate, _ = oracles.load(path)
    assert y.shape == (8000, 2) and rate == 8000
