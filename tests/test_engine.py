"""The separation engine (the network's ONNX graph in onnxruntime, xumx.engine / xumx.onnxnet),
the blockwise Wiener filter and the streaming inverse STFT against their references: the NNabla
graph, norbert 0.2.1, dsp.istft, and the published code's outputs in tests/data/parity."""
import os
import sys
import types

import numpy as np
import pytest

import oracles
from conftest import PARITY, separator_of, sine_mix, tiny_config
from oracles import wiener_separate
from seeded import random_arrays
from xumx import dsp, engine
from xumx.engine import Device, EngineError, OnnxNet, parse_device
from xumx.errors import ConfigError, XumxWarning
from xumx.filtering import wiener_blocks
from xumx.separator import Separator
from xumx.weights import save_model


def ser(ref, est):
    """Signal-to-error ratio in dB."""
    ref, est = np.asarray(ref), np.asarray(est)
    return 10 * np.log10(np.sum(np.abs(ref) ** 2) / max(np.sum(np.abs(ref - est) ** 2), 1e-300))


#: every kind of configuration the NNabla model supports, tiny
CONFIGS = [
    dict(),                                                   # 4 sources, stereo, bi, 2 layers
    dict(sources=("a",), nb_layers=1),
    dict(hidden_size=24, sources=("a", "b")),
    dict(sources=("a", "b", "c"), nb_layers=3),
    dict(nb_channels=1),
    dict(unidirectional=True, sources=("a", "b"), hidden_size=12),
    dict(unidirectional=True, nb_layers=3, nb_channels=1, sources=("a", "b")),
    dict(crossing=False, sources=("a", "b")),
    dict(crossing=False, sources=("a",), nb_layers=3, unidirectional=True),
    dict(max_bin=129, sources=("a", "b")),                    # every bin: no crop
]


@pytest.mark.nnabla
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())
                         or "default")
