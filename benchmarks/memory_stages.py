"""Where the peak of ``Separator.separate`` on a long int16 array goes, stage by stage.

    PYTHONPATH=. python benchmarks/memory_stages.py [--seconds 600] [--rate 48000]

The array of ``benchmarks/chunking.py array`` (the same generated song, the same full-size
random model) is separated in this process while a thread reads the resident memory
(``VmRSS``) every 2 ms; each reading is credited to the stage running then (the resampling on
the way in and out, and in each chunk the STFT, the network, the Wiener filter with the
inverse STFT; the rest of ``separate`` (the cross-fade, copying into the stems) is
'separate (other)'). It prints the process's peak (``VmHWM``) and each stage's highest
reading and largest rise above its own start. The sampling thread slows the run; the peak
is the figure to compare with ``chunking.py array``. Numbers only; nothing is asserted.
"""
import argparse
import collections
import contextlib
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chunking import full_size_model, peak_rss_mib, test_song   # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class Stages:
    """The highest reading and the largest rise of each stage (the innermost running)."""

    def __init__(self):
        self.stack = ["separate (other)"]
        self.start = {}
        self.peak = collections.defaultdict(float)
        self.rise = collections.defaultdict(float)
        self.stop = False

    def note(self, name, r):
        self.peak[name] = max(self.peak[name], r)
        self.rise[name] = max(self.rise[name], r - self.start.get(name, r))

    def sample(self):
        while not self.stop:
            self.note(self.stack[-1], rss_mib())
            time.sleep(0.002)

    @contextlib.contextmanager
    def at(self, name):
        self.stack.append(name)
        self.start[name] = rss_mib()
        try:
            yield
        finally:
            self.note(name, rss_mib())
            self.stack.pop()

    def wrap(self, owner, attr, name):
        f = getattr(owner, attr)

        def staged(*a, **k):
            with self.at(name(*a) if callable(name) else name):
                return f(*a, **k)
        setattr(owner, attr, staged)

    def wrap_generator(self, owner, attr, name):
        f = getattr(owner, attr)

        def staged(*a, **k):
            it = f(*a, **k)
            while True:
                with self.at(name):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item
        setattr(owner, attr, staged)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--rate", type=int, default=48000)
    p.add_argument("--workdir", default=None, help="folder for the model")
    a = p.parse_args(argv)
    import tempfile
    from xumx import Separator, heap, resample, separator
    model = full_size_model(a.workdir or tempfile.mkdtemp(prefix="xumx-bench-"))
    sep = Separator.load(model)
    n = int(a.seconds * a.rate)
    audio = np.empty((n, 2), np.int16)
    for i, start in enumerate(range(0, n, 60 * a.rate)):   # as chunking.py array
        part = test_song(min(60.0, (n - start) / a.rate), a.rate, seed=i)
        audio[start:start + part.shape[0]] = np.round(np.clip(part, -1, 0.999) * 32767)
    heap.trim()   # the song's making, handed back: the readings are the separation's
    print(f"model loaded and array made: {rss_mib():.0f} MiB resident")
    st = Stages()
    st.wrap(sep, "_input_and_peak", "chunk: STFT (network input)")
    st.wrap(sep, "batch_sources", "chunk: network")
    st.wrap_generator(separator, "wiener_blocks", "chunk: Wiener filter + inverse STFT")
    st.wrap(sep, "_filter", "chunk: other")
    labels = {}   # the first resampler to take a block is the one on the way in
    st.wrap(resample.StreamResampler, "push", lambda r, block: labels.setdefault(
        id(r), "resample out" if labels else "resample in"))
    st.start[st.stack[0]] = rss_mib()
    threading.Thread(target=st.sample, daemon=True).start()
    t0 = time.perf_counter()
    stems = sep.separate(audio, rate=a.rate)
    took = time.perf_counter() - t0
    st.stop = True
    stem_mib = sum(v.nbytes for v in stems.values()) / 2 ** 20
    print(f"{a.seconds:g} s int16 array at {a.rate} Hz: peak RSS {peak_rss_mib():.0f} MiB "
          f"({took:.0f} s with the sampling); stems {stem_mib:.0f} MiB, input "
          f"{audio.nbytes / 2 ** 20:.0f} MiB")
    for name in sorted(st.peak, key=st.peak.get, reverse=True):
        print(f"  {name:38s} highest {st.peak[name]:6.0f} MiB, "
              f"rise within {st.rise[name]:4.0f} MiB")


if __name__ == "__main__":
    main()
