"""Training: one epoch writes every output, resume equals an uninterrupted run, CLI errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from xumx import files
from xumx.config import TrainConfig
from xumx.parsing import parse
from xumx.modelfiles import BEST_NAME, CHECKPOINT_NAME
from xumx.training.trainer import train
from xumx.training.checkpoints import read_checkpoint

TINY_FLAGS = ["--hidden-size", "16", "--nb-layers", "1", "--nfft", "256", "--nhop", "64",
              "--sample-rate", "8000", "--bandwidth", "3000", "--batch-size", "2",
              "--seq-dur", "0.25", "--samples-per-track", "2", "--valid-dur", "0.5"]


def tiny_run(root, output, epochs, resume=None, nb_layers=1, **kw):
    cfg = TrainConfig(root=root, is_wav=True, output=str(output), epochs=epochs, batch_size=2,
                      seq_dur=0.25, samples_per_track=1, valid_dur=0.5, resume=resume, seed=7, **kw)
    return train(tiny_config(nb_layers=nb_layers), cfg, progress=False)


def test_flags_reach_the_configs():
    model, cfg = parse("train", TINY_FLAGS + ["--unidirectional", "--sources", "a", "b",
                                             "--valid_dur", "3", "--mcoef", "2"])
    assert (model.hidden_size, model.nb_layers, model.nfft, model.nhop, model.sample_rate) == (16, 1, 256, 64, 8000)
    assert model.unidirectional and model.sources == ("a", "b") and model.max_bin == 97
    assert cfg.valid_dur == 3.0 and cfg.mcoef == 2.0 and cfg.output == "x-umx"
    _, d = parse("train", [])
    assert (d.epochs, d.batch_size, d.patience, d.seq_dur, d.lr, d.lr_decay_patience, d.lr_decay_gamma,
            d.weight_decay, d.seed, d.valid_dur, d.samples_per_track, d.source_augmentations,
            d.dropout) == \
        (1000, 16, 1000, 6.0, 0.001, 80, 0.3, 0.00001, 42, 100.0, 64, ("gain", "channelswap"), 0.4)


@pytest.mark.nnabla
def test_one_epoch_writes_every_output_and_best_loads(tiny_musdb, tmp_path):
    out = tmp_path / "run"
    result = tiny_run(tiny_musdb, out, epochs=1)
    for name in (BEST_NAME, "best_xumx.json", CHECKPOINT_NAME, "history.json", "history.csv",
                 "training.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in os.listdir(out) if p.endswith(files.SUFFIX)]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"]) and history[0]["best"]
    assert result["history"][0]["valid_loss"] == history[0]["valid_loss"]
    assert read_checkpoint(str(out / BEST_NAME)) is None            # weights, not a checkpoint
    params, solver, meta = read_checkpoint(str(out / CHECKPOINT_NAME))
    assert meta["epoch"] == 1 and solver and set(params) >= {"fc1_bass/affine/W", "input_mean_other"}
    from xumx.separator import Separator
    sep = Separator.load(str(out / BEST_NAME))
    assert sep.cfg == tiny_config(nb_layers=1)
    audio = np.random.RandomState(0).randn(2000, 2).astype(np.float32) * 0.1
    est = sep.separate(audio)
    assert set(est) == set(sep.cfg.sources) and est["bass"].shape == audio.shape


@pytest.mark.nnabla
def test_nnabla_cpu_lstm_says_once_that_it_applies_no_dropout(tiny_musdb, tmp_path, capsys, monkeypatch):
    from xumx.training import kernels
    tiny_run(tiny_musdb, tmp_path / "fast", 1, nb_layers=2)
    assert "applies no dropout" not in capsys.readouterr().err
    monkeypatch.setenv(kernels.ENV, "nnabla")
    tiny_run(tiny_musdb, tmp_path / "slow", 2, nb_layers=2)
    lines = [l for l in capsys.readouterr().err.splitlines() if "applies no dropout" in l]
    assert len(lines) == 1 and "dropout 0.4" in lines[0], lines
    tiny_run(tiny_musdb, tmp_path / "off", 1, nb_layers=2, dropout=0.0)
    assert "applies no dropout" not in capsys.readouterr().err


@pytest.mark.nnabla
def test_resume_continues_like_an_uninterrupted_run(tiny_musdb, tmp_path):
    """Two LSTM layers with the default dropout (0.4, recorded in config.yaml): its masks are a
    function of (seed, epoch, rank), so the resumed epoch 2 draws those of the full run."""
    tiny_run(tiny_musdb, tmp_path / "full", epochs=2, nb_layers=2)
    tiny_run(tiny_musdb, tmp_path / "part", epochs=1, nb_layers=2)
    assert "dropout: 0.4" in (tmp_path / "part" / "config.yaml").read_text()
    p1, _, meta1 = read_checkpoint(str(tmp_path / "part" / CHECKPOINT_NAME))
    result = tiny_run(tiny_musdb, tmp_path / "part", epochs=2, resume=str(tmp_path / "part"), nb_layers=2)
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    full, solver_full, meta_full = read_checkpoint(str(tmp_path / "full" / CHECKPOINT_NAME))
    part, solver_part, meta_part = read_checkpoint(str(tmp_path / "part" / CHECKPOINT_NAME))
    assert meta_part["epoch"] == meta_full["epoch"] == 2
    assert any(not np.array_equal(p1[k], part[k]) for k in part)     # epoch 2 did train
    for k in full:
        np.testing.assert_allclose(part[k], full[k], rtol=1e-5, atol=1e-7, err_msg=k)
    for k in solver_full:
        np.testing.assert_allclose(solver_part[k], solver_full[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert meta_part["history"][1]["valid_loss"] == pytest.approx(meta_full["history"][1]["valid_loss"], rel=1e-5)


@pytest.mark.nnabla
def test_cli_bad_flags_are_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, "-m", "xumx.train", "--root", str(tmp_path), "--nhop", "0"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("xumx.train: error: invalid model configuration")
    assert len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "xumx.train", "--root", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, timeout=120)
    lines = [l for l in p.stderr.splitlines() if "[nnabla]" not in l]
    assert p.returncode == 1 and len(lines) == 1 and "no 'train' folder" in lines[0]


@pytest.mark.nnabla
@pytest.mark.parametrize("fast", [True, False])
def test_loss_graph_equals_the_model_forward_and_the_losses(rng, fast):
    """The training graph's loss equals the one built on the model's own front end
    (``OpenUnmixCrossNet.__call__``), the masked ISTFT and the loss functions, with the fast CPU
    kernels and with nnabla's own functions."""
    import nnabla as nn
    from xumx.training import kernels
    from xumx.training.stft import graph_masked_istft, graph_spectrogram
    from xumx.training.losses import freq_combination_loss, multi_domain_loss, time_combination_loss
    from xumx.training.model import OpenUnmixCrossNet
    from xumx.training.trainer import build_loss_graph
    cfg = tiny_config(nb_layers=1)
    model = OpenUnmixCrossNet(cfg, rng=np.random.RandomState(0))
    x = (0.1 * rng.randn(2, 2, 1000)).astype(np.float32)
    y = (0.1 * rng.randn(2, 8, 1000)).astype(np.float32)
    with kernels.forced(fast):
        g = build_loss_graph(model, 2, 1000, 10.0, test=True)
        mixture, target = nn.Variable.from_numpy_array(x), nn.Variable.from_numpy_array(y)
        mix_spec, masks, (re, im) = model(mixture, test=True)
        est = [graph_masked_istft(m, re, im, 256, 64) for m in masks]
        tmag = graph_spectrogram(target, 256, 64, with_complex=False)
        ref = multi_domain_loss(time_combination_loss(mixture, est, target),
                                freq_combination_loss(mix_spec, masks, tmag), 10.0)
    g.feed(x, y)
    g.loss.forward()
    ref.forward()
    assert float(g.loss.d) == pytest.approx(float(ref.d), rel=1e-5)