def test_onnx_masks_match_nnabla(kw, rng):
    cfg = tiny_config(**kw)
    arrays = random_arrays(cfg, seed=5)
    mag = (3 * np.abs(rng.standard_normal((40, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)
    ref = separator_of(cfg, arrays, "nnabla").masks(mag)
    net = OnnxNet.from_arrays(cfg, arrays)
    assert net.cfg == cfg   # the configuration travels in the model's metadata
    out = net.masks(mag)
    assert out.shape == ref.shape == (len(cfg.sources), 40, cfg.nb_channels, cfg.nb_bins)
    assert out.dtype == np.float32 and out.min() >= 0
    assert ser(ref, out) >= 100
    # the frame axis is dynamic: one frame, and a prefix (the LSTMs run forward and backward,
    # so only the whole-prefix masks compare)
    for n in (1, 7):
        assert ser(separator_of(cfg, arrays, "nnabla").masks(mag[:n]), net.masks(mag[:n])) >= 100


def test_batch_axis_runs_independent_sequences(rng):
    cfg = tiny_config(sources=("a", "b"))
    net = OnnxNet.from_arrays(cfg, random_arrays(cfg, seed=3))
    mag = np.abs(rng.standard_normal((20, 3, cfg.nb_channels, cfg.nb_bins))).astype(np.float32)
    batched = net.batch_masks(mag)
    assert batched.shape == (2, 20, 3, cfg.nb_channels, cfg.nb_bins)
    for b in range(3):
        assert ser(net.masks(mag[:, b]), batched[:, :, b]) >= 120


def test_device_names():
    assert parse_device(None) == parse_device("cpu") == parse_device(" CPU ") == Device("cpu")
    for name in ("cuda", "cudnn", "gpu", "cuda:0"):
        assert parse_device(name) == Device("cuda", 0), name
    assert parse_device("cuda:2") == parse_device("cudnn:2") == Device("cuda", 2)
    assert parse_device(Device("cuda", 3)) == Device("cuda", 3)
    torch_like = types.SimpleNamespace(type="cuda", index=1)   # what torch.device has
    assert parse_device(torch_like) == Device("cuda", 1)
    assert parse_device(types.SimpleNamespace(type="cpu", index=None)) == Device("cpu")
    for bad, words in (("tpu", "unknown device"), ("cuda:x", "whole number"),
                       ("cuda:-1", "whole number"), ("cpu:1", "unknown device")):
        with pytest.raises(ConfigError, match=words):
            parse_device(bad)


def test_backends(tiny_model):
    with pytest.raises(ConfigError, match="backend must be one of"):
        Separator.load(tiny_model, backend="torch")


def test_unusable_gpu_is_an_error_not_a_cpu_run(tiny_cfg, monkeypatch):
    import onnxruntime as ort
    arrays = random_arrays(tiny_cfg, seed=1)
    if engine.CUDA_PROVIDER in ort.get_available_providers():   # a GPU build: it must be used
        net = OnnxNet.from_arrays(tiny_cfg, arrays, parse_device("cudnn"))
        assert net.session.get_providers()[0] == engine.CUDA_PROVIDER
        return
    with pytest.raises(EngineError, match="cannot run on CUDA device 0: .*pip install onnxruntime-gpu"):
        OnnxNet.from_arrays(tiny_cfg, arrays, parse_device("cudnn"))
    # a CUDA provider that is listed but does not start: onnxruntime falls back to the CPU,
    # which the session's providers show
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: [engine.CUDA_PROVIDER, engine.CPU_PROVIDER])
    with pytest.raises(EngineError, match="CUDA provider could not start"):
        OnnxNet.from_arrays(tiny_cfg, arrays, parse_device("cuda:1"))


class FakeCudaRuntime(types.ModuleType):
    """onnxruntime with a CUDA provider that always starts (``log`` empty) or that fails and
    falls back to the CPU after writing ``log`` to file descriptor 2, as onnxruntime's native
    logger does. Sessions really run, on the CPU; what was asked for is recorded."""

    def __init__(self, log: str = ""):
        import onnxruntime
        super().__init__("onnxruntime")
        self._real, self._log, self.asked, self.arenas = onnxruntime, log, [], []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_available_providers(self):
        return [engine.CUDA_PROVIDER, engine.CPU_PROVIDER]

    def InferenceSession(self, model, opts, providers):
        self.asked.append(providers)
        if self._log:
            os.write(2, self._log.encode())
        session = self._real.InferenceSession(model, opts, providers=[engine.CPU_PROVIDER])
        cuda = [p for p in providers if p == engine.CUDA_PROVIDER or p[0] == engine.CUDA_PROVIDER]
        if cuda and not self._log:
            session.get_providers = lambda: [engine.CUDA_PROVIDER, engine.CPU_PROVIDER]
        return session

    def RunOptions(self):
        fake, opts = self, self._real.RunOptions()

        class Recorded:
            def add_run_config_entry(self, key, value):
                fake.arenas.append((key, value))
                opts.add_run_config_entry(key, value)
        return Recorded()


@pytest.mark.parametrize("device,index", [("cuda:1", "1"), ("cudnn", "0"), ("gpu:3", "3")])
def test_the_named_gpu_is_the_one_onnxruntime_is_asked_for(device, index, tiny_cfg, monkeypatch):
    """The CUDA provider gets the device id of the device named (not always GPU 0), and the
    memory arena shrunk after each run is that GPU's."""
    fake = FakeCudaRuntime()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    net = OnnxNet.from_arrays(tiny_cfg, random_arrays(tiny_cfg, seed=1), parse_device(device))
    assert fake.asked == [[(engine.CUDA_PROVIDER, {"device_id": index}), engine.CPU_PROVIDER]]
    assert fake.arenas == [("memory.enable_memory_arena_shrinkage", f"gpu:{index}")]
    assert net.device == Device("cuda", int(index))


def test_gpu_failure_names_the_cause_from_onnxruntimes_log(tiny_cfg, monkeypatch):
    """A CUDA provider that fails to load: onnxruntime logs why on stderr and runs on the CPU;
    the error is one line with the log's cause, and the log itself is not shown."""
    log = ("2025-01-01 10:00:00.0 [W:onnxruntime:Default, env.cc:1 Start] a warning\n"
           "2025-01-01 10:00:00.1 [E:onnxruntime:Default, provider_bridge_ort.cc:1744 "
           "TryGetProviderInfo_CUDA] /src/provider_bridge_ort.cc:1426 Get() [ONNXRuntimeError] : "
           "1 : FAIL : Failed to load library libonnxruntime_providers_cuda.so with error: "
           "libcublasLt.so.12: cannot open shared object file: No such file or directory\n")
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeCudaRuntime(log))
    with pytest.raises(EngineError) as e:
        OnnxNet.from_arrays(tiny_cfg, random_arrays(tiny_cfg, seed=1), parse_device("cuda:2"))
    line = str(e.value)
    assert "\n" not in line and line.startswith("cannot run on CUDA device 2: onnxruntime's CUDA "
                                                "provider could not start (")
    assert "libcublasLt.so.12: cannot open shared object file" in line, line
    assert "a warning" not in line and "pip install onnxruntime-gpu" in line


@pytest.mark.nnabla
@pytest.mark.parametrize("sep", [dict(niter=1),
                                 dict(softmask=True, alpha=2.0, niter=0, residual_model=True)])
@pytest.mark.parametrize("model_channels,audio_channels", [(2, 2), (2, 1), (1, 2)])
def test_separator_engines_agree(sep, model_channels, audio_channels):
    cfg = tiny_config(nb_channels=model_channels)
    arrays = random_arrays(cfg, seed=2)
    audio = sine_mix(3000, cfg.sample_rate, audio_channels)
    fast = separator_of(cfg, arrays, **sep).separate(audio)
    ref = separator_of(cfg, arrays, "nnabla", **sep).separate(audio)
    assert set(fast) == set(ref)
    for name in ref:
        assert fast[name].shape == audio.shape
        assert ser(ref[name], fast[name]) >= 90, name


def test_model_cache(tmp_path, monkeypatch, rng):
    """Separator.load builds the graph once per parameter file and loads it from the cache
    after, without reading (or hashing) the weights again."""
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(sources=("a", "b"))
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, random_arrays(cfg, seed=4))
    mag = np.abs(rng.standard_normal((30, cfg.nb_channels, cfg.nb_bins))).astype(np.float32)
    first = Separator.load(path)

    def cached():
        return [n for n in os.listdir(tmp_path / "cache" / "onnx") if n.endswith(".onnx")]
    assert len(cached()) == 1 and first.cfg == cfg
    import xumx.digests
    import xumx.weights
    monkeypatch.setattr(xumx.weights, "read_parameters", lambda *a, **k: pytest.fail("weights read again"))
    hashed = []
    real_hash = xumx.digests.hash_file
    monkeypatch.setattr(xumx.digests, "hash_file", lambda p, a="sha256": hashed.append(p)
                        or real_hash(p, a))
    xumx.digests.forget()   # a new process: only the memo on disk remembers
    again = Separator.load(path)
    assert hashed == []   # its digest is remembered while size, mtime and inode stay
    assert again.cfg == cfg
    np.testing.assert_array_equal(again.masks(mag), first.masks(mag))
    monkeypatch.undo()
    monkeypatch.setenv("XUMX_CACHE", str(tmp_path / "cache"))
    # other weights, another entry; a damaged entry is rebuilt
    save_model(path, cfg, random_arrays(cfg, seed=5))
    other = Separator.load(path)
    assert len(cached()) == 2
    assert ser(other.masks(mag), first.masks(mag)) < 40
    for name in os.listdir(tmp_path / "cache" / "onnx"):
        with open(tmp_path / "cache" / "onnx" / name, "wb") as f:
            f.write(b"garbage")
    np.testing.assert_array_equal(Separator.load(path).masks(mag), other.masks(mag))


