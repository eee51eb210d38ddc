"""The network: shapes, the parameter-name contract, the crossings."""
import numpy as np
import pytest

from conftest import tiny_config
from xumx.config import ModelConfig
from xumx.params import parameter_spec
from conftest import separator_of
from seeded import random_arrays


def test_published_parameter_contract():
    """Names, shapes and count of the published x-umx.h5 (tests/data/parity/README.md)."""
    spec = parameter_spec(ModelConfig())
    shapes = {name: shape for name, shape, _ in spec}
    assert len(spec) == 88  # 22 arrays per source
    assert shapes["input_mean_bass"] == (1487,) and shapes["output_mean_other"] == (2049,)
    assert shapes["fc1_vocals/affine/W"] == (2974, 512)
    assert shapes["fc2_drums/affine/W"] == (1024, 512)
    assert shapes["fc3_bass/affine/W"] == (512, 4098)
    assert shapes["fc3_bass/bn/var"] == (1, 1, 4098)
    assert shapes["lstm_other/lstm/weight_l0"] == (2, 4, 256, 768)
    assert shapes["lstm_other/lstm/weight"] == (2, 2, 4, 256, 768)
    assert shapes["lstm_other/lstm/bias"] == (3, 2, 4, 256)
    trainable = sum(int(np.prod(s)) for _, s, g in spec if g)
    assert trainable == 35_548_816
    assert sum(int(np.prod(s)) for _, s, _ in spec) == 35_589_792
    # creation order: the four vectors of each kind, then fc1, lstm, fc2, fc3 per source
    assert [n for n, _, _ in spec[:4]] == [f"input_mean_{s}" for s in ModelConfig().sources]
    assert not [n for n, _, g in spec if n.endswith(("/bn/mean", "/bn/var")) and g]


@pytest.mark.nnabla
def test_graph_creates_exactly_the_spec():
    cfg = tiny_config()
    import nnabla as nn
    from xumx.training.model import OpenUnmixCrossNet
    model = OpenUnmixCrossNet(cfg)
    with nn.auto_forward():
        model.masks(nn.Variable.from_numpy_array(np.ones((5, 1, 2, cfg.nb_bins), np.float32)))
    created = {k: v.shape for k, v in model.get_parameters().items()}
    assert created == {n: s for n, s, _ in parameter_spec(cfg)}
    assert list(created) == [n for n, _, _ in parameter_spec(cfg)]
    assert not nn.get_parameters()  # nothing leaked into nnabla's global registry


@pytest.mark.parametrize("nb_sources", [1, 2, 3, 4])
@pytest.mark.parametrize("nb_channels", [1, 2])
def test_mask_shapes(nb_sources, nb_channels):
    cfg = tiny_config(sources=("a", "b", "c", "d")[:nb_sources], nb_channels=nb_channels)
    sep = separator_of(cfg, random_arrays(cfg))
    mag = np.abs(np.random.RandomState(0).standard_normal((7, nb_channels, cfg.nb_bins))).astype(np.float32)
    masks = sep.masks(mag)
    assert masks.shape == (nb_sources, 7, nb_channels, cfg.nb_bins)
    assert masks.min() >= 0 and np.isfinite(masks).all()


@pytest.mark.parametrize("kw", [dict(unidirectional=True), dict(nb_layers=1), dict(nb_layers=3),
                                dict(hidden_size=8, nfft=128, nhop=32, max_bin=40)])
def test_other_sizes_build_and_run(kw):
    cfg = tiny_config(**kw)
    spec = {n: s for n, s, _ in parameter_spec(cfg)}
    if cfg.unidirectional:
        assert spec["lstm_bass/lstm/weight_l0"][0] == 1
    masks = separator_of(cfg, random_arrays(cfg)).masks(np.ones((4, 2, cfg.nb_bins), np.float32))
    assert masks.shape == (4, 4, 2, cfg.nb_bins)


def _same_for_every_source(cfg, arrays):
    """Copy the first source's parameters to every source."""
    s0 = cfg.sources[0]
    out = dict(arrays)
    for name in arrays:
        for s in cfg.sources[1:]:
            twin = name.replace(f"_{s}", f"_{s0}", 1)
            if twin != name:
                out[name] = arrays[twin]
    return out


def test_identical_sources_give_identical_masks():
    cfg = tiny_config()
    arrays = _same_for_every_source(cfg, random_arrays(cfg, seed=3))
    mag = np.abs(np.random.RandomState(1).standard_normal((6, 2, cfg.nb_bins))).astype(np.float32)
    masks = separator_of(cfg, arrays).masks(mag)
    for m in masks[1:]:
        np.testing.assert_array_equal(m, masks[0])
    assert np.ptp(masks[0]) > 0


@pytest.mark.parametrize("crossing", [True, False])
def test_crossing_couples_the_sources(crossing):
    """With the crossings, one source's encoder changes every source's mask; without, only its own."""
    cfg = tiny_config(crossing=crossing)
    arrays = random_arrays(cfg, seed=4)
    mag = np.abs(np.random.RandomState(2).standard_normal((6, 2, cfg.nb_bins))).astype(np.float32)
    before = separator_of(cfg, arrays).masks(mag)
    changed = dict(arrays)
    changed["fc1_bass/affine/W"] = arrays["fc1_bass/affine/W"] * -1.5
    after = separator_of(cfg, changed).masks(mag)
    assert not np.allclose(before[0], after[0])
    others_changed = [not np.allclose(b, a) for b, a in zip(before[1:], after[1:])]
    assert all(others_changed) if crossing else not any(others_changed)
