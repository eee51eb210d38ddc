#!/usr/bin/env python3
"""Regenerate the extended parity fixtures of this folder by running the published X-UMX code.

This script made ``official_configs.npz``, ``long_input.flac`` and ``official_long.npz`` (see
README.md). The tests read those files; they never import or run this script.

How it was run (the committed files came from exactly this):

 1. The published code: sony/ai-research-code, commit cfe96df, folder ``x-umx``::

        git clone https://github.com/sony/ai-research-code /tmp/arc
        mkdir -p /tmp/pub && git -C /tmp/arc archive cfe96df x-umx | tar -x -C /tmp/pub

 2. From the root of an xumx checkout after ``make setup``, in its ``.venv`` (Python 3.10.13,
    nnabla 1.39.0 on the CPU, norbert 0.2.1, numpy 1.26.4, scipy 1.15.3, soundfile; the exact
    versions are stored in each npz's ``meta``)::

        .venv/bin/python tests/data/parity/make_fixtures.py /tmp/pub/x-umx

    It writes into tests/data/parity (``--out DIR`` elsewhere) and takes five to seven minutes
    on two cores, most of it the published code on the 40 s song (about 4 GB of memory).

What runs: the published ``test.separate(audio, args)``, called directly with an argparse
Namespace (as its ``test()`` does for each chunk) after ``nn.set_auto_forward(True)`` on the CPU
context. Its ``test.py`` also imports resampy and pydub, and its ``utils.py`` sklearn, which
``separate()`` never uses: where they are not installed, empty modules stand in for them.
Before anything is written, the script checks that this setup reproduces the original fixture
(``official_seed0.npz``, config ``default``) to float32 rounding.

Parameters: X-UMX from ``random_arrays`` of tests/seeded.py (ModelConfig(), seed 0: the original
fixture's, written by :func:`xumx.weights.save_model`); UMX (per-target Open-Unmix files) from
the same generator with seed 1, split into ``<target>.h5`` by the tests' ``write_umx_folder``.
"""
import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import pathlib
import sys
import tempfile
import threading
import types

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..")))   # tests/: conftest
from conftest import params_digest, read_h5, write_umx_folder  # noqa: E402
from xumx.config import ModelConfig  # noqa: E402
from xumx.synth import song_stems  # noqa: E402
from seeded import random_arrays  # noqa: E402
from xumx.weights import save_model  # noqa: E402

SOURCES = ["bass", "drums", "vocals", "other"]
XUMX_SEED, UMX_SEED = 0, 1
#: The short configurations run on the first SHORT_LEN samples of input.wav. ``rename``: a
#: stem the published code names otherwise than xumx (its single-target residual).
SHORT_LEN = 44100
CONFIGS = {
    "niter0": dict(umx_infer=False, targets=SOURCES, softmask=False, alpha=1.0, niter=0,
                   residual_model=False),
    "niter2": dict(umx_infer=False, targets=SOURCES, softmask=False, alpha=1.0, niter=2,
                   residual_model=False),
    "softmask_residual": dict(umx_infer=False, targets=SOURCES, softmask=True, alpha=0.5,
                              niter=1, residual_model=True),
    "umx": dict(umx_infer=True, targets=SOURCES, softmask=False, alpha=1.0, niter=1,
                residual_model=False),
    "umx_pair": dict(umx_infer=True, targets=["vocals", "drums"], softmask=True, alpha=1.5,
                     niter=1, residual_model=False),
    "umx_vocals": dict(umx_infer=True, targets=["vocals"], softmask=False, alpha=1.0, niter=1,
                       residual_model=True, rename={"accompaniment": "residual"}),
}
#: The long song: xumx.synth.song_stems(RandomState(LONG_SEED), LONG_DUR s), summed, peak 0.9,
#: 16-bit FLAC; separated whole by the published code (its test() with chunk_dur None), the
#: default settings. Stored: WINDOW samples of each stem from each of the window starts.
LONG_SEED, LONG_DUR, RATE = 7, 40.0, 44100
WINDOW = 22050
LONG_CONFIG = dict(umx_infer=False, targets=SOURCES, softmask=False, alpha=1.0, niter=1,
                   residual_model=False)