def test_model_cache_keeps_the_newest_entries(tmp_path, monkeypatch):
    """Beyond CACHE_ENTRIES models the least recently used are removed (graph and head), and
    using an entry makes it the most recent."""
    from xumx import modelcache
    monkeypatch.setattr(modelcache, "CACHE_ENTRIES", 2)
    folder = str(tmp_path / "onnx")
    head = np.arange(3, dtype=np.float32)
    for k, key in enumerate(("a" * 64, "b" * 64, "c" * 64)):
        assert modelcache.cached_model(key, lambda k=k: (b"model %d" % k, head), folder)[1] is head
        os.utime(modelcache.cached_model(key, None, folder)[0], (1000 + k, 1000 + k))
        if k == 1:   # 'a' used again after 'b' was made: 'b' is now the oldest
            path_a, none = modelcache.cached_model("a" * 64, None, folder)
            assert none is None   # from the cache: the head is in the file beside the graph
            os.utime(path_a, (1001.5, 1001.5))
    modelcache.cached_model("d" * 64, lambda: (b"model 3", head), folder)
    names = sorted(n[len("xumx-"):len("xumx-") + 1] + n[n.index("."):] for n in os.listdir(folder))
    assert names == ["c.head.npy", "c.onnx", "d.head.npy", "d.onnx"]
    path_d = modelcache.cached_model("d" * 64, None, folder)[0]
    np.testing.assert_array_equal(np.load(path_d[:-len(".onnx")] + ".head.npy"), head)


