"""Writing and reading files: the operating system's reason in the one line, and temporaries
of killed writers removed by the next write to the same place (xumx.files, every writer)."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf

from conftest import sine_mix, tiny_config
from xumx import files
from xumx.weights import WeightsError, load_xumx, save_model
from seeded import random_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_os_reason_in_words():
    assert files.os_reason(OSError(errno.ENOSPC, "x")) == "No space left on device"
    hdf5 = OSError("Unable to synchronously write data (file write failed: time = Mon, "
                   "filename = 'a.h5', file descriptor = 5, errno = 30, error message = "
                   "'Read-only file system', buf = 0x1, total write size = 8)")
    assert files.error_number(hdf5) == errno.EROFS
    assert files.os_reason(hdf5) == "Read-only file system"
    assert files.os_reason(RuntimeError("first\nsecond")) == "first"
    e = files.write_error("/x/y.h5", PermissionError(errno.EACCES, "denied"))
    assert isinstance(e, OSError) and e.errno == errno.EACCES
    assert str(e) == "/x/y.h5: cannot write (Permission denied)"


#: Every writer of the package under a 4 kB file size limit (EFBIG, through the same write(2)
#: failure as a full disk); one JSON line per writer: its exception and what is left.
_WRITERS = r"""
import json, os, resource, sys
sys.path.insert(0, os.path.join(sys.argv[2], "tests"))
import numpy as np
from conftest import tiny_config, adam_states, checkpoint_meta
from seeded import random_arrays
from xumx import evaluation, files, weights
from xumx.training import checkpoints, trainer
import oracles
out = sys.argv[1]
cfg = tiny_config()
arrays = random_arrays(cfg)
long = np.random.RandomState(0).uniform(-0.5, 0.5, (44100, 2)).astype(np.float32)
jobs = {
    "weights": lambda p: weights.save_model(p, cfg, arrays),
    "checkpoint": lambda p: checkpoints.write_checkpoint(p, arrays, adam_states(cfg), checkpoint_meta(cfg, 1)),
    "history": lambda p: trainer.write_history(os.path.dirname(p), [{"epoch": i, "train_loss": 1.0}
                                                                     for i in range(300)]),
    "plot": lambda p: trainer.plot_history(p, [{"epoch": 1, "train_loss": 1.0, "valid_loss": 1.0, "lr": 1e-3}]),
    "scores json": lambda p: files.write_text(p, "x" * 10000),
    "estimates": lambda p: evaluation.write_estimates({"vocals": long, "drums": long}, p, 44100),
    "wav": lambda p: oracles.write(p, long, 44100, "wav", "16"),
    "flac": lambda p: oracles.write(p, long, 44100, "flac", "24"),
    "mp3": lambda p: oracles.write(p, np.tile(long, (10, 1)), 44100, "mp3", "16"),
}
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, resource.RLIM_INFINITY))
for name, job in jobs.items():
    folder = os.path.join(out, name.replace(" ", "_"))
    os.makedirs(folder)
    path = os.path.join(folder, {"history": "history.json", "plot": "training.png",
                                 "estimates": "track"}.get(name, "file.out"))
    try:
        job(path)
        result = "no error"
    except Exception as e:
        result = "%s: %s" % (type(e).__name__, e)
    left = sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)
    print(json.dumps([name, path, result, left]), flush=True)