def window_starts(length):
    """Starts of the stored windows of the long song (``length``: the published stems' length):
    0, 5.5 s, 11 s, 16.5 s, 22 s, 29.25 s (where 30 s chunks cross-fade with 1 s overlap),
    34.5 s, and the last WINDOW samples."""
    return [0, 242550, 485100, 727650, 970200, 1289925, 1521450, length - WINDOW]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_published(folder):
    """The published test.py as a module (its unused imports stubbed where missing)."""
    for name in ("resampy", "pydub", "pydub.utils", "sklearn", "sklearn.preprocessing"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["pydub"].__dict__.setdefault("AudioSegment", None)
    sys.modules["pydub.utils"].__dict__.setdefault("mediainfo", None)
    sys.path.insert(0, folder)
    return importlib.import_module("test")


def run_big_stack(fn, *args):
    """fn(*args) on a thread with a 1 GiB stack (nnabla's CPU LSTM recurses once per frame)."""
    out, old = {}, threading.stack_size(1 << 30)
    try:
        t = threading.Thread(target=lambda: out.setdefault("r", fn(*args)))
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    return out["r"]


def published(pub, audio, model, cfg):
    import nnabla as nn
    nn.clear_parameters()
    ns = argparse.Namespace(model=model, **{k: v for k, v in cfg.items() if k != "rename"})
    est = run_big_stack(pub.separate, audio, ns)
    return {k: v.astype(np.float32) for k, v in est.items()}


def versions(pub_folder):
    out = {"python": sys.version.split()[0], "published_commit": "cfe96df"}
    for dist in ("nnabla", "norbert", "numpy", "scipy", "soundfile", "h5py"):
        out[dist] = importlib.metadata.version(dist)
    for name in ("test.py", "model.py", "utils.py"):
        with open(os.path.join(pub_folder, name), "rb") as f:
            out[f"sha256 {name}"] = sha256(f.read())
    return out


def long_input(path):
    stems = song_stems(np.random.RandomState(LONG_SEED), LONG_DUR, RATE)
    mix = sum(stems.values())
    ints = np.round(mix * (0.9 / np.max(np.abs(mix))) * 32767).astype(np.int16)
    sf.write(path, ints, RATE, subtype="PCM_16", format="FLAC")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("published", help="the published x-umx folder (commit cfe96df)")
    p.add_argument("--out", default=HERE, help="where to write (default: this folder)")
    a = p.parse_args(argv)
    import nnabla as nn
    from nnabla.ext_utils import get_extension_context
    pub = load_published(os.path.abspath(a.published))
    nn.set_default_context(get_extension_context("cpu"))
    nn.set_auto_forward(True)
    env = versions(a.published)
    print(json.dumps(env, indent=1), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ModelConfig()
        xumx_model = os.path.join(tmp, "seed0.h5")
        save_model(xumx_model, cfg, random_arrays(cfg, XUMX_SEED))
        umx_model = write_umx_folder(pathlib.Path(tmp) / "umx", cfg,
                                     random_arrays(cfg, UMX_SEED))
        digests = {"xumx": params_digest(read_h5(xumx_model)),
                   **{f"umx/{t}.h5": params_digest(read_h5(os.path.join(umx_model, f"{t}.h5")))
                      for t in SOURCES}}
        print(json.dumps(digests, indent=1), flush=True)

        audio, rate = sf.read(os.path.join(HERE, "input.wav"), dtype="float32")
        assert rate == RATE
        ref = np.load(os.path.join(HERE, "official_seed0.npz"))
        got = published(pub, audio, xumx_model, dict(LONG_CONFIG))
        worst = max(float(np.max(np.abs(got[s] - ref[f"default/{s}"]))) for s in SOURCES)
        print(f"original fixture 'default' reproduced: max |diff| {worst:.2e}", flush=True)
        assert worst < 1e-7, "this setup does not reproduce official_seed0.npz"

        short = np.ascontiguousarray(audio[:SHORT_LEN])
        arrays, meta = {}, {}
        for name, c in CONFIGS.items():
            model = umx_model if c["umx_infer"] else xumx_model
            for stem, value in published(pub, short, model, c).items():
                arrays[f"{name}/{stem}"] = value
            meta[name] = dict(c, seed=UMX_SEED if c["umx_infer"] else XUMX_SEED)
            print(name, "done", flush=True)
        meta = {"configs": meta, "input": "input.wav", "input_samples": SHORT_LEN,
                "input_sha256": sha256(short.tobytes()), "params_sha256": digests,
                "versions": env}
        np.savez_compressed(os.path.join(a.out, "official_configs.npz"),
                            meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)

        flac = os.path.join(a.out, "long_input.flac")
        long_input(flac)
        song, _ = sf.read(flac, dtype="float32")
        est = published(pub, song, xumx_model, LONG_CONFIG)
        length = len(next(iter(est.values())))
        starts = window_starts(length)
        windows = {s: np.stack([est[s][i:i + WINDOW] for i in starts]) for s in SOURCES}
        meta = {"config": dict(LONG_CONFIG, seed=XUMX_SEED), "length": length,
                "input": f"long_input.flac: xumx.synth.song_stems(RandomState({LONG_SEED}), "
                         f"{LONG_DUR}) summed, peak 0.9, 16-bit",
                "input_sha256": sha256(song.tobytes()), "window": WINDOW,
                "params_sha256": digests["xumx"], "versions": env}
        np.savez_compressed(os.path.join(a.out, "official_long.npz"),
                            meta=np.array(json.dumps(meta, sort_keys=True)),
                            starts=np.array(starts, np.int64), **windows)
    print("written to", a.out)


if __name__ == "__main__":
    main()