def test_unwritable_cache_builds_in_memory_with_one_warning(tmp_path, monkeypatch, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XUMX_CACHE", str(blocker))
    with pytest.warns(XumxWarning) as caught:
        sep = Separator.load(tiny_model)
    lines = [str(w.message) for w in caught if issubclass(w.category, XumxWarning)]
    assert len(lines) == 1 and "cannot write the model cache" in lines[0] \
        and "XUMX_CACHE" in lines[0], lines
    assert set(sep.separate(sine_mix(2000, 8000))) == set(sep.cfg.sources)


def test_read_only_home_separates(tmp_path, tiny_model):
    """A home folder that cannot be written (a container's) and no XUMX_CACHE: separation
    works, one warning says why the model is built in memory, and nothing is written."""
    import stat
    import subprocess
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k not in ("XUMX_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    code = ("import sys, numpy as np; from xumx import Separator; "
            "s = Separator.load(sys.argv[1]); "
            "print(sorted(s.separate(np.zeros((3000, 2), np.float32))))")
    # root ignores permissions: make the cache path unusable as a folder instead
    if os.geteuid() == 0:
        (home / ".cache").parent.chmod(0o700)
        (home / ".cache").write_text("a file where the cache folder would be")
        home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    done = subprocess.run([sys.executable, "-c", code, tiny_model], env=env, capture_output=True,
                          text=True, cwd=str(tmp_path))
    home.chmod(0o700)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(tiny_config().sources))
    warned = [ln for ln in done.stderr.splitlines() if "cannot write the model cache" in ln]
    assert len(warned) == 1, done.stderr


def _norbert(v, x, niter, softmask, alpha, residual):
    import norbert
    if softmask:
        v = v ** alpha
    x = x.astype(np.complex128)
    if residual:
        v = norbert.residual_model(v, x, alpha if softmask else 1)
    return norbert.wiener(v, x, niter, use_softmask=softmask)


@pytest.mark.parametrize("niter", [0, 1, 3])
@pytest.mark.parametrize("softmask,residual", [(False, False), (True, False), (False, True),
                                               (True, True)])
@pytest.mark.parametrize("channels,model_channels,level", [(2, 2, 30.0), (1, 1, 30.0),
                                                           (2, 1, 30.0), (2, 2, 0.1)])
def test_wiener_equals_norbert(niter, softmask, residual, channels, model_channels, level, rng):
    """Blocks of 7 frames (not dividing 30) give norbert's whole-input result."""
    x = level * (rng.standard_normal((30, 12, channels)) + 1j * rng.standard_normal((30, 12, channels)))
    v = (level * np.abs(rng.standard_normal((30, 12, model_channels, 3)))).astype(np.float32)
    alpha = 2.0 if softmask else 1.0
    ref = _norbert(v, x, niter, softmask, alpha, residual)
    out = wiener_separate(v, x, niter, softmask, alpha, residual, block=7)
    assert out.shape == ref.shape == (30, 12, channels, 3 + residual)
    assert ser(ref, out) >= 60


class _Counted:
    """v (S, N, C, F) sliced by frames, counting the frames made (as SourceMagnitudes is)."""

    def __init__(self, v):
        self.v, self.ndim, self.shape, self.made = v, v.ndim, v.shape, 0

    def __getitem__(self, key):
        out = self.v[key]
        self.made += out.shape[1]
        return out


@pytest.mark.parametrize("niter,softmask,residual,passes", [
    (1, False, False, 1), (3, False, False, 1),   # the default: v made once, its power kept
    (1, True, False, 2), (1, False, True, 3)])     # the others make v in every pass