# ------------------------------------------------------------------ recipes
def test_a_recipe_sets_fields_and_flags_override_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("hidden_size: 24\nnfft: 512\nlr: 1e-3\nsources: [a, b]\n"
                      "source_augmentations: []\nepochs: 7\n")
    model, cfg = parse("train", ["--config", str(recipe), "--epochs", "9", "--nhop", "128"])
    assert (model.hidden_size, model.nfft, model.nhop, model.sources) == (24, 512, 128, ("a", "b"))
    assert cfg.lr == 0.001 and cfg.epochs == 9 and cfg.source_augmentations == ()
    assert cfg.batch_size == TrainConfig().batch_size   # not in the recipe: the default


@pytest.mark.parametrize("text,words", [
    ("hidden_size: 24\nlearning_rate: 0.1\n", ["unknown key 'learning_rate'"]),
    ("epochs: many\n", ["epochs: expected int", "'many'"]),
    ("sources: bass\n", ["sources: expected a list"]),
    ("unidirectional: 1\n", ["unidirectional: expected true or false"]),
    ("- a list\n", ["a recipe is a mapping"]),
    ("epochs: [\n", ["not a YAML recipe"]),
])
def test_a_bad_recipe_is_one_line_naming_the_key(tmp_path, capsys, text, words):
    from xumx.train import main
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    assert main(["--config", str(recipe)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"xumx.train: error: {recipe}: "), err
    for w in words:
        assert w in err[0], err[0]


def test_the_shipped_recipes_parse(tmp_path):
    """recipes/x-umx-musdb18.yaml is the published configuration (reference section 4), by
    name or path; recipes/demo.yaml is the demo's."""
    from xumx.recipes import recipe_path
    published = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes",
                             "x-umx-musdb18.yaml")
    assert os.path.samefile(recipe_path("x-umx-musdb18"), published)
    model, cfg = parse("train", ["--config", published])
    assert model.max_bin == 1487 and (model.hidden_size, model.nfft, model.nhop) == (512, 4096, 1024)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_decay_patience, cfg.lr_decay_gamma,
            cfg.weight_decay, cfg.seq_dur, cfg.mcoef, cfg.samples_per_track, cfg.context,
            cfg.dropout) == \
        (1000, 16, 0.001, 80, 0.3, 0.00001, 6.0, 10.0, 64, "cudnn", 0.4)
    model, cfg = parse("train", ["--config", "demo"])
    assert (model.hidden_size, model.nfft, cfg.epochs, cfg.batch_size) == (64, 1024, 14, 8)


