"""Audio files are untrusted input (issue 21): a corpus of hostile files, generated here with
ffmpeg, soundfile and plain bytes, goes through ``python -m xumx.test`` in subprocesses.

For every input: exit status 0 or 1, exactly one stderr line when it fails (naming it, on one
line whatever its name holds), its stems whole (every stem, the same length, finite, no
temporary) or no folder at all; for every run: it ends (a generous timeout: the assertion is
about termination) and its peak memory stays under 500 MB with a tiny model. The peak is the
child's own (``ru_maxrss`` of a small launcher's children: the launcher is not the fat test
process, whose peak a forked child's ``ru_maxrss`` would carry).

The lying headers (an mp3 whose Xing header claims 2^32-1 frames, Ogg Vorbis whose last page
claims 2^40..2^62 samples) must separate the 3 s that decode, in seconds: before, they took
hundreds of MB to GB (docs/reliability.md has the measurements).
"""
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, tiny_config
from seeded import random_arrays
from xumx.errors import one_line
from xumx.weights import save_model

RATE = 8000                    # the tiny model's rate: 3 s songs stay quick to separate
SECONDS = 3.0
PEAK_MB = 500
TIMEOUT = 60
STEMS = {"bass.wav", "drums.wav", "vocals.wav", "other.wav"}
#: Each truncated format is cut at this many random offsets (seeded), between 5 % and 95 %.
CUTS = 2

#: Runs ``argv`` and prints the child's peak RSS in kB: a small process measuring its child.
_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def song(path, *codec, rate=RATE, seconds=SECONDS, channels=2):
    """A tone with a little noise (so that codecs have something to code)."""
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate={rate}",
           "-f", "lavfi", "-i", f"anoisesrc=duration={seconds}:sample_rate={rate}:amplitude=0.05",
           "-filter_complex", "amix=inputs=2", "-ac", str(channels), *codec, path)
    return path


# --------------------------------------------------------------------------- lying headers
_OGG_CRC = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else (_r << 1)
    _OGG_CRC.append(_r & 0xFFFFFFFF)


def ogg_crc(page: bytes) -> int:
    """The CRC-32 of an Ogg page (polynomial 0x04C11DB7, not reflected, over the page with
    its checksum field zeroed)."""
    crc = 0
    for b in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def lying_ogg(src, dst, samples: int):
    """``src`` with its last page's granule position set to ``samples`` (checksum redone)."""
    data = bytearray(open(src, "rb").read())
    pos, last = 0, None
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        segments = data[pos + 27:pos + 27 + data[pos + 26]]
        last, pos = pos, pos + 27 + len(segments) + sum(segments)
    data[last + 6:last + 14] = struct.pack("<q", samples)
    data[last + 22:last + 26] = bytes(4)
    data[last + 22:last + 26] = struct.pack("<I", ogg_crc(bytes(data[last:pos])))
    open(dst, "wb").write(data)
    return dst


def lying_xing(src, dst, frames: int = 0xFFFFFFFF):
    """``src`` (an mp3 with a Xing/Info header) claiming ``frames`` frames."""
    data = bytearray(open(src, "rb").read())
    at = max(data.find(b"Xing"), data.find(b"Info"))
    assert at > 0 and struct.unpack(">I", data[at + 4:at + 8])[0] & 1
    data[at + 8:at + 12] = struct.pack(">I", frames)
    open(dst, "wb").write(data)
    return dst


def decoded_frames(path) -> int:
    """Frames ffmpeg itself decodes from ``path`` (mono), the oracle of the lying files."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path), "-f", "f32le",
                          "-ac", "1", "-"], capture_output=True).stdout
    return len(raw) // 4


# --------------------------------------------------------------------------- running
def measured(args, cwd):
    """(exit status, stdout lines, stderr lines, peak MB, seconds) of ``python -m xumx.test
    args`` run in ``cwd``."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "xumx.test",
                           *args], env=env, cwd=cwd, capture_output=True, timeout=TIMEOUT)
    wall = time.time() - t0
    *out, last = proc.stdout.decode("utf-8", "replace").splitlines()
    kb, code = map(int, last.split())
    err = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return code, out, err, kb / 1024, wall


def leftovers(folder):
    """Temporaries of the atomic writer anywhere below ``folder``."""
    return [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names
            if n.endswith(".xumx-tmp")]


