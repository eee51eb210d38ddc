"""The public face: ``Separator.load`` and what a Separator does (arrays of any length, rate,
dtype and channel count; files, through the same path as ``python -m xumx.test``; aggregate
stems; progress), and the model forms it takes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import sine_mix, tiny_config, write_umx_folder
from seeded import random_arrays
from xumx import Separator, dsp, pretrained
from xumx.chunking import chunk_bounds, chunk_weights
from xumx.errors import ConfigError, InputError
from xumx.modelfiles import BEST_NAME, ModelFiles
from xumx.resample import StreamResampler, resampled_length
from xumx.weights import save_model

SOURCES = ("bass", "drums", "vocals", "other")


def test_what_a_separator_says_about_itself(tiny_model):
    sep = Separator.load(tiny_model)
    assert sep.sources == SOURCES and sep.stems == SOURCES
    assert sep.sample_rate == 8000 and str(sep.device) == "CPU"
    assert sep.model == ModelFiles(tiny_model)
    some = sep.with_settings(targets=["vocals"], residual_model=True,
                             aggregate={"accompaniment": ["bass", "drums", "other"]})
    assert some.stems == ("vocals", "residual", "accompaniment")
    assert some.net is sep.net   # the network is shared, not loaded again
    assert sep.stems == SOURCES   # the original keeps its settings
    with pytest.raises(TypeError, match="unknown setting.*'nitter'"):
        sep.with_settings(nitter=2)
    with pytest.raises(InputError, match="unknown target.*piano"):
        sep.with_settings(aggregate={"band": ["bass", "piano"]})
    with pytest.raises(InputError, match="given twice"):
        sep.with_settings(aggregate={"vocals": ["bass"]})


@pytest.mark.parametrize("seconds", [0.004, 2.5, 9.3])
def test_any_length_in_chunks_with_the_input_length(tiny_model, seconds):
    """Shorter than a hop, one chunk, and several cross-faded chunks: stems of the input's
    length; chunking only changes the result near the overlaps (tests/test_chunking.py checks
    the cross-fade itself)."""
    audio = sine_mix(int(seconds * 8000), 8000)
    sep = Separator.load(tiny_model, chunk_dur=3.0, overlap=0.5)
    out = sep.separate(audio)
    whole = sep.with_settings(chunk_dur=0).separate(audio)
    assert list(out) == list(SOURCES)
    for k in SOURCES:
        assert out[k].shape == audio.shape and out[k].dtype == np.float32
        assert np.all(np.isfinite(out[k]))
    if seconds < 3:   # one chunk: the one-piece result
        for k in SOURCES:
            np.testing.assert_array_equal(out[k], whole[k])
    else:
        ser = min(10 * np.log10(np.sum(whole[k].astype(float) ** 2)
                                / np.sum((out[k] - whole[k]).astype(float) ** 2)) for k in SOURCES)
        assert 10 < ser < 200, ser   # close to one piece, but not the same computation


def test_mono_rates_and_integers(tiny_model):
    sep = Separator.load(tiny_model)
    stereo = sine_mix(12000, 8000)
    mono = stereo[:, 0].copy()
    out = sep.separate(mono)
    assert all(v.shape == mono.shape for v in out.values())
    np.testing.assert_array_equal(out["vocals"], sep.separate(mono[:, None])["vocals"][:, 0])
    at_48k = sine_mix(48000 * 2 + 7, 48000)
    out = sep.separate(at_48k, rate=48000)
    assert all(v.shape == at_48k.shape for v in out.values())
    ints = np.round(np.clip(stereo, -1, 0.999) * 32768).astype(np.int16)
    np.testing.assert_allclose(sep.separate(ints)["bass"],
                               sep.separate(ints.astype(np.float32) / 32768)["bass"], atol=1e-6)


def test_bounded_memory_path_equals_the_whole_array_steps(tiny_model, monkeypatch):
    """An int16 array at 48 kHz in several chunks: ``separate`` (blocks, the resamplers' kept
    spans, the chunks' overlap tails, the pieces dropped as they are copied, the mixture STFT
    made again after the network) gives exactly the stems of the same steps written out on
    whole arrays: the signal resampled in one push, each chunk separated in one piece and
    weighted, the weighted chunks added, each stem resampled back in one push."""
    rate, model_rate = 48000, 8000
    ints = np.round(np.clip(sine_mix(rate * 9 + 123, rate, seed=5), -1, 0.999) * 32767
                    ).astype(np.int16)
    sep = Separator.load(tiny_model, chunk_dur=2.0, overlap=0.5)
    frames = {}   # the STFT frames made, block by block: {StftFrames: [(a, block)]}
    getitem = dsp.StftFrames.__getitem__

    def record(self, frame_slice):
        block = getitem(self, frame_slice)
        frames.setdefault(self, []).append((frame_slice.start, block))
        return block
    monkeypatch.setattr(dsp.StftFrames, "__getitem__", record)
    got = sep.separate(ints, rate=rate)
    # each chunk's STFT is made twice, block by block, never whole: for the network's input,
    # then for the filter, with the same numbers (the network changed nothing), every frame
    made = list(frames.values())
    assert len(made) == 2 * sep.nb_chunks(ints.shape[0], rate) >= 10
    for for_network, for_filter in zip(made[::2], made[1::2]):
        spec = {a + k: row for a, block in for_network for k, row in enumerate(block)}
        seen = set()
        for a, block in for_filter:
            for k, row in enumerate(block):
                assert np.array_equal(row, spec[a + k])
                seen.add(a + k)
        assert seen == set(spec) == set(range(len(spec)))

    def whole(x, a, b, length):
        r = StreamResampler(a, b)
        return np.concatenate([r.push(x), r.finish(length)])
    n = ints.shape[0]
    x = whole(ints.astype(np.float32) / 32768, rate, model_rate,
              resampled_length(n, rate, model_rate))
    bounds = chunk_bounds(x.shape[0], *sep.chunking.samples(model_rate))
    steps = {k: np.zeros(x.shape, np.float32) for k in SOURCES}
    for i, (start, end) in enumerate(bounds):
        w = chunk_weights(bounds, i)[:, None]
        ramps = w[:, 0] != 1.0
        for k, y in sep.with_settings(chunk_dur=0).separate(x[start:end]).items():
            y[ramps] = (w[ramps] * y[ramps]).astype(np.float32)
            steps[k][start:end] += y
    assert list(got) == list(SOURCES)
    for k in SOURCES:
        want = whole(steps[k], model_rate, rate, n)
        assert got[k].shape == want.shape == ints.shape
        np.testing.assert_array_equal(got[k], want)


@pytest.mark.parametrize("channels", [1, 2])
def test_network_input_made_in_blocks_is_that_of_the_whole_spectrogram(tiny_model, channels):
    """The network's input and the filter's scale, made a block of frames at a time, are the
    numbers of the whole STFT (:meth:`Separator.spectrogram`, :meth:`Separator.model_input`),
    for stereo and mono audio, over more frames than one block."""
    from xumx import separator
    sep = Separator.load(tiny_model)
    audio = sine_mix(8000 * 12, 8000, seed=2)[:, :channels]
    mag, peak = sep._input_and_peak(audio)
    spec = sep.spectrogram(np.repeat(audio, 2 // channels, axis=1))
    assert spec.shape[1] > 2 * separator.MAGNITUDE_BLOCK
    np.testing.assert_array_equal(mag, sep.model_input(spec))
    assert peak == np.abs(spec).max()


def test_progress_is_told_every_chunk(tiny_model):
    sep = Separator.load(tiny_model, chunk_dur=2.0, overlap=0.25)
    audio = sine_mix(8000 * 5, 8000)
    calls = []
    sep.separate(audio, progress=lambda done, total: calls.append((done, total)))
    total = sep.nb_chunks(audio.shape[0])
    assert total == 3 and calls == [(1, 3), (2, 3), (3, 3)]


def test_aggregate_is_the_sum_of_its_sources(tiny_model):
    """The karaoke case: 'accompaniment' = everything but the vocals."""
    audio = sine_mix(8000 * 4, 8000)
    sep = Separator.load(tiny_model)
    parts = sep.separate(audio)
    karaoke = sep.with_settings(targets="vocals",
                                aggregate={"accompaniment": ("bass", "drums", "other")})
    out = karaoke.separate(audio)
    assert list(out) == ["vocals", "accompaniment"]
    np.testing.assert_array_equal(out["vocals"], parts["vocals"])
    want = parts["bass"] + parts["drums"] + parts["other"]
    err = np.max(np.abs(out["accompaniment"] - want))
    assert err < 1e-5 * max(1.0, np.max(np.abs(want))), err
    assert np.max(np.abs(out["accompaniment"] - parts["other"])) > 1e-3   # it is not one source


def test_separate_file_is_the_command_line(tmp_path, tiny_model):
    """The API's file method and ``python -m xumx.test`` give bit-identical stems for the same
    file and settings (one path)."""
    song = tmp_path / "song.flac"
    sf.write(str(song), sine_mix(8000 * 7 + 11, 8000), 8000, subtype="PCM_24")
    sep = Separator.load(tiny_model, niter=2, chunk_dur=3.0, overlap=0.5,
                         aggregate={"accompaniment": ["bass", "drums", "other"]})
    paths = sep.separate_file(str(song), str(tmp_path / "api"), format="wav", bits="float")
    assert set(paths) == set(SOURCES) | {"accompaniment"}
    assert all(p.startswith(str(tmp_path / "api" / "song")) for p in paths.values())
    done = subprocess.run([sys.executable, "-m", "xumx.test", str(song), "--model", tiny_model,
                           "--out-dir", str(tmp_path / "cli"), "--bits", "float", "--niter", "2",
                           "--chunk-dur", "3", "--overlap", "0.5",
                           "--aggregate", "accompaniment=bass,drums,other"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name, path in paths.items():
        api, _ = sf.read(path, dtype="float32")
        cli, _ = sf.read(str(tmp_path / "cli" / "song" / f"{name}.wav"), dtype="float32")
        assert api.shape == (8000 * 7 + 11, 2)
        np.testing.assert_array_equal(api, cli)
    # an array of the same samples through separate(): the same stems too
    audio, _ = sf.read(str(song), dtype="float32")
    arrays = sep.separate(audio)
    for name, path in paths.items():
        np.testing.assert_array_equal(arrays[name], sf.read(path, dtype="float32")[0])


def test_model_forms(tmp_path, monkeypatch):
    """A weights file, a training run's folder, an Open-Unmix folder (found by what it holds),
    and None: the published weights from the cache."""
    cfg = tiny_config()
    arrays = random_arrays(cfg, seed=3)
    run = tmp_path / "run"
    run.mkdir()
    save_model(str(run / BEST_NAME), cfg, arrays)
    from_run = Separator.load(str(run))
    assert from_run.model.path == str(run / BEST_NAME) and from_run.model.name == "run"
    umx_cfg = tiny_config(crossing=False)
    folder = write_umx_folder(tmp_path / "umx", umx_cfg, random_arrays(umx_cfg, seed=4))
    umx = Separator.load(folder)
    assert umx.model.umx and umx.sources == SOURCES and not umx.cfg.crossing
    two = Separator.load(folder, targets=["vocals", "drums"])
    assert two.model.targets == ("vocals", "drums") and two.sources == ("vocals", "drums")
    audio = sine_mix(6000, 8000)
    np.testing.assert_allclose(two.separate(audio)["vocals"] + two.separate(audio)["drums"],
                               audio, atol=0.2)   # two networks' estimates share the mixture
    monkeypatch.setattr(pretrained, "published_model", lambda **kw: str(run / BEST_NAME))
    published = Separator.load()
    assert published.model.published and published.sources == SOURCES
    with pytest.raises(ConfigError, match="--umx-infer needs --model"):
        Separator.load(None, umx=True)


def test_sample_rate_of_a_model_without_sidecar(tmp_path, tiny_model):
    """``sample_rate`` says the rate of weights whose sidecar is gone; it may not contradict a
    sidecar."""
    with pytest.raises(ConfigError, match="contradicts the model.*8000 Hz"):
        Separator.load(tiny_model, sample_rate=16000)
    os.unlink(os.path.splitext(tiny_model)[0] + ".json")
    sep = Separator.load(tiny_model, sample_rate=16000)
    assert sep.sample_rate == 16000
    out = sep.separate(sine_mix(16000, 16000), rate=16000)
    assert all(v.shape == (16000, 2) for v in out.values())