"""


def test_every_writer_names_the_os_reason_and_leaves_nothing(tmp_path):
    """Weights, checkpoints, history, plots, eval scores and estimates, stems in wav/flac/mp3:
    a write the OS refuses gives one line naming the file and the OS's reason (here EFBIG,
    "File too large", from a file size limit: the same failed write(2) as a full disk), and
    neither the file nor a temporary is left."""
    proc = subprocess.run([sys.executable, "-c", _WRITERS, str(tmp_path), ROOT],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(rows) == 9, proc.stdout
    reason = os.strerror(errno.EFBIG)
    for name, path, result, left in rows:
        assert "\n" not in result and f"({reason})" in result, (name, result)
        assert path in result or os.path.dirname(path) in result, (name, result)
        assert left == [], (name, left)


def test_read_failures_name_the_os_reason(tmp_path):
    loop = tmp_path / "loop.h5"
    os.symlink(str(loop), str(loop))
    with pytest.raises(WeightsError, match=re.escape(f"{loop}: cannot be read (Too many levels "
                                                     "of symbolic links)")):
        load_xumx(str(loop))
    cfg = tiny_config()
    path = str(tmp_path / "model.h5")
    save_model(path, cfg, random_arrays(cfg))
    os.remove(str(tmp_path / "model.json"))
    os.mkdir(str(tmp_path / "model.json"))
    with pytest.raises(WeightsError, match=r"model.json: unreadable model sidecar \(Is a directory\)"):
        load_xumx(path)
    os.rmdir(str(tmp_path / "model.json"))
    os.mkfifo(str(tmp_path / "model.json"))      # would block a reader forever
    with pytest.raises(WeightsError, match=r"model.json: model sidecar is not a regular file"):
        load_xumx(path)
    os.mkfifo(str(tmp_path / "fifo.h5"))
    with pytest.raises(WeightsError, match=r"fifo.h5: not a regular file"):
        load_xumx(str(tmp_path / "fifo.h5"))


# --------------------------------------------------------------------------- temporaries
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path):
    path = str(tmp_path / "scores.json")
    host = files._host()
    dead, live = _dead_pid(), os.getppid()
    made = {
        "dead": f".scores.json.{dead}-{host}-0123abcd{files.SUFFIX}",
        "live": f".scores.json.{live}-{host}-0123abcd{files.SUFFIX}",
        "other host": f".scores.json.{dead}-{'0' * 8 if host != '0' * 8 else '1' * 8}-0123abcd{files.SUFFIX}",
        "other file": f".other.json.{dead}-{host}-0123abcd{files.SUFFIX}",
        "user's file": f".scores.json.{dead}-{host}-0123abcd.part",
    }
    for name in made.values():
        (tmp_path / name).write_text("partial")
    assert len(files.temporaries(path)) == 3
    files.write_text(path, "{}")
    left = set(os.listdir(tmp_path))
    assert made["dead"] not in left
    assert left == {"scores.json"} | {v for k, v in made.items() if k != "dead"}


_KILLED_WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from xumx import files
with files.replacing(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write("half of it")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_a_write_after_sigkill_removes_the_killed_writers_temporary(tmp_path):
    """The atomic writer (weights, checkpoints, history, eval outputs) killed half-way leaves
    its temporary; the next write to the same file removes it."""
    path = str(tmp_path / "checkpoint.h5")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, path, ROOT],
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    proc.kill()
    proc.wait()
    left = files.temporaries(path)
    assert len(left) == 1 and left[0][1] == proc.pid and not os.path.exists(path)
    files.write_text(path, "whole")
    assert os.listdir(tmp_path) == ["checkpoint.h5"]


def test_separation_killed_with_sigkill_then_run_again_leaves_no_temporary(tmp_path, tiny_model):
    """``xumx.test`` killed (SIGKILL) while its stems stream to their temporaries; the same
    command again writes the stems and removes the killed run's temporaries."""
    song = str(tmp_path / "long.wav")
    sf.write(song, sine_mix(8000 * 120, 8000), 8000, subtype="PCM_16")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xumx.test", "--inputs", song, "--outdir", str(out), "--model",
           tiny_model, "--chunk-dur", "1", "--overlap", "0.1", "--quiet"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline, parts = time.time() + 60, []
    while time.time() < deadline and proc.poll() is None and len(parts) < 4:
        time.sleep(0.05)
        folder = out / "long"
        parts = [f for f in os.listdir(folder) if f.endswith(files.SUFFIX)] if folder.is_dir() else []
    assert len(parts) == 4, proc.stderr.read().decode()[-500:] if proc.poll() is not None else parts
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(os.listdir(out / "long")) == sorted(parts)   # what a killed run leaves
    again = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-500:]
    assert sorted(os.listdir(out / "long")) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert sf.info(str(out / "long" / "vocals.wav")).frames == 8000 * 120


