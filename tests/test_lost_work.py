"""No command loses a user's work (issue 21): a training run is never replaced without
--force, an interrupted run hints at --resume only when there is something to resume, a
generated data set is written whole into a new or empty folder, a stems folder holds the
stems of one run, inputs of the same name get their own folders, and a write that fails says
its own reason (a failing clean-up never masks it)."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, sine_mix, tiny_config
from seeded import random_arrays
from xumx import files
from xumx.config import ModelConfig, TrainConfig
from xumx.errors import ConfigError, WriteError
from xumx.modelfiles import BEST_NAME, CHECKPOINT_NAME
from xumx.recipes import RUN_CONFIG, recipe_text, replaced_run, run_files
from xumx.weights import save_model

ENV = dict(os.environ, PYTHONPATH=ROOT)
TINY_TRAIN = ["--is-wav", "--seed", "7", "--epochs", "1", "--hidden-size", "16", "--nb-layers",
              "1", "--nfft", "256", "--nhop", "64", "--sample-rate", "8000", "--bandwidth",
              "3000", "--batch-size", "2", "--seq-dur", "0.25", "--samples-per-track", "1",
              "--valid-dur", "0.5"]


def command(module, *args, timeout=180):
    """(exit status, stderr lines) of ``python -m xumx.<module> args``."""
    proc = subprocess.run([sys.executable, "-m", f"xumx.{module}", *map(str, args)], env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    return proc.returncode, [ln for ln in proc.stderr.decode().splitlines()
                             if ln.strip() and "[nnabla]" not in ln]


def a_finished_run(folder):
    """A folder with the files of a run (contents that only need to be recognisable)."""
    folder.mkdir()
    cfg = tiny_config(nb_layers=1)
    save_model(str(folder / BEST_NAME), cfg, random_arrays(cfg, seed=3))
    (folder / CHECKPOINT_NAME).write_bytes(b"the old run's checkpoint")
    (folder / "history.json").write_text("[\"the old run\"]")
    (folder / RUN_CONFIG).write_text(recipe_text(cfg, TrainConfig(output=str(folder))))
    (folder / "notes.txt").write_text("the user's own file")
    return folder


# --------------------------------------------------------------------------- training
def test_a_folder_holding_a_run_is_refused_naming_resume_and_output(tmp_path):
    run = a_finished_run(tmp_path / "x-umx")
    before = {f: open(f, "rb").read() for f in run_files(str(run))}
    with pytest.raises(ConfigError) as e:
        replaced_run(TrainConfig(output=str(run)))
    line = str(e.value)
    assert f"--resume {run}" in line and "--output" in line and "--force" in line, line
    assert replaced_run(TrainConfig(output=str(run), resume=str(run))) == []   # continuing it
    assert replaced_run(TrainConfig(output=str(run), resume=str(run / CHECKPOINT_NAME))) == []
    assert sorted(replaced_run(TrainConfig(output=str(run), force=True))) == sorted(before)
    assert replaced_run(TrainConfig(output=str(tmp_path / "new"))) == []
    assert {f: open(f, "rb").read() for f in run_files(str(run))} == before   # untouched


def test_a_run_that_finished_no_epoch_is_not_offered_for_resuming(tmp_path):
    run = tmp_path / "started"
    run.mkdir()
    (run / RUN_CONFIG).write_text(recipe_text(ModelConfig(), TrainConfig(output=str(run))))
    with pytest.raises(ConfigError) as e:
        replaced_run(TrainConfig(output=str(run)))
    assert "--resume" not in str(e.value) and "nothing to resume" in str(e.value), str(e.value)


def test_the_resume_hint_only_when_there_is_a_checkpoint(tmp_path):
    from xumx.train import kept_note
    run = tmp_path / "run"
    run.mkdir()
    assert kept_note(str(run)) == "no epoch finished, so there is nothing to resume"
    assert kept_note(None) == "no epoch finished, so there is nothing to resume"
    (run / CHECKPOINT_NAME).write_bytes(b"x")
    assert kept_note(str(run)) == f"resume with --resume {run}"


@pytest.mark.nnabla
def test_train_refuses_a_run_folder_and_force_starts_over(tiny_musdb, tmp_path):
    """``xumx.train --output DIR`` where DIR holds a run: one line, exit 2, nothing changed;
    with --force the old run's files go (the user's other files stay) and a new run is
    written."""
    run = a_finished_run(tmp_path / "x-umx")
    before = {f: open(f, "rb").read() for f in os.listdir(run) for f in [str(run / f)]}
    code, err = command("train", "--root", tiny_musdb, "--output", run, *TINY_TRAIN)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"xumx.train: error: {run} holds a training run (")
    assert f"--resume {run}" in err[0] and "new --output" in err[0], err[0]
    assert {f: open(f, "rb").read() for f in before} == before
    code, err = command("train", "--root", tiny_musdb, "--output", run, *TINY_TRAIN, "--force")
    assert code == 0, err[-3:]
    assert (run / "notes.txt").read_text() == "the user's own file"
    for name in (CHECKPOINT_NAME, "history.json", BEST_NAME):
        assert open(run / name, "rb").read() != before[str(run / name)], name


@pytest.mark.nnabla
def test_an_interrupt_before_the_first_checkpoint_offers_no_resume(tmp_path, capsys,
                                                                   monkeypatch):
    """Ctrl-C in the first epoch: "nothing to resume", not a --resume that would then say
    there is no checkpoint."""
    import xumx.training.trainer as trainer
    from xumx.train import main

    def interrupted(model_cfg, cfg, **kw):
        os.makedirs(cfg.output, exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    out = tmp_path / "run"
    assert main(["--output", str(out), "--root", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "xumx.train: interrupted; no epoch finished, so there is nothing to resume"
    (out / CHECKPOINT_NAME).write_bytes(b"x")
    assert main(["--output", str(out), "--root", str(tmp_path), "--force"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"xumx.train: interrupted; resume with --resume {out}"


# --------------------------------------------------------------------------- synth
def test_synth_refuses_a_non_empty_folder_and_writes_a_set_whole(tmp_path, monkeypatch):
    from xumx import synth
    old = tmp_path / "old"
    old.mkdir()
    (old / "song.wav").write_bytes(b"a song of the user's")
    code, err = command("synth", "--out", old, "--train", "1", "--test", "1", "--song-dur", "0.2")
    assert code == 2 and len(err) == 1 and f"{old} is not empty" in err[0], err
    assert os.listdir(old) == ["song.wav"]
    empty = tmp_path / "empty"
    empty.mkdir()
    written = synth.make_dataset(str(empty), 1, 1, 0.2, rate=8000)
    assert sorted(os.listdir(empty)) == ["test", "train"] and len(written["train"]) == 1
    calls = []

    def stopped(folder, stems, rate):   # Ctrl-C while the second song is written
        if calls:
            raise KeyboardInterrupt
        calls.append(folder)
        real(folder, stems, rate)

    real = synth.write_song
    monkeypatch.setattr(synth, "write_song", stopped)
    with pytest.raises(KeyboardInterrupt):
        synth.make_dataset(str(tmp_path / "stopped"), 1, 1, 0.2, rate=8000)
    assert sorted(os.listdir(tmp_path)) == ["empty", "old"]   # no half set, no temporary


# --------------------------------------------------------------------------- stems folders
@pytest.fixture
def song_and_model(tmp_path):
    song = tmp_path / "song.wav"
    sf.write(str(song), sine_mix(4000, 8000), 8000, subtype="PCM_16")
    cfg = tiny_config()
    model = str(tmp_path / "model.h5")
    save_model(model, cfg, random_arrays(cfg, seed=1))
    return str(song), model


def separate(song, model, out, *flags):
    from xumx.test import main
    return main(["--inputs", *([song] if isinstance(song, str) else song), "--model", model,
                 "--outdir", str(out), "--quiet", *flags])


def test_stems_of_targets_not_asked_for_are_removed(song_and_model, tmp_path):
    """A second run with other targets or another format leaves only its own stems (and the
    user's other files); a run that fails leaves the earlier stems as they were."""
    song, model = song_and_model
    out = tmp_path / "out"
    assert separate(song, model, out) == 0
    (out / "song" / "notes.txt").write_text("mine")
    assert separate(song, model, out, "--targets", "vocals") == 0
    assert sorted(os.listdir(out / "song")) == ["notes.txt", "vocals.wav"]
    assert separate(song, model, out, "--targets", "vocals", "drums", "--format", "flac") == 0
    assert sorted(os.listdir(out / "song")) == ["drums.flac", "notes.txt", "vocals.flac"]
    before = {n: (out / "song" / n).read_bytes() for n in os.listdir(out / "song")}
    sf.write(song, np.full((400, 2), np.nan, np.float32), 8000, subtype="FLOAT")
    assert separate(song, model, out, "--targets", "bass") == 1
    assert {n: (out / "song" / n).read_bytes() for n in os.listdir(out / "song")} == before


def test_inputs_of_the_same_name_get_folders_of_their_own(song_and_model, tmp_path):
    """``a/song.wav``, ``b/song.wav``, ``c/song_2.wav`` and ``d/Song.wav`` in one run: four
    folders, none written twice (names that differ only in case count as the same)."""
    from xumx.stemfiles import output_folders
    song, model = song_and_model
    inputs = []
    for folder, name in (("a", "song"), ("b", "song"), ("c", "song_2"), ("d", "Song")):
        (tmp_path / folder).mkdir()
        inputs.append(str(tmp_path / folder / f"{name}.wav"))
        sf.write(inputs[-1], sine_mix(800, 8000, seed=len(inputs)), 8000, subtype="PCM_16")
    folders = [os.path.basename(f) for f in output_folders(inputs, "out")]
    assert folders == ["song", "song_2", "song_2_2", "Song_3"]
    assert separate(inputs, model, tmp_path / "out") == 0
    assert sorted(os.listdir(tmp_path / "out")) == sorted(folders)


def test_the_same_name_rule_is_documented():
    from conftest import readme_section
    from xumx.parsing import build_parser
    shown = " ".join(build_parser("test").format_help().split())
    assert "inputs of the same name get <name>_2, <name>_3... in the order given" in shown
    assert "`song_2`" in readme_section("Separating songs")


# --------------------------------------------------------------------------- write errors
def test_a_failing_clean_up_never_masks_the_write_error(tmp_path, monkeypatch):
    """On a read-only file system the temporary cannot be made, and removing it fails too
    (EROFS even for a file that is not there): the error says the write's reason and names
    the destination, not the temporary."""
    real_open, real_unlink = os.open, os.unlink

    def read_only(path, *args, **kw):
        if str(path).endswith(files.SUFFIX):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, *args, **kw)

    def unlink(path, *args, **kw):
        if str(path).endswith(files.SUFFIX):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "unlink", unlink)
    target = str(tmp_path / "config.yaml")
    with pytest.raises(WriteError) as e:
        files.write_text(target, "x")
    assert str(e.value) == f"{target}: cannot write (Read-only file system)"
    assert e.value.errno == errno.EROFS
