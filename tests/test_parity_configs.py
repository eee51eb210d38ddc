"""Parity with the published X-UMX code beyond the default configuration (tests/data/parity,
README section 'Extended fixtures'; made by its make_fixtures.py, which the tests never import).

- official_configs.npz: what the published ``separate(audio, args)`` returned for the first
  second of input.wav in six settings: X-UMX with niter 0, niter 2 and softmask + residual
  model (alpha 0.5); UMX mode (``umx_infer``, a folder of per-target Open-Unmix files) with
  four, two (reordered, softmask) and one target. Ours through ``xumx.test.separate_args_dict``.
- official_long.npz: a 40 s song (long_input.flac, longer than one 30 s chunk) separated whole
  by the published code, against ``python -m xumx.test --chunk-dur 0``, on eight windows.

Each stem must agree to at least 100 dB signal-to-error ratio (the project's threshold for its
own engine). None of this needs nnabla.
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import PARITY, params_digest, read_h5, write_umx_folder
from xumx.config import ModelConfig
from xumx.test import separate_args_dict
from seeded import random_arrays

MIN_DB = 100.0
CONFIG_NAMES = ["niter0", "niter2", "softmask_residual", "umx", "umx_pair", "umx_vocals"]
SOURCES = ["bass", "drums", "vocals", "other"]
ARG_KEYS = ("umx_infer", "targets", "softmask", "alpha", "residual_model", "niter")
REGENERATE = ("regenerate it with tests/data/parity/make_fixtures.py, run as its header says "
              "(the published code, commit cfe96df, in .venv with nnabla)")


def ser_db(ref, est):
    ref = ref.astype(np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((est.astype(np.float64) - ref) ** 2))


def fixture_path(name):
    """The path of a fixture file; a test that needs an absent one fails and says why."""
    path = os.path.join(PARITY, name)
    if not os.path.isfile(path):
        pytest.fail(f"parity fixture {path} is absent: {REGENERATE}", pytrace=False)
    return path


def load_fixture(name):
    """(arrays, meta) of a fixture npz."""
    data = np.load(fixture_path(name))
    return data, json.loads(str(data["meta"]))


@pytest.fixture(scope="module")
def configs():
    return load_fixture("official_configs.npz")


@pytest.fixture(scope="module")
def short_input(configs):
    audio, rate = sf.read(os.path.join(PARITY, "input.wav"), dtype="float32")
    assert rate == 44100
    return np.ascontiguousarray(audio[:configs[1]["input_samples"]])


@pytest.fixture(scope="session")
def umx_folder(tmp_path_factory):
    """The UMX fixture's folder: <target>.h5 for the four sources, seed 1 (142 MB in all)."""
    cfg = ModelConfig()
    return write_umx_folder(tmp_path_factory.mktemp("umx") / "seed1", cfg,
                            random_arrays(cfg, seed=1))


def test_inputs_and_parameters_are_the_fixtures(configs, short_input, parity_model, umx_folder):
    """The audio and the parameter files given to our code are those the fixture was made
    from (SHA-256 recorded by make_fixtures.py), and every configuration is there."""
    data, meta = configs
    assert sorted(meta["configs"]) == sorted(CONFIG_NAMES)
    assert hashlib.sha256(short_input.tobytes()).hexdigest() == meta["input_sha256"]
    digests = meta["params_sha256"]
    assert params_digest(read_h5(parity_model)) == digests["xumx"]
    for t in SOURCES:
        assert params_digest(read_h5(os.path.join(umx_folder, f"{t}.h5"))) == digests[f"umx/{t}.h5"], t


def ours(meta, short_input, parity_model, umx_folder, **change):
    c = dict(meta, **change)
    args = {k: c[k] for k in ARG_KEYS}
    args["model"] = umx_folder if c["umx_infer"] else parity_model
    return separate_args_dict(short_input, args)


def compare(name, data, out, rename, length):
    """{stem: dB} of every stem the fixture has for ``name`` (the published stem's name mapped
    through ``rename`` to ours); ours must have exactly those stems, at full length."""
    keys = [k.split("/", 1)[1] for k in data.files if k.startswith(name + "/")]
    assert keys, f"official_configs.npz has no arrays for '{name}': {REGENERATE}"
    assert sorted(out) == sorted(rename.get(k, k) for k in keys)
    dbs = {}
    for key in keys:
        ref, mine = data[f"{name}/{key}"], out[rename.get(key, key)]
        assert mine.shape == (length, 2) and ref.shape == (length - length % 1024, 2)
        dbs[key] = ser_db(ref, mine[:len(ref)])
    return dbs


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_parity(configs, short_input, parity_model, umx_folder, name):
    data, meta = configs
    c = meta["configs"][name]
    out = ours(c, short_input, parity_model, umx_folder)
    dbs = compare(name, data, out, c.get("rename", {}), len(short_input))
    assert min(dbs.values()) >= MIN_DB, f"{name}: " + ", ".join(f"{k} {v:.1f} dB" for k, v in dbs.items())


def test_one_target_without_residual_model(configs, short_input, parity_model, umx_folder):
    """UMX with targets ['vocals'] and residual_model off: the published code filters the one
    source against the residual whether it is asked for or not, so the vocals are those of the
    fixture 'umx_vocals' (made with it on); only the stems returned differ."""
    data, meta = configs
    out = ours(meta["configs"]["umx_vocals"], short_input, parity_model, umx_folder,
               residual_model=False)
    ref = data["umx_vocals/vocals"]
    assert list(out) == ["vocals"]
    assert ser_db(ref, out["vocals"][:len(ref)]) >= MIN_DB


@pytest.fixture(scope="module")
def long_fixture():
    return load_fixture("official_long.npz")


def separate_file(model, song, out_dir, *flags):
    """{target: (T, 2) float32} of ``python -m xumx.test SONG`` with float WAV stems."""
    subprocess.run([sys.executable, "-m", "xumx.test", song, "--model", model, "--out-dir",
                    str(out_dir), "--bits", "float", "-q", *flags], check=True)
    folder = os.path.join(str(out_dir), os.path.splitext(os.path.basename(song))[0])
    out = {}
    for s in SOURCES:
        out[s], rate = sf.read(os.path.join(folder, f"{s}.wav"), dtype="float32")
        assert rate == 44100
    return out


def window_dbs(data, out, starts, width):
    """{source: dB} over the fixture's windows."""
    return {s: ser_db(data[s], np.stack([out[s][i:i + width] for i in starts])) for s in SOURCES}


def test_long_song_parity(long_fixture, parity_model, tmp_path):
    """The whole song in one piece (--chunk-dur 0) is what the published code returns for
    the whole file (its test() without --chunk-dur), on every stored window."""
    data, meta = long_fixture
    song = fixture_path("long_input.flac")
    audio, _ = sf.read(song, dtype="float32")
    assert hashlib.sha256(audio.tobytes()).hexdigest() == meta["input_sha256"]
    assert meta["params_sha256"] == params_digest(read_h5(parity_model))
    out = separate_file(parity_model, song, tmp_path, "--chunk-dur", "0")
    assert all(v.shape == audio.shape for v in out.values())
    starts = [int(i) for i in data["starts"]]
    assert max(starts) + meta["window"] == meta["length"] == len(audio) - len(audio) % 1024
    dbs = window_dbs(data, out, starts, meta["window"])
    assert min(dbs.values()) >= MIN_DB, ", ".join(f"{k} {v:.1f} dB" for k, v in dbs.items())