def check_run(cases, model, tmp, name):
    """Separate every case's path in one run; check each input and the run. ``cases``:
    {path: 'ok' (must separate), 'fails' or 'either'}. Returns the run's (peak MB, seconds)
    and {path: frames of its stems}."""
    out = os.path.join(tmp, f"out-{name}")
    code, stdout, err, peak, wall = measured(
        ["--model", model, "--outdir", out, "--inputs", *cases], tmp)
    from xumx.stemfiles import output_folders
    folders = dict(zip(cases, output_folders(list(cases), out)))
    frames, failed, accounted = {}, 0, 0
    for path, expect in cases.items():
        shown = one_line(path)
        errors = [ln for ln in err if ln.startswith(f"xumx.test: error: {shown}: ")]
        notes = [ln for ln in err if ln.startswith(f"xumx.test: warning: {shown}: ")]
        done = [ln for ln in stdout if ln.startswith(f"{shown}: ")]
        accounted += len(errors) + len(notes)
        assert len(errors) + len(done) == 1, (path, errors, done, err)
        if errors:
            failed += 1
            assert expect != "ok" and not notes, (path, errors, notes)
            assert not os.path.exists(folders[path]), (path, os.listdir(folders[path]))
            continue
        assert expect != "fails", (path, done)
        assert len(notes) <= 1, notes
        assert set(os.listdir(folders[path])) == STEMS, (path, os.listdir(folders[path]))
        lengths = set()
        for stem in STEMS:
            y, _ = sf.read(os.path.join(folders[path], stem), dtype="float32")
            assert np.all(np.isfinite(y)) and y.shape[0] > 0, (path, stem)
            lengths.add(y.shape[0])
        assert len(lengths) == 1, (path, lengths)
        frames[path] = lengths.pop()
    # every stderr line is about one input, and the last counts the failures
    summary = [f"xumx.test: error: {failed} of {len(cases)} inputs failed"] if failed > 0 else []
    assert accounted + len(summary) == len(err), err
    assert err[len(err) - len(summary):] == summary, err
    assert "Traceback" not in "\n".join(err)
    assert code == (1 if failed else 0), (code, err)
    assert not leftovers(out), leftovers(out)
    assert peak < PEAK_MB, peak
    return peak, wall, frames


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = tiny_config()
    path = str(tmp_path_factory.mktemp("model") / "tiny.h5")
    save_model(path, cfg, random_arrays(cfg, seed=1))
    return path


# --------------------------------------------------------------------------- the issue's rows
def test_lying_headers_separate_what_decodes(model, tmp_path):
    """The mp3 claiming 2^32-1 frames and the Ogg files claiming 2^40, 2^44 and 2^62 samples
    separate the 3 s they hold, as fast as the honest files, in bounded memory; the Ogg files
    say (one warning each) that they hold less than their header states."""
    tmp = str(tmp_path)
    mp3 = song(os.path.join(tmp, "honest.mp3"), "-c:a", "libmp3lame", "-q:a", "4")
    ogg = song(os.path.join(tmp, "honest.ogg"), "-c:a", "libvorbis")
    cases = {mp3: "ok", ogg: "ok",
             lying_xing(mp3, os.path.join(tmp, "xing 2^32-1.mp3")): "ok"}
    for power in (40, 44, 62):
        cases[lying_ogg(ogg, os.path.join(tmp, f"granule 2^{power}.ogg"), 2 ** power)] = "ok"
    peak, wall, frames = check_run(cases, model, tmp, "lying")
    for path in cases:
        assert abs(frames[path] - decoded_frames(path)) <= 0.01 * RATE, path
        assert abs(frames[path] - SECONDS * RATE) <= 0.05 * RATE, (path, frames[path])
    print(f"lying headers: {len(cases)} files in {wall:.1f} s, peak {peak:.0f} MB")


