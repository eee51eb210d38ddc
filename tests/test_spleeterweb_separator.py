"""Spleeter Web v4's X-UMX separator (integrations/spleeter-web/x_umx_separator.py), run as
Spleeter Web runs it: constructed with its arguments, then ``separate_into_parts`` or
``create_static_mix`` called inside a forked worker process (celery's prefork pool forks its
workers). Spleeter Web's own modules that need Django's database, the network or TensorFlow are
the stand-ins of tests/spleeterweb_standins (the OutputFormat enum, the weights download,
spleeter's AudioAdapter); everything else is the real separator on a tiny seeded model."""
import ast
import json
import multiprocessing
import os
import re
import sys
import textwrap
import traceback

import numpy as np
import pytest
import soundfile as sf

from conftest import tiny_config
from seeded import random_arrays
from xumx.synth import song_stems
from xumx.weights import save_model

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(os.path.dirname(HERE), "integrations", "spleeter-web")
STANDINS = os.path.join(HERE, "spleeterweb_standins")
RATE = 44100   # Spleeter Web's separators load and write at 44.1 kHz
#: Spleeter Web's output formats: (OutputFormat value, file extension, bitrate passed to save)
FORMATS = [(0, "wav", None), (1, "flac", None), (192, "mp3", "192k"), (256, "mp3", "256k"),
           (320, "mp3", "320k")]


def in_worker(folder, job, env=None):
    """Run ``job(module)`` in a forked worker process whose current folder is ``folder`` (where
    Spleeter Web runs: pretrained_models/ under it), with the stand-ins first on its path and
    ``module`` the integration's x_umx_separator imported there. Returns ('ok', result, calls,
    whether the job imported nnabla) or ('error', exception class name, str(exception),
    traceback) from the worker, ``calls`` being the stand-in download's records."""
    def worker(queue):
        try:
            os.environ.update(env or {})
            os.chdir(folder)
            had_nnabla = "nnabla" in sys.modules   # a test before this one may have loaded it
            sys.path[:0] = [STANDINS, INTEGRATION]
            import x_umx_separator
            from api.separators import util
            result = job(x_umx_separator)
            loaded = "nnabla" in sys.modules and not had_nnabla
            queue.put(("ok", result, list(util.CALLS), loaded))
        except BaseException as e:   # the worker reports every failure to the test
            queue.put(("error", type(e).__name__, str(e), traceback.format_exc()))

    ctx = multiprocessing.get_context("fork")   # as celery's prefork pool
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(queue,))
    proc.start()
    try:
        out = queue.get(timeout=300)
    finally:
        proc.join(60)
    assert proc.exitcode == 0
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A Spleeter Web working folder: the tiny seeded model where Spleeter Web keeps the
    published weights (pretrained_models/x-umx.h5, with its sidecar), a 31 s song (longer than
    one 30 s chunk) and a 2 s one, generated stereo at 44.1 kHz; the expected stems of each:
    xumx's Separator on the whole song, computed in a forked worker too (the test process
    starts no onnxruntime threads before it forks the workers, as celery's parent)."""
    folder = tmp_path_factory.mktemp("spleeter-web")
    (folder / "pretrained_models").mkdir()
    cfg = tiny_config()
    model = str(folder / "pretrained_models" / "x-umx.h5")
    save_model(model, cfg, random_arrays(cfg, seed=1))
    songs = {}
    for name, seconds, seed in (("long", 31.0, 3), ("short", 2.0, 4)):
        mix = sum(song_stems(np.random.RandomState(seed), seconds, RATE).values())
        songs[name] = str(folder / f"{name}.wav")
        sf.write(songs[name], mix.astype(np.float32), RATE, subtype="FLOAT")

    def reference(_):
        from xumx import Separator
        sep = Separator.load(model)
        for name, path in songs.items():
            stems = sep.separate(sf.read(path, dtype="float32")[0], RATE)
            np.savez(str(folder / f"{name}-expected.npz"), **stems)

    status, *rest = in_worker(str(folder), reference)
    assert status == "ok", rest
    expected = {}
    for name in songs:
        with np.load(str(folder / f"{name}-expected.npz")) as z:
            expected[name] = {k: z[k] for k in z.files}
    return folder, songs, expected


def saves(log):
    with open(log) as f:
        return [json.loads(line) for line in f]


