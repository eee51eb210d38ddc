"""Chunked separation: accuracy against whole-file separation, and peak memory.

    PYTHONPATH=. python benchmarks/chunking.py ser [--seconds 24] [--chunk-dur 8] [--overlaps 1 0]
    PYTHONPATH=. python benchmarks/chunking.py memory [--seconds 60 120] [--chunk-dur 30]
        [--rate 44100] [--format wav]
    PYTHONPATH=. python benchmarks/chunking.py array [--seconds 600] [--rate 48000]

``ser`` separates a generated song with the full-size model (random weights, built once)
as a whole and in chunks (cross-faded, and butt-joined for comparison) and prints the
signal-to-error ratio in dB of the chunked stems against the whole-file stems.
``memory`` runs ``Separator.separate_file`` (decode, resample, separate, write; what
``python -m xumx.test`` runs) on a generated song of each length (a 16-bit WAV written
beforehand, a minute at a time) in a fresh process and prints its peak resident memory
(``VmHWM``). ``array`` passes an int16 array of that length to ``Separator.separate`` in a
fresh process (the array, its four float32 stems and the work of one chunk) and prints the
peak. Numbers only; nothing is asserted.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def test_song(seconds: float, rate: int = 44100, seed: int = 0) -> np.ndarray:
    """A generated stereo 'song' (T, 2) float32: a bass line, a melody, noise-burst drums."""
    r = np.random.RandomState(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    beat = (t * 2.0) % 1.0                      # 120 bpm
    notes = r.choice([0, 3, 5, 7, 10, 12], size=int(seconds * 2) + 1)
    f0 = 110.0 * 2 ** (notes[(t * 2).astype(int)] / 12)
    bass = 0.3 * np.sin(2 * np.pi * np.cumsum(f0 / 2) / rate)
    melody = 0.15 * sum(np.sin(2 * np.pi * k * np.cumsum(f0 * 2) / rate) / k for k in (1, 2, 3))
    drums = 0.3 * r.standard_normal(n) * np.exp(-beat * 30)
    left = bass + melody + drums
    right = bass + 0.7 * melody + drums
    return np.stack([left, right], axis=1).astype(np.float32)


def full_size_model(folder: str) -> str:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests"))
    from seeded import random_arrays
    from xumx.config import ModelConfig
    from xumx.weights import save_model
    path = os.path.join(folder, "random-full.h5")
    if not os.path.exists(path):
        cfg = ModelConfig()
        save_model(path, cfg, random_arrays(cfg, seed=0))
    return path


def ser_db(ref: np.ndarray, est: np.ndarray) -> float:
    """10 log10(|ref|² / |ref - est|²)."""
    err = np.sum((ref.astype(np.float64) - est) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30)))


def cmd_ser(a):
    from xumx.chunking import chunk_bounds, separate_chunked
    from xumx.separator import Separator
    folder = a.workdir or tempfile.mkdtemp(prefix="xumx-bench-")
    sep = Separator.load(full_size_model(folder), chunk_dur=0)
    rate = sep.sample_rate
    song = test_song(a.seconds, rate)
    t0 = time.perf_counter()
    whole = sep.separate(song)
    t_whole = time.perf_counter() - t0
    print(f"song {a.seconds:g} s at {rate} Hz; whole file in one call: {t_whole:.1f} s")
    for overlap in a.overlaps:
        label = "cross-faded" if overlap else "butt-joined"
        chunk, shared = int(a.chunk_dur * rate), int(overlap * rate)
        t0 = time.perf_counter()
        chunked = separate_chunked(sep.separate, song, chunk, shared)
        took = time.perf_counter() - t0
        sers = {k: ser_db(whole[k], chunked[k]) for k in whole}
        # samples within 0.25 s of a join (the middle of each shared part, or the cut)
        near = np.zeros(song.shape[0], bool)
        for start, _ in chunk_bounds(song.shape[0], chunk, shared)[1:]:
            mid = start + shared // 2
            near[max(mid - rate // 4, 0):mid + rate // 4] = True
        joins = {k: ser_db(whole[k][near], chunked[k][near]) for k in whole}
        print(f"chunks of {a.chunk_dur:g} s, overlap {overlap:g} s ({label}, {took:.1f} s): "
              + ", ".join(f"{k} {v:.1f} dB" for k, v in sers.items())
              + f"; mean {np.mean(list(sers.values())):.1f} dB; within 0.25 s of the joins: "
              + f"mean {np.mean(list(joins.values())):.1f} dB", flush=True)


def cmd_memory(a):
    folder = a.workdir or tempfile.mkdtemp(prefix="xumx-bench-")
    model = full_size_model(folder)
    import soundfile as sf
    for seconds in a.seconds:
        name = f"song-{seconds:g}" + ("" if a.rate == 44100 else f"-{a.rate}")
        song = os.path.join(folder, name + ".wav")
        if not os.path.exists(song):   # made here, so that the measured process only separates
            with sf.SoundFile(song + ".part", "w", a.rate, 2, subtype="PCM_16",
                              format="WAV") as f:   # a minute at a time
                for i, start in enumerate(np.arange(0.0, seconds, 60.0)):
                    f.write(test_song(min(60.0, seconds - start), a.rate, seed=i))
            os.replace(song + ".part", song)
        proc = subprocess.run([sys.executable, __file__, "_one", "--model", model, "--seconds",
                               str(seconds), "--chunk-dur", str(a.chunk_dur), "--workdir", folder,
                               "--song", song, "--format", a.format]
                              + (["--batch-frames", str(a.batch_frames)]
                                 if a.batch_frames is not None else []),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        print(proc.stdout.strip() or f"{seconds} s: failed (exit {proc.returncode})", flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of /proc/self/status (it starts
    afresh at exec; ``ru_maxrss`` would carry the parent's peak over), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cmd_one(a):
    import soundfile as sf
    from xumx.config import OutputConfig
    from xumx.separator import Separator
    from xumx.heap import limit_arenas
    from xumx.stemfiles import separate_file
    limit_arenas()   # as python -m xumx.test does
    path = a.song
    batch = {} if a.batch_frames is None else {"batch_frames": a.batch_frames}
    sep = Separator.load(a.model, chunk_dur=a.chunk_dur, **batch)
    loaded = peak_rss_mib()
    res = separate_file(sep, path, os.path.join(a.workdir, "out"),
                        OutputConfig(out_format=a.format, quiet=True))
    peak = peak_rss_mib()
    rate = sf.info(path).samplerate
    print(f"{a.seconds:g} s song at {rate} Hz, --chunk-dur {a.chunk_dur:g}, --batch-frames "
          f"{sep.chunking.batch_frames}, {a.format} stems: "
          f"peak RSS {peak:.0f} MiB (model loaded: {loaded:.0f} MiB), wall {res.wall:.0f} s "
          f"({res.realtime_factor:.2f}x real time)")


def cmd_array(a):
    if not a.inside:   # a fresh process, so that its peak is this separation's alone
        folder = a.workdir or tempfile.mkdtemp(prefix="xumx-bench-")
        model = full_size_model(folder)
        proc = subprocess.run([sys.executable, __file__, "array", "--inside", model, "--seconds",
                               str(a.seconds[0]), "--rate", str(a.rate)], stdout=subprocess.PIPE,
                              text=True)
        print(proc.stdout.strip() or f"failed (exit {proc.returncode})", flush=True)
        return
    from xumx import Separator
    sep = Separator.load(a.inside)
    n = int(a.seconds[0] * a.rate)
    audio = np.empty((n, 2), np.int16)
    for i, start in enumerate(range(0, n, 60 * a.rate)):   # a minute at a time
        part = test_song(min(60.0, (n - start) / a.rate), a.rate, seed=i)
        audio[start:start + part.shape[0]] = np.round(np.clip(part, -1, 0.999) * 32767)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    stems = sep.separate(audio, rate=a.rate)
    took = time.perf_counter() - t0
    assert all(v.shape == audio.shape for v in stems.values())
    print(f"{a.seconds[0]:g} s int16 array at {a.rate} Hz through Separator.separate: peak RSS "
          f"{peak_rss_mib():.0f} MiB (model loaded and array made: {before:.0f} MiB; the stems "
          f"alone are {sum(v.nbytes for v in stems.values()) / 2 ** 20:.0f} MiB), {took:.0f} s, "
          f"stems of the input's length {audio.shape}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ser")
    s.add_argument("--seconds", type=float, default=24.0)
    s.add_argument("--chunk-dur", type=float, default=8.0)
    s.add_argument("--overlaps", type=float, nargs="+", default=[1.0, 0.0],
                   help="overlaps to try, in seconds (0: butt-joined, as the published code)")
    m = sub.add_parser("memory")
    m.add_argument("--seconds", type=float, nargs="+", default=[60.0, 120.0])
    m.add_argument("--chunk-dur", type=float, default=None)
    m.add_argument("--rate", type=int, default=44100, help="sample rate of the generated song")
    r = sub.add_parser("array")
    r.add_argument("--seconds", type=float, nargs=1, default=[600.0])
    r.add_argument("--rate", type=int, default=48000)
    r.add_argument("--inside", default=None, help=argparse.SUPPRESS)
    o = sub.add_parser("_one")
    o.add_argument("--model", required=True)
    o.add_argument("--seconds", type=float, required=True)
    o.add_argument("--chunk-dur", type=float, required=True)
    o.add_argument("--song", required=True)
    for q in (m, o):
        q.add_argument("--batch-frames", type=int, default=None,
                       help="frames through the network at once (default: the config's)")
        q.add_argument("--format", default="wav", choices=["wav", "flac", "mp3"],
                       help="stem format (default: wav, 16-bit)")
    for q in (s, m, o, r):
        q.add_argument("--workdir", default=None, help="folder for the model and songs")
    a = p.parse_args(argv)
    if a.cmd == "memory" and a.chunk_dur is None:
        from xumx.config import ChunkConfig
        a.chunk_dur = ChunkConfig().chunk_dur
    {"ser": cmd_ser, "memory": cmd_memory, "array": cmd_array, "_one": cmd_one}[a.cmd](a)


if __name__ == "__main__":
    main()
