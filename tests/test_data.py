"""Data pipeline: split, seeded per-rank sampling, augmentations, statistics, synthetic songs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from xumx.training import data as D
from xumx.synth import make_dataset, song_stems


def tracks(root):
    import musdb
    db = musdb.DB(root=root, is_wav=True, subsets="train")
    return db


def test_synth_is_read_by_musdb_and_mixture_is_sum(tiny_musdb):
    db = tracks(tiny_musdb)
    assert len(db) == 3
    t = db[0]
    assert t.rate == 8000 and t.audio.shape[1] == 2
    stems = sum(t.sources[s].audio for s in ("bass", "drums", "vocals", "other"))
    np.testing.assert_allclose(t.audio, stems, atol=1e-6)
    import musdb
    assert len(musdb.DB(root=tiny_musdb, is_wav=True, subsets="test")) == 1


def test_synth_sources_differ_in_band():
    stems = song_stems(np.random.RandomState(0), 2.0, 8000)
    def centroid(a):
        spec = np.abs(np.fft.rfft(a[:, 0]))
        f = np.fft.rfftfreq(len(a), 1 / 8000)
        return (spec * f).sum() / spec.sum()
    c = {s: centroid(a) for s, a in stems.items()}
    assert c["bass"] < c["other"] and c["bass"] < c["vocals"] and c["bass"] < c["drums"]


def test_synth_is_reproducible(tmp_path):
    a = make_dataset(str(tmp_path / "a"), 1, 0, 0.3, seed=5, rate=8000)
    b = make_dataset(str(tmp_path / "b"), 1, 0, 0.3, seed=5, rate=8000)
    import soundfile as sf
    x = sf.read(os.path.join(a["train"][0], "vocals.wav"))[0]
    y = sf.read(os.path.join(b["train"][0], "vocals.wav"))[0]
    np.testing.assert_array_equal(x, y)


def test_holdout_is_deterministic_and_nonempty():
    assert D.holdout_indices(3) == [2]
    assert D.holdout_indices(15, every=7) == [6, 13]
    with pytest.raises(D.DataError):
        D.holdout_indices(1)


def test_split_uses_musdb_names_when_present(tiny_musdb):
    db = tracks(tiny_musdb)
    names = sorted(t.name for t in db.tracks)
    s = D.split_tracks(db.tracks, db.setup["validation_tracks"])
    assert not s.fixed and [t.name for t in s.valid] == [names[-1]]
    s = D.split_tracks(db.tracks, [names[0]])
    assert s.fixed and [t.name for t in s.valid] == [names[0]] and len(s.train) == 2


def make_training(root, **kw):
    db = tracks(root)
    s = D.split_tracks(db.tracks, [])
    args = dict(seq_dur=0.25, samples_per_track=4)
    args.update(kw)
    return D.MusdbTraining(s.train, s.valid, tiny_config(), **args)


def test_assignment_is_balanced_per_source(tiny_musdb):
    data = make_training(tiny_musdb)
    ids = data.assignment(epoch=1, seed=0)
    assert ids.shape == (2 * 4, 4)
    for column in ids.T:
        assert np.bincount(column).tolist() == [4, 4]
    assert not np.array_equal(ids, data.assignment(epoch=2, seed=0))


def test_batches_shapes_and_mixture_is_sum(tiny_musdb):
    data = make_training(tiny_musdb)
    x, y = next(data.batches(epoch=1, seed=0, batch_size=2))
    assert x.shape == (2, 2, 2000) and y.shape == (2, 4 * 2, 2000)
    np.testing.assert_allclose(x, y.reshape(2, 4, 2, -1).sum(1), atol=1e-6)


def test_ranks_draw_different_excerpts_and_runs_repeat(tiny_musdb):
    data = make_training(tiny_musdb)
    r0 = [x for x, _ in data.batches(1, 0, 2, rank=0, n_procs=2)]
    r1 = [x for x, _ in data.batches(1, 0, 2, rank=1, n_procs=2)]
    again = [x for x, _ in data.batches(1, 0, 2, rank=0, n_procs=2)]
    assert len(r0) == len(r1) == data.iterations(2, 2) == 2
    assert not np.allclose(r0[0], r1[0])
    np.testing.assert_array_equal(r0[0], again[0])
    assert D.epoch_rng(1, 2, 0).rand() != D.epoch_rng(1, 2, 1).rand()


def test_augmentations(rng):
    a = np.stack([np.ones(5), 2 * np.ones(5)])
    g = D.augment_gain(a, rng)
    assert 0.25 <= g[0, 0] < 1.25 and np.allclose(g[1], 2 * g[0])
    swapped = [D.augment_channelswap(a, np.random.RandomState(s))[0, 0] for s in range(20)]
    assert set(swapped) == {1.0, 2.0}
    mono = a[:1]
    assert D.augment_channelswap(mono, rng) is mono


def test_validation_windows_keep_the_last_partial_window():
    assert D.validation_windows(25, 10, 3) == [(0, 10), (10, 20), (20, 25)]
    assert D.validation_windows(21, 10, 3) == [(0, 10), (10, 21)]   # a 1-sample rest joins
    assert D.validation_windows(7, 10, 3) == [(0, 7)]


def test_running_moments_match_numpy(rng):
    rows = rng.randn(50, 6) * 3 + 1
    m = D.RunningMoments()
    for chunk in np.array_split(rows, 4):
        m.update(chunk)
    np.testing.assert_allclose(m.mean, rows.mean(0))
    np.testing.assert_allclose(m.std, rows.std(0))


def test_input_statistics_downmix_and_floor():
    from oracles import stft
    t = np.arange(4000) / 8000
    tone = np.sin(2 * np.pi * 1000 * t)
    audio = np.stack([tone, 0.5 * tone])
    mean, std = D.input_statistics([audio], 256, 64)
    mag = np.abs(stft(audio, 256, 64)).mean(0)
    np.testing.assert_allclose(mean, mag.mean(1), rtol=1e-4, atol=1e-5)
    assert std.min() >= 1e-4 * std.max() * (1 - 1e-6)


def test_track_shorter_than_excerpt_is_an_error(tiny_musdb):
    with pytest.raises(D.DataError, match="shorter"):
        make_training(tiny_musdb, seq_dur=5.0)


@pytest.mark.nnabla
def test_offline_preview_download_is_one_clear_line(tmp_path, monkeypatch, capsys):
    """Without --root, musdb downloads its preview; offline (its URL opener replaced in this
    process, so no proxy setting can let it through) that is one line and exit status 1."""
    import urllib.error
    import musdb
    from xumx.train import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(musdb, "urlopen", offline)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["--epochs", "1"]) == 1
    lines = [l for l in capsys.readouterr().err.splitlines() if "[nnabla]" not in l]
    assert len(lines) == 1 and lines[0].startswith("xumx.train: error:") and "--root" in lines[0], lines
    assert not (tmp_path / "MUSDB18").exists()   # musdb made ~/MUSDB18/MUSDB18-7 before failing


def test_a_failed_preview_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    """Issue 15: offline, musdb makes ~/MUSDB18/MUSDB18-7 and then fails; the folders it made
    go (and only those: a ~/MUSDB18 of the user's stays)."""
    import urllib.error
    import musdb
    calls = []

    def offline(*args, **kwargs):
        calls.append(os.path.isdir(tmp_path / "MUSDB18" / "MUSDB18-7"))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(musdb, "urlopen", offline)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(D.DataError, match="cannot be downloaded.*--root"):
        D.open_musdb(None, False)
    assert calls == [True] and os.listdir(tmp_path) == []
    (tmp_path / "MUSDB18").mkdir()
    (tmp_path / "MUSDB18" / "notes.txt").write_text("mine")
    with pytest.raises(D.DataError):
        D.open_musdb(None, False)
    assert os.listdir(tmp_path / "MUSDB18") == ["notes.txt"]


def test_synth_cli(tmp_path, capsys):
    from xumx.synth import main
    assert main(["--out", str(tmp_path / "d"), "--train", "1", "--test", "1", "--song-dur", "0.2"]) == 0
    assert sorted(os.listdir(tmp_path / "d" / "test" / os.listdir(tmp_path / "d" / "test")[0])) == \
        ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"]
    assert main(["--out", str(tmp_path / "e"), "--song-dur", "0"]) == 2
    assert capsys.readouterr().err.startswith("xumx.synth: error:")
    assert not (tmp_path / "e").exists()
