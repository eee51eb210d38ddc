"""Parameter files: round trip, shape inference, the sidecar, UMX folders, bad files."""
import json
import os

import h5py
import numpy as np
import pytest

from conftest import separator_of, tiny_config
from xumx.modelfiles import ModelFiles
from xumx.params import parameter_spec
from xumx.separator import Separator
from xumx.weights import WeightsError, load_xumx, save_model, sidecar_path, write_h5
from seeded import random_arrays


def test_round_trip_infers_every_dimension(tmp_path):
    cfg = tiny_config(sources=("drums", "vocals", "other"), nb_channels=1, hidden_size=12,
                      nb_layers=3, unidirectional=True, nhop=32, sample_rate=16000)
    arrays = random_arrays(cfg, seed=5)
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, arrays)
    loaded_cfg, loaded = load_xumx(path)
    assert loaded_cfg == cfg
    for name in arrays:
        np.testing.assert_array_equal(loaded[name], arrays[name])
    # without the sidecar the shapes still give everything but hop and rate
    os.remove(sidecar_path(path))
    bare, _ = load_xumx(path)
    assert (bare.sources, bare.nb_channels, bare.hidden_size, bare.nb_layers, bare.unidirectional,
            bare.max_bin, bare.nfft) == (cfg.sources, 1, 12, 3, True, cfg.max_bin, cfg.nfft)
    assert (bare.nhop, bare.sample_rate) == (cfg.nfft // 4, 44100)


@pytest.mark.nnabla
def test_file_is_nnabla_compatible(tmp_path):
    """nnabla's own loader reads our files with the published names, order and need_grad."""
    import nnabla as nn
    cfg = tiny_config()
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, random_arrays(cfg))
    nn.load_parameters(path)
    params = nn.get_parameters(grad_only=False)
    assert list(params) == [n for n, _, _ in parameter_spec(cfg)]
    assert {n for n, v in nn.get_parameters(grad_only=True).items()} == \
        {n for n, _, g in parameter_spec(cfg) if g}


def test_save_load_forward_is_identical(tmp_path, rng):
    cfg = tiny_config()
    arrays = random_arrays(cfg, seed=7)
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, arrays)
    mag = np.abs(rng.standard_normal((5, 2, cfg.nb_bins))).astype(np.float32)
    np.testing.assert_array_equal(separator_of(cfg, arrays).masks(mag),
                                  Separator.load(path).masks(mag))


def test_legacy_stft_keys_are_ignored(tmp_path):
    cfg = tiny_config()
    arrays = random_arrays(cfg)
    extra = {"conv_r": np.zeros((129, 1, 256)), "conv_cos": np.zeros((129, 1, 256)), **arrays}
    path = str(tmp_path / "old.h5")
    write_h5(path, extra)
    got_cfg, got = load_xumx(path)
    assert got_cfg.sources == cfg.sources and "conv_r" not in got


def _bad_file(tmp_path, cfg, mutate):
    arrays = random_arrays(cfg)
    mutate(arrays)
    path = str(tmp_path / "bad.h5")
    write_h5(path, arrays)
    return path


def test_missing_parameter_is_named(tmp_path):
    cfg = tiny_config()
    path = _bad_file(tmp_path, cfg, lambda a: a.pop("fc2_vocals/bn/gamma"))
    with pytest.raises(WeightsError, match=r"missing parameter 'fc2_vocals/bn/gamma'.*\(1, 1, 16\)"):
        load_xumx(path)


def test_wrong_shape_names_both_shapes(tmp_path):
    cfg = tiny_config()
    path = _bad_file(tmp_path, cfg, lambda a: a.update({"fc3_bass/affine/W": np.zeros((16, 100))}))
    with pytest.raises(WeightsError, match=r"fc3_bass/affine/W.*\(16, 100\).*expected \(16, 258\)"):
        load_xumx(path)


def test_nan_parameter_is_reported(tmp_path):
    cfg = tiny_config()
    path = _bad_file(tmp_path, cfg, lambda a: a["fc1_drums/bn/var"].__setitem__((0, 0, 3), np.nan))
    with pytest.raises(WeightsError, match="fc1_drums/bn/var.*NaN"):
        load_xumx(path)


@pytest.mark.parametrize("content,match", [(b"", "not an HDF5"), (b"hello world\n" * 20, "not an HDF5")])
def test_not_an_h5_file(tmp_path, content, match):
    path = tmp_path / "x.h5"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        load_xumx(str(path))


def test_truncated_file(tmp_path):
    cfg = tiny_config()
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, random_arrays(cfg))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(WeightsError, match="m.h5"):
        load_xumx(path)


def test_foreign_h5_and_missing_file(tmp_path):
    path = str(tmp_path / "foreign.h5")
    with h5py.File(path, "w") as f:
        f["conv1/W"] = np.zeros(3)
    with pytest.raises(WeightsError, match="not an X-UMX parameter file"):
        load_xumx(path)
    with pytest.raises(WeightsError, match="no such file"):
        load_xumx(str(tmp_path / "absent.h5"))


def test_bad_sidecar(tmp_path):
    cfg = tiny_config()
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, random_arrays(cfg))
    with open(sidecar_path(path), "w") as f:
        f.write("{not json")
    with pytest.raises(WeightsError, match="sidecar"):
        load_xumx(path)


@pytest.mark.parametrize("scoped", [True, False])
def test_umx_folder_loads_as_uncrossed_model(tmp_path, scoped, rng):
    """UMX files <target>.h5 with names like vocals/fc1/affine/W (or unscoped)."""
    cfg = tiny_config(sources=("vocals", "drums"))
    arrays = random_arrays(cfg, seed=9)
    for t in cfg.sources:
        own = {}
        for name, _, _ in parameter_spec(cfg):
            head, _, rest = name.partition("/")
            if not head.endswith("_" + t):
                continue
            base = head[:-len(t) - 1]
            umx = base + ("/" + rest if rest else "")
            own[(f"{t}/" if scoped else "") + umx] = arrays[name]
        write_h5(str(tmp_path / f"{t}.h5"), own)
    got_cfg, got = ModelFiles.resolve(str(tmp_path), True, cfg.sources).read()
    assert got_cfg.crossing is False and got_cfg.sources == cfg.sources
    mag = np.abs(rng.standard_normal((4, 2, cfg.nb_bins))).astype(np.float32)
    uncrossed = tiny_config(sources=("vocals", "drums"), crossing=False, nhop=cfg.nfft // 4)
    np.testing.assert_array_equal(separator_of(got_cfg, got).masks(mag),
                                  separator_of(uncrossed, arrays).masks(mag))
    with pytest.raises(WeightsError, match="bass.h5"):
        ModelFiles.resolve(str(tmp_path), True, ("bass",)).read()


def test_sidecar_is_json_config(tmp_path):
    cfg = tiny_config()
    path = str(tmp_path / "m.h5")
    save_model(path, cfg, random_arrays(cfg))
    meta = json.load(open(sidecar_path(path)))
    assert meta["nhop"] == 64 and meta["sample_rate"] == 8000 and meta["sources"] == list(cfg.sources)