def test_resuming_a_folder_reads_its_config_yaml(tmp_path):
    """--resume DIR takes the run's recorded configuration and its folder; flags override."""
    from xumx.recipes import RUN_CONFIG, recipe_text
    run = tmp_path / "run"
    run.mkdir()
    model, cfg = parse("train", TINY_FLAGS + ["--root", "/data", "--epochs", "3", "--output", "x"])
    (run / RUN_CONFIG).write_text(recipe_text(model, cfg))
    model2, cfg2 = parse("train", ["--resume", str(run), "--epochs", "5"])
    assert model2 == model and cfg2.root == "/data" and cfg2.batch_size == 2
    assert cfg2.epochs == 5 and cfg2.output == str(run) and cfg2.resume == str(run)


@pytest.mark.nnabla
def test_resume_with_the_folder_alone_continues_with_its_configuration(tiny_musdb, tmp_path, capsys):
    """The run's config.yaml holds every field: ``--resume DIR --epochs 2`` needs no other flag."""
    from xumx.train import main
    out = tmp_path / "run"
    assert main(["--root", tiny_musdb, "--is-wav", "--output", str(out), *TINY_FLAGS,
                 "--nb-layers", "1", "--epochs", "1"]) == 0
    recorded = (out / "config.yaml").read_text()
    assert "hidden_size: 16" in recorded and f"root: {tiny_musdb}" in recorded
    assert main(["--resume", str(out), "--epochs", "2"]) == 0
    _, _, meta = read_checkpoint(str(out / CHECKPOINT_NAME))
    assert meta["epoch"] == 2 and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert "resuming after epoch 1" in capsys.readouterr().err


@pytest.mark.nnabla
def test_wav_data_without_is_wav_says_to_add_it(tiny_musdb, tmp_path, capsys):
    """Issue 22 item 1: as xumx.eval does, a WAV data set read as STEMS names --is-wav."""
    from xumx.train import main
    assert main(["--root", tiny_musdb, "--output", str(tmp_path / "run"), *TINY_FLAGS]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("xumx.train: error: no tracks in "), err
    assert err[0].endswith("they are WAV folders: add --is-wav"), err
    assert not (tmp_path / "run").exists()


@pytest.mark.nnabla
def test_quiet_training_prints_nothing(tiny_musdb, tmp_path, capsys):
    """Issue 22 item 9: --quiet: no bars, no epoch lines, no summary; the run is the same."""
    from xumx.train import main
    out = tmp_path / "run"
    assert main(["--root", tiny_musdb, "--is-wav", "--output", str(out), *TINY_FLAGS,
                 "--nb-layers", "1", "--epochs", "1", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (out / "best_xumx.h5").is_file()
    assert "\nquiet:" not in (out / "config.yaml").read_text()   # how a run prints: no recipe