def _fill(folder, text):
    os.makedirs(os.path.join(folder, "sub"))
    for name in ("a.txt", os.path.join("sub", "b.txt")):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)


def _contents(folder):
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n)).read()
            for d, _, names in os.walk(folder) for n in names}


def test_replacing_a_folder_leaves_no_moment_without_it(tmp_path, monkeypatch):
    """The old folder stays at its name until the new one takes it: every rename the writer
    makes finds the destination there (removing it first and renaming after left a gap in
    which a reader, or a crash, found no folder at all)."""
    path = str(tmp_path / "stems")
    _fill(path, "old")
    seen = []
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def watched(src, dst, *a, real=real, **k):
            seen.append(os.path.isdir(path))
            return real(src, dst, *a, **k)
        monkeypatch.setattr(files.os, name, watched)
    with files.replacing(path, folder=True) as tmp:
        _fill(tmp, "new")
        assert _contents(path) == {"a.txt": "old", "sub/b.txt": "old"}
    assert all(seen), seen
    assert _contents(path) == {"a.txt": "new", "sub/b.txt": "new"}
    assert os.listdir(tmp_path) == ["stems"]


def test_a_folder_that_cannot_take_the_place_leaves_the_old_one_whole(tmp_path, monkeypatch):
    """Where the names cannot be exchanged in one step the old folder goes aside first; when
    the new one then cannot be renamed in, the old one is put back: one line, the old folder
    whole, no temporaries."""
    path = str(tmp_path / "stems")
    _fill(path, "old")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    real = os.rename

    def failing(src, dst):
        if dst == path and files.SUFFIX in src and os.path.exists(path) is False \
                and _contents(src).get("a.txt") == "new":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)
    monkeypatch.setattr(files.os, "rename", failing)
    with pytest.raises(files.WriteError) as e:
        with files.replacing(path, folder=True) as tmp:
            _fill(tmp, "new")
    assert str(e.value) == f"{path}: cannot write (Invalid cross-device link)"
    assert _contents(path) == {"a.txt": "old", "sub/b.txt": "old"}
    assert os.listdir(tmp_path) == ["stems"]


def test_together_failing_part_way_leaves_each_file_whole_and_no_temporary(tmp_path, monkeypatch):
    """Files that appear together are renamed one by one; when one rename fails the error
    names that file, the files renamed before it are whole and new, the rest whole and old,
    and no temporary is left."""
    paths = [str(tmp_path / f"{n}.txt") for n in ("a", "b", "c")]
    for p in paths:
        with open(p, "w") as f:
            f.write("old " + p)
    real = os.replace

    def failing(src, dst):
        if dst == paths[1]:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(src, dst)
    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(files.WriteError) as e:
        with files.Together() as t:
            for p in paths:
                with open(t.temporary(p), "w") as f:
                    f.write("new " + p)
    assert str(e.value) == f"{paths[1]}: cannot write (Read-only file system)"
    assert [open(p).read() for p in paths] == ["new " + paths[0], "old " + paths[1], "old " + paths[2]]
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt", "c.txt"]


def test_weights_reach_the_disk_before_they_take_the_name(tmp_path, monkeypatch):
    """A weights file (and a checkpoint: the same writer) survives a power loss: its bytes
    are flushed before the rename and its folder's entry after it; a stem file is not."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: events.append(
        ("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: events.append(("replace", b))
                        or real_replace(a, b))
    path = str(tmp_path / "model.h5")
    cfg = tiny_config()
    save_model(path, cfg, random_arrays(cfg, seed=1))
    weights = [e for e in events if e[1] == path or (e[0] == "fsync" and files.SUFFIX in e[1]
               and os.path.basename(e[1]).startswith(".model.h5."))
               or e == ("fsync", str(tmp_path))]
    kinds = [(k, "tmp" if files.SUFFIX in p else "folder" if p == str(tmp_path) else "file")
             for k, p in weights]
    assert kinds == [("fsync", "tmp"), ("replace", "file"), ("fsync", "folder")], events
    events.clear()
    files.write_text(str(tmp_path / "scores.json"), "{}")
    assert [k for k, _ in events] == ["replace"]
