"""``python -m xumx.export``: the ONNX file runs in a fresh onnxruntime session (a process that
imports nothing of xumx) and gives the NNabla graph's masks."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import separator_of, tiny_config
from xumx.separator import Separator
from xumx.weights import save_model
from seeded import random_arrays

#: what a user of the file writes: onnxruntime and numpy only
RUN = """
import json, sys
import numpy as np
import pytest
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
mag = np.load(sys.argv[2])                     # (frames, batch, channels, bins)
masks = session.run(["masks"], {"magnitude": mag})[0]
np.save(sys.argv[3], masks)
print(json.dumps({"sources": json.loads(meta["xumx.sources"]),
                  "xumx_loaded": any(m.startswith("xumx") for m in sys.modules)}))
"""


@pytest.mark.nnabla
def test_export_runs_in_a_fresh_session(tmp_path, rng):
    cfg = tiny_config(sources=("bass", "vocals", "other"))
    arrays = random_arrays(cfg, seed=8)
    model, out = str(tmp_path / "m.h5"), str(tmp_path / "m.onnx")
    save_model(model, cfg, arrays)
    done = subprocess.run([sys.executable, "-m", "xumx.export", "--model", model, "--out", out],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "magnitude float32 (frames, batch, 2, 129)" in done.stdout
    import onnx
    onnx.checker.check_model(out)
    mag = (3 * np.abs(rng.standard_normal((50, 2, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)
    np.save(tmp_path / "mag.npy", mag)
    ran = subprocess.run([sys.executable, "-c", RUN, out, str(tmp_path / "mag.npy"),
                          str(tmp_path / "masks.npy")], capture_output=True, text=True,
                         cwd=str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    info = json.loads(ran.stdout)
    assert info == {"sources": list(cfg.sources), "xumx_loaded": False}
    masks = np.load(tmp_path / "masks.npy")
    assert masks.shape == (3, 50, 2, cfg.nb_channels, cfg.nb_bins)
    ref = separator_of(cfg, arrays, "nnabla")
    for b in range(2):
        r = ref.masks(mag[:, b])
        err = np.sum((masks[:, :, b] - r).astype(np.float64) ** 2)
        assert 10 * np.log10(np.sum(r.astype(np.float64) ** 2) / err) >= 100


def test_export_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    for args in (["--model", str(bad), "--out", str(tmp_path / "x.onnx")],
                 ["--model", str(tmp_path), "--umx-infer", "--out", str(tmp_path / "x.onnx")]):
        done = subprocess.run([sys.executable, "-m", "xumx.export", *args],
                              capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("xumx.export: error: cannot load the model: ")
    assert not os.path.exists(tmp_path / "x.onnx")


def test_readme_onnxruntime_example(tmp_path):
    """The README's example, run as written on a full-size file, gives the engine's masks;
    the STFT it computes is the file's own (here 2048/512, not x-umx.h5's 4096/1024, so a
    hard-coded size fails); docs/onnx-engine.md's continuation gives Separator's stems."""
    import soundfile as sf
    from conftest import readme_section, sine_mix
    from xumx.config import ModelConfig
    from xumx.onnxnet import export
    cfg = ModelConfig(nfft=2048, nhop=512)
    model = str(tmp_path / "x-umx.h5")
    save_model(model, cfg, random_arrays(cfg, seed=3))
    from xumx.modelfiles import ModelFiles
    export(ModelFiles(model), str(tmp_path / "x-umx.onnx"))
    audio = sine_mix(30000, cfg.sample_rate)
    sf.write(tmp_path / "song.wav", audio, cfg.sample_rate, subtype="FLOAT")
    code = readme_section("Exporting to ONNX").split("```python\n")[1].split("```")[0]
    code += readme_section("Using the exported file", "docs/onnx-engine.md").split(
        "```python\n")[1].split("```")[0]
    code += ("\nimport numpy\nnumpy.save('masks.npy', masks)\n"
             "numpy.savez('stems.npz', **stems)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    sep = Separator.load(model)
    ref = sep.masks(sep.model_input(sep.spectrogram(audio)))
    masks = np.load(tmp_path / "masks.npy")
    assert masks.shape == ref.shape
    err = np.sum((masks - ref).astype(np.float64) ** 2)
    assert 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / err) >= 100
    stems = np.load(tmp_path / "stems.npz")
    want = sep.with_settings(chunk_dur=0).separate(audio, rate=cfg.sample_rate)
    assert sorted(stems.files) == sorted(want)
    for name, y in want.items():
        assert stems[name].shape == y.shape
        err = np.sum((stems[name] - y).astype(np.float64) ** 2)
        assert 10 * np.log10(np.sum(y.astype(np.float64) ** 2) / err) >= 60, name


@pytest.mark.nnabla
def test_export_of_a_umx_folder(tmp_path, rng):
    """--umx-infer: independent Open-Unmix networks (no crossing) from <target>.h5 files."""
    from conftest import write_umx_folder
    cfg = tiny_config(crossing=False, sources=("bass", "vocals"))
    arrays = random_arrays(cfg, seed=6)
    folder = write_umx_folder(tmp_path / "umx", cfg, arrays)
    out = str(tmp_path / "umx.onnx")
    done = subprocess.run([sys.executable, "-m", "xumx.export", "--model", str(folder),
                           "--umx-infer", "--targets", *cfg.sources, "--out", out],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from xumx.engine import OnnxNet
    net = OnnxNet(out)
    assert net.cfg == cfg
    mag = (3 * np.abs(rng.standard_normal((30, cfg.nb_channels, cfg.nb_bins)))).astype(np.float32)
    ref = separator_of(cfg, arrays, "nnabla").masks(mag)
    err = np.sum((net.masks(mag) - ref).astype(np.float64) ** 2)
    assert 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / err) >= 100
