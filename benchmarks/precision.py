"""Benchmark: the int8 graph (``--precision int8``) against the float32 default, with the full-size
X-UMX of the published shapes and seeded random weights, on generated songs.

Not a test: it prints numbers. In one process, both Separators are loaded with
``Separator.load(model, precision=...)`` (through the model cache, in the work folder), then:

* network time per 30 s chunk: the masks of one 30 s chunk's magnitude (1292 frames, batch 1),
  the two precisions alternating, ``--runs`` times each (default 5) after one untimed run;
  each run, the medians, min-max and the ratio, and the load average before and after;
* each LSTM layer of the first source alone, int8 against float32: the SER of its output on
  an input like the network's (random weights' masks depend little on the LSTMs, so this is
  the figure to expect more of on trained weights);
* per generated song (``xumx.synth.song_stems``: bass, drums, vocals, other; 44.1 kHz stereo;
  ``--songs`` songs of ``--seconds`` s, seeds 0, 1, ...), each precision's stems through the
  whole separation path (chunks, Wiener filter): the signal-to-error ratio of the int8 stems
  against the float32 stems (the main figure), and the SDR of each against the song's true
  sources with the change. The SDR is the plain one, 10 log10(|s|^2 / |s - s'|^2) over the
  whole song per source (not museval's windowed BSSEval v4: minutes per song). With random
  weights the stems are not separations, so the SDRs are low and their change says little;
  the SER says how far int8 moves the output.

Usage::

    python benchmarks/precision.py                     # 5 runs, 3 songs of 30 s
    python benchmarks/precision.py -n 3 --songs 2 --threads 1 --workdir /tmp/precision
    python benchmarks/precision.py --model x-umx.h5     # the published weights, where at hand
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from chunking import full_size_model, ser_db  # noqa: E402
from separate import load, machine  # noqa: E402
from xumx.flags import PRECISIONS  # noqa: E402

#: the network's chunk: the default chunk length, in seconds
CHUNK_SECONDS = 30.0


def sdr_db(ref: np.ndarray, est: np.ndarray) -> float:
    """Plain SDR of an estimate against the true source: 10 log10(|s|^2 / |s - s'|^2)."""
    return ser_db(ref, est)


def lstm_layer_sers(model, threads):
    """[(source, layer, SER dB)]: each LSTM layer of the first source alone, int8 against
    float32, on an input like the network's (tanh of normal noise, 1292 frames): the figure that
    does not depend on how much the masks of these weights depend on the LSTMs."""
    from xumx import onnxnet
    from xumx.engine import create_session
    from xumx.modelfiles import ModelFiles
    cfg, arrays = ModelFiles.resolve(model).read()
    layers = onnxnet.folded_layers(cfg, arrays)
    source, h = cfg.sources[0], cfg.lstm_hidden
    direction = "forward" if cfg.nb_directions == 1 else "bidirectional"
    rng = np.random.RandomState(0)
    out = []
    for layer in range(cfg.nb_layers):
        w, r, b = (layers[f"lstm_{k}_{source}_{layer}"] for k in "WRB")
        x = np.tanh(rng.standard_normal((1292, 1, w.shape[2]))).astype(np.float32)
        ys = []
        for int8 in (False, True):
            g = onnxnet._Graph()
            if int8:
                y = onnxnet._int8_lstm(g, "x", "lstm", w, r, b, direction=direction, hidden_size=h)
            else:
                y = g.op("LSTM", "x", g.const("W", w), g.const("R", r), g.const("B", b),
                         hidden_size=h, direction=direction)
            g.op("Identity", y, name="y")
            m = g.model([("x", ("frames", 1, w.shape[2]))],
                        [("y", ("frames", cfg.nb_directions, 1, h))], "", {})
            ys.append(create_session(m.tobytes(), threads=threads or None, prepack=int8)
                      .run(None, {"x": x})[0])
        out.append((source, layer, ser_db(*ys)))
    return out


def network_times(seps, mag, runs):
    """{precision: [seconds per run]}: ``seps``' masks of ``mag``, alternating."""
    for sep in seps.values():
        sep.masks(mag)   # untimed: onnxruntime's first run
    times = {p: [] for p in seps}
    for k in range(runs):
        for p, sep in seps.items():
            start = time.perf_counter()
            sep.masks(mag)
            times[p].append(time.perf_counter() - start)
            print(f"run {k + 1} {p:<8} network {times[p][-1]:6.2f} s (load {load()})", flush=True)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", "-n", type=int, default=5, help="timed runs of each (default 5)")
    p.add_argument("--songs", type=int, default=3, help="generated songs (default 3)")
    p.add_argument("--seconds", type=float, default=30.0, help="song length (default 30)")
    p.add_argument("--threads", type=int, default=0,
                   help="onnxruntime's threads (0: the library's default, per load)")
    p.add_argument("--model", default=None, help="weights file (default: the full-size X-UMX "
                   "with seeded random weights, written into --workdir)")
    p.add_argument("--workdir", default=None, help="folder for the model and its cache "
                   "(default: a new temporary folder); reused when given")
    args = p.parse_args(argv)
    if args.runs < 1 or args.songs < 0 or not args.seconds > 0:
        p.error("--runs must be at least 1, --songs 0 or more, --seconds positive")
    work = args.workdir or tempfile.mkdtemp(prefix="xumx-precision-")
    os.makedirs(work, exist_ok=True)
    os.environ["XUMX_CACHE"] = os.path.join(work, "cache")
    import onnxruntime
    from chunking import test_song
    from xumx.separator import Separator
    from xumx.synth import song_stems
    model = args.model or full_size_model(work)
    print(f"machine: {machine()}; Python {platform.python_version()}, onnxruntime "
          f"{onnxruntime.__version__}, numpy {np.__version__}; load average before: {load()}")
    what = "" if args.model else " (full-size X-UMX, seeded random weights)"
    print(f"model: {model}{what}; threads: {args.threads or 'the default'}")
    seps = {}
    for precision in PRECISIONS:
        start = time.perf_counter()
        seps[precision] = Separator.load(model, threads=args.threads or None, precision=precision)
        print(f"load {precision:<8} {time.perf_counter() - start:6.2f} s (where the cache has no "
              f"entry yet: includes building it)")
    ref = seps[PRECISIONS[0]]
    chunk = test_song(CHUNK_SECONDS, ref.sample_rate)
    mag = ref.model_input(ref.spectrogram(chunk))   # (N, C, F): one chunk
    print(f"\n== network, one {CHUNK_SECONDS:g} s chunk ({mag.shape[0]} frames), "
          f"alternating")
    times = network_times(seps, mag, args.runs)
    med = {p: statistics.median(t) for p, t in times.items()}
    for p, t in times.items():
        print(f"{p:<8} median {med[p]:.2f} s (min {min(t):.2f}, max {max(t):.2f})")
    base = PRECISIONS[0]
    for p in PRECISIONS[1:]:
        print(f"speed-up {p} against {base} (median network time): {med[base] / med[p]:.2f}x; "
              f"load average after: {load()}")
    for source, layer, value in lstm_layer_sers(model, args.threads):
        print(f"LSTM layer {layer} of {source} alone: output SER int8 vs {base} {value:.1f} dB")
    if not args.songs:
        return
    print(f"\n== stems: {args.songs} generated song(s) of {args.seconds:g} s (xumx.synth), "
          f"whole separation path")
    rows = []
    for k in range(args.songs):
        truth = song_stems(np.random.RandomState(k), args.seconds, ref.sample_rate)
        mix = sum(truth.values()).astype(np.float32)
        stems, walls = {}, {}
        for precision, sep in seps.items():
            start = time.perf_counter()
            stems[precision] = sep.separate(mix)
            walls[precision] = time.perf_counter() - start
        for p in PRECISIONS[1:]:
            for source in ref.sources:
                f32, low = stems[base][source], stems[p][source]
                row = (k, source, ser_db(f32, low), sdr_db(truth[source], f32),
                       sdr_db(truth[source], low))
                rows.append(row)
                print(f"song {k} {source:<7} SER {p} vs {base} {row[2]:6.1f} dB; SDR {base} "
                      f"{row[3]:7.2f} dB, {p} {row[4]:7.2f} dB (change {row[4] - row[3]:+.3f})")
        print(f"song {k} separate(): " + ", ".join(f"{p} {w:.2f} s" for p, w in walls.items())
              + f" (load {load()})", flush=True)
    sers = [r[2] for r in rows]
    changes = [r[4] - r[3] for r in rows]
    print(f"\nSER of the int8 stems against float32's: median {statistics.median(sers):.1f} dB "
          f"(min {min(sers):.1f}, max {max(sers):.1f}) over {len(rows)} stems")
    print(f"SDR change (plain SDR against the true sources; random weights): median "
          f"{statistics.median(changes):+.3f} dB (min {min(changes):+.3f}, max "
          f"{max(changes):+.3f}); load average after: {load()}")


if __name__ == "__main__":
    main()
