"""Print how long museval (BSSEval v4, 1 s windows) takes per track on this machine.

    python scripts/museval_speed.py [SECONDS ...]

Random stereo references and estimates at 44.1 kHz, for 2 and 4 targets.
"""
import sys
import time

import numpy as np


def main(argv):
    import museval
    rate = 44100
    r = np.random.RandomState(0)
    for seconds in [float(a) for a in argv] or [1.0, 5.0]:
        for nb_targets in (2, 4):
            refs = r.standard_normal((nb_targets, int(seconds * rate), 2))
            ests = refs + 0.1 * r.standard_normal(refs.shape)
            t0 = time.perf_counter()
            museval.evaluate(refs, ests, win=rate, hop=rate)
            print(f"{seconds:5.1f} s audio, {nb_targets} targets: {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