def test_wiener_makes_source_magnitudes_once_per_block(niter, softmask, residual, passes, rng):
    """With the mixture's phase the filter slices each frame of v once, however many EM
    iterations, and gives what a plain array of v gives."""
    x = 3 * (rng.standard_normal((30, 2, 12)) + 1j * rng.standard_normal((30, 2, 12)))
    v = (3 * np.abs(rng.standard_normal((3, 30, 2, 12)))).astype(np.float32)
    counted = _Counted(v)
    got = list(wiener_blocks(counted, x, niter, softmask, 2.0 if softmask else 1.0, residual,
                             block=7))
    want = list(wiener_blocks(v, x, niter, softmask, 2.0 if softmask else 1.0, residual,
                              block=7))
    assert counted.made == passes * 30
    for (a, b, y), (c, d, z) in zip(got, want):
        assert (a, b) == (c, d)
        np.testing.assert_array_equal(y, z)


def test_source_magnitudes_are_the_masks_times_the_input(rng):
    """The serving graph's source magnitudes, made block by block from fc3's input, are the
    masks of the whole network (an exported graph) times the input, each item of a batch."""
    from xumx.engine import SourceMagnitudes
    from xumx.onnxnet import model_bytes
    cfg = tiny_config(sources=("a", "b", "c"))
    arrays = random_arrays(cfg, seed=3)
    net, whole = OnnxNet.from_arrays(cfg, arrays), OnnxNet(model_bytes(cfg, arrays))
    assert whole.head is None and net.head.shape == (3, cfg.hidden_size + 1,
                                                     cfg.nb_channels * cfg.nb_bins)
    mag = np.abs(rng.standard_normal((20, 2, cfg.nb_channels, cfg.nb_bins))).astype(np.float32)
    masks = whole.batch_masks(mag)
    np.testing.assert_allclose(net.batch_masks(mag), masks, rtol=1e-5, atol=1e-6)
    items = net.batch_sources(mag)
    assert len(items) == 2 and all(isinstance(v, SourceMagnitudes) for v in items)
    for b, v in enumerate(items):
        assert v.shape == (3, 20, cfg.nb_channels, cfg.nb_bins)
        for start, stop in ((0, 7), (7, 14), (14, 20)):
            want = masks[:, start:stop, b] * mag[start:stop, b]
            np.testing.assert_allclose(v[:, start:stop], want, rtol=1e-5, atol=1e-6)
        with pytest.raises(IndexError, match="sliced by frames"):
            v[0]


def test_serving_graph_needs_its_head(tmp_path):
    """A serving graph without its head file, or with one of the wrong shape, is refused
    (the model cache then builds its entry again)."""
    from xumx.onnxnet import head_path, serving_bytes
    cfg = tiny_config()
    graph, head = serving_bytes(cfg, random_arrays(cfg, seed=1))
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(graph)
    with pytest.raises(ValueError, match="head .* cannot be read"):
        OnnxNet(path)
    np.save(head_path(path), head[:, :-1])
    with pytest.raises(ValueError, match="not float32"):
        OnnxNet(path)
    np.save(head_path(path), head)
    np.testing.assert_array_equal(OnnxNet(path).head, head)
    with pytest.raises(ValueError, match="needs its head"):
        OnnxNet(graph)


def test_wiener_dual_mono_is_stable(rng):
    """Identical channels make the mixture covariance singular up to norbert's tiny
    regularisation: the float64 closed form still gives norbert's result."""
    x = np.repeat(rng.standard_normal((20, 9, 1)) + 1j * rng.standard_normal((20, 9, 1)), 2, axis=2)
    v = np.repeat(np.abs(rng.standard_normal((20, 9, 1, 4))), 2, axis=2).astype(np.float32)
    out = wiener_separate(v, x, 2, block=6)
    assert np.all(np.isfinite(out))
    assert ser(_norbert(v, x, 2, False, 1.0, False), out) >= 60


def test_overlap_add_blocks_equal_istft(rng):
    spec = oracles.stft(rng.standard_normal((2, 1000)), 128, 32)
    ola = dsp.OverlapAdd(2, 128, 32, spec.shape[-1], 1000, np.float32)
    for start in range(0, spec.shape[-1], 5):
        ola.add(start, spec[:, :, start:start + 5].transpose(0, 2, 1))
    ref = oracles.istft(spec, 128, 32, 1000)
    assert ser(ref, ola.result().T) >= 100