def test_one_input_one_line_for_the_issue_rows(model, tmp_path):
    """Random bytes named .mp3 (plain, and after an ID3 tag) fail with our one line, none of
    a decoder library's notes; a cut mp3 and a cut FLAC keep what decodes, with one warning
    line saying how much; a FIFO and devices named as audio are 'not a regular file'; a name
    with a newline stays on one line."""
    tmp = str(tmp_path)
    rng = np.random.RandomState(21)
    noise = os.path.join(tmp, "noise.mp3")
    open(noise, "wb").write(rng.bytes(20000))
    tagged = os.path.join(tmp, "tagged.mp3")
    open(tagged, "wb").write(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10) + rng.bytes(20000))
    cut = {}
    for ext, codec in (("mp3", ("-c:a", "libmp3lame")), ("flac", ())):
        whole = song(os.path.join(tmp, f"whole.{ext}"), *codec)
        data = open(whole, "rb").read()
        cut[ext] = os.path.join(tmp, f"cut.{ext}")
        open(cut[ext], "wb").write(data[:len(data) * 2 // 3])
        os.unlink(whole)
    fifo = os.path.join(tmp, "fifo.wav")
    os.mkfifo(fifo)
    zero, urandom = os.path.join(tmp, "zero.wav"), os.path.join(tmp, "urandom.mp3")
    os.symlink("/dev/zero", zero)
    os.symlink("/dev/urandom", urandom)
    newline = os.path.join(tmp, "two\nlines.mp3")
    shutil.copy(noise, newline)
    cases = {noise: "fails", tagged: "fails", cut["mp3"]: "ok", cut["flac"]: "ok",
             fifo: "fails", zero: "fails", urandom: "fails", newline: "fails"}
    code, stdout, err, peak, wall = measured(
        ["--model", model, "--outdir", os.path.join(tmp, "out"), *cases], tmp)
    assert code == 1 and peak < PEAK_MB, (code, peak, wall)   # bounded by measured()'s timeout
    assert len(err) == 6 + 2 + 1, "\n".join(err)   # 6 failures, 2 warnings, the count
    for line in err:
        assert line.startswith("xumx.test: "), line
    for path in (fifo, zero, urandom):
        assert f"error: {path}: not a regular file (a " in "\n".join(err)
    assert f"error: {one_line(newline)}: not an audio file ffmpeg can read" in "\n".join(err)
    for ext in cut:
        line, = [ln for ln in err if ln.startswith(f"xumx.test: warning: {cut[ext]}: ")]
        assert "damaged or truncated" in line and "separating the 0:0" in line, line
    flac, = [ln for ln in err if cut["flac"] in ln]
    assert "(its header states 0:03.000)" in flac, flac
    assert sorted(os.listdir(os.path.join(tmp, "out"))) == ["cut", "cut_2"]


# --------------------------------------------------------------------------- the corpus
def corpus(tmp: str) -> dict:
    """{path: 'ok', 'fails' or 'either'}: the hostile files of every kind."""
    rng = np.random.RandomState(2021)
    cases = {}

    def add(name, expect):
        path = os.path.join(tmp, name)
        cases[path] = expect
        return path

    wholes = {"wav": (), "flac": (), "mp3": ("-c:a", "libmp3lame"),
              "ogg": ("-c:a", "libvorbis"), "opus": ("-c:a", "libopus"),
              "m4a": ("-c:a", "aac", "-movflags", "+faststart"), "aiff": ()}
    for ext, codec in wholes.items():   # truncations at random offsets
        whole = song(add(f"whole.{ext}", "ok"), *codec)
        data = open(whole, "rb").read()
        for k, at in enumerate(rng.uniform(0.05, 0.95, CUTS)):
            open(add(f"cut {k} at {at:.2f}.{ext}", "either"), "wb").write(
                data[:int(len(data) * at)])
    for ext in ("wav", "flac", "mp3", "ogg", "opus", "m4a", "aiff", "webm", "wma", "aac"):
        open(add(f"random.{ext}", "either"), "wb").write(rng.bytes(int(rng.randint(1, 40000))))
    open(add("one byte.wav", "fails"), "wb").write(b"R")
    for value in ("nan", "inf"):
        x = np.zeros((RATE, 2), np.float32)
        x[RATE // 2] = float(value)
        sf.write(add(f"{value}.wav", "fails"), x, RATE, subtype="FLOAT")
    sf.write(add("no frames.wav", "fails"), np.zeros((0, 2), np.float32), RATE)
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=stereo", "-t", "0", "-c:a", "libvorbis",
           add("no frames.ogg", "fails"))
    sf.write(add("32 channels.wav", "ok"),
             (0.1 * rng.standard_normal((RATE, 32))).astype(np.float32), RATE)
    for rate in (1, 767999, 4_000_000_000):   # rates a header claims
        path = add(f"rate {rate}.wav", "fails")
        sf.write(path, (0.1 * rng.standard_normal((3000, 2))).astype(np.float32), RATE,
                 subtype="PCM_16")
        data = bytearray(open(path, "rb").read())
        data[24:32] = struct.pack("<II", rate, min(rate * 4, 2 ** 32 - 1))
        open(path, "wb").write(data)
    path = add("65535 channels.wav", "fails")
    sf.write(path, np.zeros((400, 1), np.int16), RATE, subtype="PCM_16")
    data = bytearray(open(path, "rb").read())
    data[22:24] = struct.pack("<H", 65535)
    open(path, "wb").write(data)
    os.mkfifo(add("fifo.mp3", "fails"))
    os.symlink("/dev/zero", add("zero.wav", "fails"))
    server = socket.socket(socket.AF_UNIX)
    server.bind(add("socket.wav", "fails"))
    server.close()
    shutil.copy(os.path.join(tmp, "whole.wav"), add("Björk – été ♫.wav", "ok"))
    shutil.copy(os.path.join(tmp, "whole.wav"), add("new\nline.wav", "ok"))
    shutil.copy(os.path.join(tmp, "random.mp3"), add("new\nline bad.mp3", "either"))
    shutil.copy(os.path.join(tmp, "random.mp3"), add("\x1b[31mred.mp3", "either"))
    return cases


def test_hostile_corpus(model, tmp_path):
    """Every file of :func:`corpus`: one line for each failure, stems whole for each success,
    the run bounded; the kinds that decode (the whole files) separate, the ones that cannot
    (no samples, NaN, no regular file, an absurd rate or channel count) fail."""
    tmp = str(tmp_path)
    cases = corpus(tmp)
    peak, wall, frames = check_run(cases, model, tmp, "corpus")
    assert all(stat.S_ISREG(os.stat(p).st_mode) or cases[p] == "fails" for p in cases)
    print(f"hostile corpus: {len(cases)} files ({len(frames)} separated) in {wall:.1f} s, "
          f"peak {peak:.0f} MB")


def test_truncation_keeps_what_decodes_in_every_format(model, tmp_path):
    """Consistent truncation: the first half of a file of any format separates into stems of
    what decodes, with one warning that says how much; never a refusal of one format where
    another keeps its part."""
    tmp = str(tmp_path)
    cases = {}
    for ext, codec in (("wav", ()), ("aiff", ()), ("flac", ()), ("mp3", ("-c:a", "libmp3lame")),
                       ("ogg", ("-c:a", "libvorbis")), ("opus", ("-c:a", "libopus")),
                       ("m4a", ("-c:a", "aac", "-movflags", "+faststart"))):
        whole = song(os.path.join(tmp, f"whole.{ext}"), *codec)
        data = open(whole, "rb").read()
        cut = os.path.join(tmp, f"half.{ext}")
        open(cut, "wb").write(data[:len(data) // 2])
        os.unlink(whole)
        cases[cut] = "ok"
    code, stdout, err, peak, wall = measured(
        ["--model", model, "--outdir", os.path.join(tmp, "out"), *cases], tmp)
    assert code == 0, err
    for path in cases:
        line, = [ln for ln in err if path in ln]
        assert line.startswith(f"xumx.test: warning: {path}: damaged or truncated"), line
        kept = re.search(r"separating the 0:(\d\d\.\d{3}) that decode", line)
        assert kept and 0.2 < float(kept.group(1)) < 0.8 * SECONDS, line   # some of the 3 s


# --------------------------------------------------------------------------- out of memory
#: ``python -m xumx.test`` with a MemoryError raised in the second chunk's separation, or in
#: the decoder's generator at its second block (argv[1] says which).
_OUT_OF_MEMORY = r"""
import runpy, sys
import xumx.decode, xumx.separator, xumx.stemfiles
where = sys.argv.pop(1)
calls = []
def once_then_fail(real):
    def fail(*args):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError
        return real(*args)
    return fail
if where == "chunk":
    xumx.separator.Separator._filter = once_then_fail(xumx.separator.Separator._filter)
else:
    xumx.stemfiles.DECODE_BLOCK = 1000
    xumx.decode._samples = once_then_fail(xumx.decode._samples)
sys.argv[0] = "xumx.test"
runpy.run_module("xumx.test", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("where", ["chunk", "decoder"])
def test_out_of_memory_is_one_line_with_advice_that_exists_and_leaves_nothing(where, model,
                                                                              tmp_path):
    path = str(tmp_path / "song.wav")
    sf.write(path, (0.1 * np.random.RandomState(0).standard_normal((3 * RATE, 2))), RATE)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY, where, path, "--model", model,
                           "--outdir", str(out), "--chunk-dur", "0.5", "--overlap", "0.1"],
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          timeout=TIMEOUT)
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and err == [
        f"xumx.test: error: {path}: out of memory "
        f"(a smaller --chunk-dur or --batch-frames needs less)"], err
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)


def test_out_of_memory_advice_names_only_flags_the_command_has():
    from xumx.cli import failure
    from xumx.parsing import COMMANDS, build_parser
    for command in COMMANDS:
        line = failure(MemoryError(), command)
        assert line.startswith("out of memory"), line
        options = build_parser(command)._option_string_actions
        for word in re.findall(r"--[\w-]+", line):
            assert word in options, (command, line)
    assert failure(MemoryError(), "train") == \
        "out of memory (a smaller --batch-size or --seq-dur needs less)"
    assert failure(MemoryError(), "export") == "out of memory"


# --------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("name,shape", [("fc1_bass/affine/W", (200, 18)),
                                        ("fc1_bass/affine/W", (200, 17)),
                                        ("fc1_bass/affine/W", (100, 16)),
                                        ("output_scale_bass", (100,)),
                                        ("lstm_bass/lstm/weight_l0", (1, 4, 8, 24)),
                                        ("fc3_other/affine/W", (16, 20))])
def test_a_wrong_parameter_is_the_one_named(name, shape, tmp_path):
    """A wrong shape in the first source (or anywhere) names that parameter, never a neighbour
    it contradicts (``fc1_bass/bn/beta``) or a configuration field (``hidden_size``)."""
    import h5py
    from xumx.weights import WeightsError, load_xumx
    cfg = tiny_config()
    path = str(tmp_path / "model.h5")
    save_model(path, cfg, random_arrays(cfg, seed=1))
    with h5py.File(path, "a") as f:
        index = f[name].attrs["index"]
        del f[name]
        f[name] = np.zeros(shape, np.float32)
        f[name].attrs["index"] = index
        f[name].attrs["need_grad"] = True
    with pytest.raises(WeightsError) as e:
        load_xumx(path)
    assert f"parameter '{name}' has shape {shape}, expected" in str(e.value), str(e.value)


# --------------------------------------------------------------------------- claims are hints
def test_chunk_count_is_computed_not_listed():
    from xumx.chunking import chunk_bounds, nb_chunks
    for n, chunk, overlap in [(10, 4, 1), (1, 4, 1), (4, 4, 1), (5, 4, 1), (100, 0, 0),
                              (240001, 240000, 8000), (10 ** 6 + 7, 1000, 333)]:
        assert nb_chunks(n, chunk, overlap) == len(chunk_bounds(n, chunk, overlap))
    t0 = time.perf_counter()
    assert nb_chunks(2 ** 62, 240000, 8000) == 1 + -(-(2 ** 62 - 240000) // 232000)
    assert time.perf_counter() - t0 < 0.01


def test_a_claim_the_file_cannot_hold_is_no_hint():
    from xumx.decode import MAX_SAMPLES_PER_BYTE, AudioInfo, hint_samples
    info = AudioInfo("x.ogg", 2, 44100, "vorbis", 3.0, 132300, size=12000)
    assert hint_samples(info) == 132300
    lying = AudioInfo("x.ogg", 2, 44100, "vorbis", 2 ** 62 / 44100, 2 ** 62, size=12000)
    assert hint_samples(lying) is None
    assert hint_samples(AudioInfo("x.mp3", 2, 44100, "mp3", 1e8, None, stated=None,
                                  size=12000)) is None
    assert hint_samples(AudioInfo("x.mp3", 2, 44100, "mp3", None, None,
                                  stated=12000 * MAX_SAMPLES_PER_BYTE, size=12000)) \
        == 12000 * MAX_SAMPLES_PER_BYTE