def test_stems_of_the_input_length_for_each_output_format(site):
    """separate_into_parts writes bass, drums, vocals and other in each of Spleeter Web's output
    formats, with the codec and bitrate it asks for, each stem of the song's length; the WAV
    stems are xumx's separation of the whole song (one call, cross-faded chunks: a song cut
    into back-to-back 30 s pieces gives other samples after 30 s); the weights are fetched
    from the published address with its checksum; nnabla is not imported."""
    from xumx.pretrained import PUBLISHED_SHA1, PUBLISHED_URL
    folder, songs, expected = site
    log = str(folder / "saves-parts.jsonl")

    def job(module):
        for value, ext, _ in FORMATS:
            song = "long" if ext == "wav" else "short"
            out = os.path.join(str(folder), f"parts-{value}")
            os.mkdir(out)
            module.XUMXSeparator(True, value).separate_into_parts(songs[song], out)
        return None

    status, *rest = in_worker(str(folder), job, {"SPLEETERWEB_STANDIN_LOG": log})
    assert status == "ok", rest
    calls, loaded_nnabla = rest[1:]
    assert not loaded_nnabla
    assert len(calls) == len(FORMATS)
    assert all(c[:2] == (PUBLISHED_URL, PUBLISHED_SHA1) for c in calls)
    assert all(c[3] == os.path.join("pretrained_models", "x-umx.h5") for c in calls)
    by_path = {s["path"]: s for s in saves(log)}
    for value, ext, bitrate in FORMATS:
        song = "long" if ext == "wav" else "short"
        frames = expected[song]["vocals"].shape[0]
        out = folder / f"parts-{value}"
        assert sorted(os.listdir(out)) == sorted(f"{t}.{ext}" for t in expected[song])
        for target, want in expected[song].items():
            path = str(out / f"{target}.{ext}")
            assert by_path[path]["codec"] == ext and by_path[path]["bitrate"] == bitrate
            assert by_path[path]["rate"] == RATE
            got, rate = sf.read(path, dtype="float32", always_2d=True)
            assert rate == RATE and got.shape == want.shape == (frames, 2), (path, got.shape)
            if ext == "wav":
                np.testing.assert_allclose(got, want, atol=1e-5, err_msg=path)
    assert expected["long"]["vocals"].shape[0] > 30 * RATE   # the long song has two chunks


def test_static_mix_is_the_sum_of_the_parts_asked_for(site):
    """create_static_mix writes the sum of the stems whose part is checked (Spleeter Web's parts
    dict, here with a part X-UMX does not have, unchecked), of the song's length."""
    folder, songs, expected = site
    parts = {"vocals": True, "drums": False, "bass": True, "other": False, "piano": False}
    out = str(folder / "static.flac")

    def job(module):
        module.XUMXSeparator(True, 1, False, 1.0, 1).create_static_mix(parts, songs["short"], out)

    status, *rest = in_worker(str(folder), job)
    assert status == "ok", rest
    got, rate = sf.read(out, dtype="float32", always_2d=True)
    want = expected["short"]["vocals"] + expected["short"]["bass"]
    assert rate == RATE and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-4)   # FLAC: 24-bit samples
    assert np.abs(want - expected["short"]["vocals"]).max() > 1e-2   # bass is in it


def test_gpu_that_cannot_be_used_is_one_line_and_writes_nothing(site):
    """CPU_SEPARATION off asks for the GPU: where onnxruntime cannot use one (no CUDA provider,
    or no visible device) the task fails with one line naming the GPU, and writes no stem: it
    never separates on the CPU instead."""
    folder, songs, _ = site
    out = folder / "parts-gpu"
    out.mkdir()

    def job(module):
        module.XUMXSeparator(False, 0).separate_into_parts(songs["short"], str(out))

    status, *rest = in_worker(str(folder), job, {"CUDA_VISIBLE_DEVICES": ""})
    assert status == "error", rest
    name, message, _ = rest
    assert name == "EngineError"
    assert "\n" not in message and "CUDA device 0" in message, message
    assert os.listdir(out) == []


def test_patch_registers_the_separator_with_its_arguments():
    """The patch of Spleeter Web's api/tasks.py imports the separator from api/separators and
    constructs it with the constructor's five arguments in order (CPU_SEPARATION, the output
    format, then the X-UMX arguments softmask, alpha and iterations of the mix); X-UMX is no
    longer refused as legacy by tasks.py or the serializers."""
    with open(os.path.join(INTEGRATION, "spleeter-web-f27ed9c.patch")) as f:
        patch = f.read()
    files = re.findall(r"^diff --git a/(\S+) b/", patch, re.M)
    assert files == ["api/serializers.py", "api/tasks.py"]
    removed = [line[1:] for line in patch.splitlines()
               if line.startswith("-") and not line.startswith("---")]
    assert sum("LEGACY_SEPARATORS = {D3NET, XUMX}" in line for line in removed) == 2
    tasks = patch[patch.index("diff --git a/api/tasks.py"):]
    blocks = re.findall(r"(?:^\+(?!\+\+).*\n?)+", tasks, re.M)   # runs of added lines
    added = [textwrap.dedent("".join(line[1:] + "\n" for line in block.splitlines()))
             for block in blocks]
    assert "from .separators.x_umx_separator import XUMXSeparator\n" in added
    branch = next(b for b in added if "XUMXSeparator(" in b)
    call = next(n for n in ast.walk(ast.parse(branch)) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "XUMXSeparator")
    args = [ast.unparse(a) for a in call.args]
    with open(os.path.join(INTEGRATION, "x_umx_separator.py")) as f:
        tree = ast.parse(f.read())
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                and n.name == "__init__")
    params = [a.arg for a in init.args.args[1:]]
    assert len(args) == len(params) == 5 and not call.keywords
    assert args[:2] == ["cpu_separation", "bitrate"]
    assert params[:2] == ["cpu_separation", "output_format"]
    for arg, param in zip(args[2:], params[2:]):   # softmask, alpha, iterations of the mix
        assert arg.startswith(f"separator_args.get('{param}'"), (arg, param)
