"""Streaming separation of files: same stems as the whole-array path, in bounded memory."""
import os

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import sine_mix
from xumx import files, stemfiles
from xumx import decode
from xumx import encode
import oracles
from xumx import resample as resample_mod
from xumx.config import ChunkConfig, OutputConfig
from xumx.test import main

STEMS = ["bass", "drums", "other", "vocals"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), block=st.integers(1, 700),
       rates=st.sampled_from([(44100, 8000), (8000, 44100), (48000, 44100), (44100, 48000),
                              (48000, 8000), (8000, 8000)]),
       extra=st.integers(-3, 3))
def test_stream_resampler_equals_whole_signal_resampling(n, block, rates, extra):
    rate_in, rate_out = rates
    x = sine_mix(n, rate_in, seed=n % 7)
    if rate_in == rate_out:   # passed through as it comes: the length can only grow
        extra = abs(extra)
    length = max(resample_mod.resampled_length(n, rate_in, rate_out) + extra, 1)
    whole = oracles.resample(x, rate_in, rate_out, length=length)
    r = resample_mod.StreamResampler(rate_in, rate_out)
    pieces = [r.push(x[i:i + block]) for i in range(0, n, block)] + [r.finish(length)]
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape and streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("up,down", [(147, 160), (160, 147), (80, 441), (1, 6), (3, 1),
                                     (11025, 11014)])   # the last: summed tap by tap
def test_polyphase_filter_equals_scipys_and_its_parts_the_whole(up, down):
    """The resampler's filter is scipy's firwin (float32, bit for bit); upfirdn_part is
    scipy's upfirdn to float32 rounding, and any span of it, computed alone, is the same span
    of the whole, bit for bit (the same products on the same grid)."""
    from scipy.signal import firwin, upfirdn
    half = 10 * max(up, down)
    h = resample_mod.kaiser_lowpass(2 * half + 1, 1.0 / max(up, down))
    want_h = firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0))
    assert np.array_equal(h.astype(np.float32), want_h.astype(np.float32))
    h = (h * up).astype(np.float32)
    x = sine_mix(9000, 44100, seed=up % 5)
    ref = upfirdn(h, x, up, down, axis=0)
    whole = resample_mod.upfirdn_part(h, x, up, down, 0, len(ref) + 50)
    assert whole.dtype == np.float32 and whole.shape == (len(ref) + 50, x.shape[1])
    np.testing.assert_allclose(whole[:len(ref)], ref, rtol=0, atol=2e-6)
    assert not whole[len(ref):].any()   # past the end: zeros
    rng = np.random.default_rng(up)
    for first in [0, 1, len(ref) - 7] + list(rng.integers(0, len(ref), 4)):
        count = int(min(rng.integers(1, 3000), len(whole) - first))
        part = resample_mod.upfirdn_part(h, x, up, down, int(first), count)
        assert np.array_equal(part, whole[first:first + count]), (first, count)
    # a piece of x starting at a multiple of ``down``, on the whole signal's grid
    lo = (len(x) // 3) // down * down
    grid = -(lo * up // down)
    start = len(ref) // 2   # whose inputs all lie in the piece
    count = min(999, len(whole) - start)
    part = resample_mod.upfirdn_part(h, x[lo:], up, down, start + grid, count, grid=grid)
    assert np.array_equal(part, whole[start:start + count])


def _snr(ref, est):
    err = np.sum((ref.astype(np.float64) - est) ** 2)
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30))


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_streamed_file_equals_whole_array_separation(tiny_model, tmp_path, monkeypatch, fmt):
    """A 20 s 48 kHz file, --start/--duration, 2 s chunks, decoded in odd-sized blocks: the
    stems equal Separator.separate of the whole decoded span (exactly, before encoding)."""
    from xumx.separator import Separator
    rate, span = 48000, (1.3, 17.1)
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(20 * rate, rate, seed=4), rate, subtype="FLOAT")
    monkeypatch.setattr(stemfiles, "DECODE_BLOCK", 4099)
    out = str(tmp_path / "out")
    bits = ["--bits", "float"] if fmt == "wav" else []
    assert main(["--inputs", song, "--outdir", out, "--model", tiny_model, "--quiet",
                 "--chunk-dur", "2", "--overlap", "0.5", "--start", str(span[0]),
                 "--duration", str(span[1]), "--format", fmt, *bits]) == 0
    options = OutputConfig(start=span[0], duration=span[1], out_format=fmt,
                           bits="float" if fmt == "wav" else None, quiet=True)
    x, _, _ = oracles.load(song, *span)
    assert x.shape[0] == round(span[1] * rate)
    whole = Separator.load(tiny_model, chunk_dur=2, overlap=0.5).separate(x, rate)
    ref = str(tmp_path / "ref")
    os.makedirs(ref)
    encode.write_stems({os.path.join(ref, f"{k}.{fmt}"): y for k, y in whole.items()}, rate, fmt,
                      options.bits)
    for name in STEMS:
        streamed, _, _ = oracles.load(os.path.join(out, "song", f"{name}.{fmt}"))
        expected, _, _ = oracles.load(os.path.join(ref, f"{name}.{fmt}"))
        assert streamed.shape == expected.shape == x.shape
        assert _snr(expected, streamed) > 100, name
    if fmt == "wav":   # float wav stores the samples as computed: they are the same
        for name in STEMS:
            got, _ = sf.read(os.path.join(out, "song", f"{name}.wav"), dtype="float32")
            np.testing.assert_array_equal(got, whole[name])