# ------------------------------------------------------------------ parity, full size
PARITY_CONFIGS = {
    "default": dict(),
    "softmask": dict(softmask=True, alpha=2.0, niter=0, residual_model=True),
    "em3": dict(niter=3),
}


@pytest.fixture(scope="module")
def parity_separator(parity_model):
    """The parity fixture's parameters (conftest's ``parity_model``) on the default engine, CPU."""
    return Separator.load(parity_model)


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_engine_parity(parity_separator, name):
    import soundfile as sf
    audio, rate = sf.read(os.path.join(PARITY, "input.wav"), dtype="float32")
    official = np.load(os.path.join(PARITY, "official_seed0.npz"))
    sep = parity_separator.with_settings(**PARITY_CONFIGS[name])
    assert isinstance(sep.net, OnnxNet)
    out = sep.separate(audio)
    keys = [k for k in official.files if k.startswith(name + "/")]
    assert sorted(k.split("/")[1] for k in keys) == sorted(out)
    for key in keys:
        ref = official[key]
        assert ser(ref, out[key.split("/")[1]][:ref.shape[0]]) >= 100, key


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(engine, "physical_cores", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for busy, threads in ((None, 2), (0.0, 2), (0.4, 2), (0.6, 1), (1.4, 1), (3.0, 1)):
        monkeypatch.setattr(engine, "busy_elsewhere", lambda busy=busy: busy)
        assert engine.default_threads() == threads, busy
    monkeypatch.setattr(engine, "physical_cores", lambda: 4)   # 4 cores, 8 logical CPUs
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(engine, "busy_elsewhere", lambda: 2.2)
    assert engine.default_threads() == 4   # one per core, as onnxruntime's own default
    monkeypatch.setattr(engine, "busy_elsewhere", lambda: 5.6)
    assert engine.default_threads() == 2


def test_busy_elsewhere_counts_others_not_this_process(monkeypatch):
    """2 CPUs over 1 s: 0.5 s idle in all and 0.9 s of this process's CPU leave 0.6 CPU busy
    with other work."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(engine, "_cpu_clock", lambda: (100.5, 11.0, 3.9))
    assert abs(engine.busy_elsewhere((100.0, 10.0, 3.0)) - 0.6) < 1e-9
    assert engine.busy_elsewhere((100.5, 10.99, 3.9)) is None   # too short a window to tell
    monkeypatch.setattr(engine, "_cpu_clock", lambda: None)
    assert engine.busy_elsewhere((100.0, 10.0, 3.0)) is None


def test_forked_worker_measures_its_own_window():
    """In a forked child (a celery/billiard prefork worker) the busy-CPU estimate counts only
    what other processes did since the fork: the parent's CPU time before the fork is not
    other processes' work. With the parent's reading the child saw dozens of busy CPUs on 2
    cores and ran on one thread."""
    import multiprocessing
    import time
    t0 = time.process_time()
    while time.process_time() - t0 < 1.0:   # the parent's own work before the fork
        sum(range(10000))

    def child(queue):
        time.sleep(0.3)   # a window in which this process and its parent are idle
        busy = engine.busy_elsewhere()
        idle1, wall1 = engine._cpu_clock()[:2]
        idle0, wall0 = engine._SINCE[:2]
        # every CPU's busy time over the same window, whoever used it (this child included)
        machine = (os.cpu_count() or 1) - (idle1 - idle0) / (wall1 - wall0)
        queue.put((busy, machine, engine._SINCE[2], engine.default_threads(),
                   engine.physical_cores()))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    busy, machine, since_cpu, threads, cores = queue.get(timeout=60)
    proc.join(60)
    assert since_cpu < 0.5   # the child's window starts at its own (near zero) CPU time
    assert busy is not None and 0 <= busy <= os.cpu_count()
    # the parent burnt 1 s of CPU before the fork; were it counted, busy would exceed what the
    # whole machine did in the window by >= 1 / 0.3 CPUs (up to every CPU). The machine may be
    # loaded by others (CI, a second test run): busy never exceeds its reading.
    assert busy <= max(machine, 0.0) + 0.1, (busy, machine)
    assert threads >= 1 and (busy > 0.5 or threads == cores)