def test_file_is_decoded_separated_and_written_incrementally(tiny_model, tmp_path, monkeypatch):
    """The decoder is consumed as the chunks are separated, every chunk handed to the network
    is at most --chunk-dur long, a batch of chunks at most --batch-frames, and stems are
    written before the input is fully decoded."""
    rate, seconds, block = 8000, 12, 1000
    song = str(tmp_path / "song.wav")
    sf.write(song, sine_mix(seconds * rate, rate, seed=2), rate, subtype="PCM_16")
    monkeypatch.setattr(stemfiles, "DECODE_BLOCK", block)
    decoded, log = [0], []
    real_stream = decode.stream

    def counting_stream(*a, **k):
        for b in real_stream(*a, **k):
            assert b.shape[0] <= block
            decoded[0] += b.shape[0]
            yield b

    from xumx.separator import Separator
    real_separate = Separator._separate_chunks

    def logging_separate(self, xs):
        log.append(("separate", [x.shape[0] for x in xs], decoded[0]))
        return real_separate(self, xs)

    real_write = encode.StemWriter.write

    def logging_write(self, path, y):
        log.append(("write", y.shape[0], decoded[0]))
        return real_write(self, path, y)

    monkeypatch.setattr(decode, "stream", counting_stream)
    monkeypatch.setattr(Separator, "_separate_chunks", logging_separate)
    monkeypatch.setattr(encode.StemWriter, "write", logging_write)
    chunk, overlap = 2 * rate, rate // 4
    frames = Separator.load(tiny_model).nb_frames(chunk)
    assert main(["--inputs", song, "--outdir", str(tmp_path / "out"), "--model", tiny_model,
                 "--quiet", "--chunk-dur", "2", "--overlap", "0.25",
                 "--batch-frames", str(2 * frames)]) == 0
    calls = [e for e in log if e[0] == "separate"]
    sizes = [size for _, batch, _ in calls for size in batch]
    assert len(sizes) == 7 and [len(b) for _, b, _ in calls] == [2, 2, 2, 1]
    assert decoded[0] == seconds * rate
    last = -1
    for _, batch, seen in calls:
        last += len(batch)
        assert max(batch) <= chunk
        # when a batch is separated, at most its last chunk's end and one more block have
        # been decoded
        assert seen <= last * (chunk - overlap) + chunk + block, (last, seen)
    first_write = next(e for e in log if e[0] == "write")
    assert first_write[2] < seconds * rate / 2
    for name in STEMS:
        info = sf.info(str(tmp_path / "out" / "song" / f"{name}.wav"))
        assert info.frames == seconds * rate


def test_sigterm_while_writing_leaves_no_partial_stems(tiny_model, tmp_path):
    """SIGTERM in the middle of a long file: exit 143, one line, no stems, no temporaries."""
    import signal
    import subprocess
    import sys
    import time
    rate = 8000
    song = str(tmp_path / "long.wav")
    with sf.SoundFile(song, "w", rate, 2, subtype="PCM_16") as f:
        for i in range(20):   # 10 minutes: far longer than the test waits
            f.write(sine_mix(30 * rate, rate, seed=i))
    out = tmp_path / "out"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "xumx.test", "--inputs", song, "--outdir",
                             str(out), "--model", tiny_model, "--chunk-dur", "2",
                             "--overlap", "0.5", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    parts = []
    while time.time() < deadline and proc.poll() is None and len(parts) < 4:
        time.sleep(0.05)
        folder = out / "long"
        parts = [f for f in os.listdir(folder) if f.endswith(files.SUFFIX)] if folder.is_dir() else []
    assert proc.poll() is None and len(parts) == 4, "the stems were not being written"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "xumx.test: terminated; stems already finished are kept, no partial stem was written; "
        f"not separated: {song}"]
    assert not out.exists()   # not even the --outdir folder this run made
