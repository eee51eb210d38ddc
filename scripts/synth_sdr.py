"""Separate the test songs of a musdb-layout WAV dataset with a trained model and print, per
source, the global SDR of the estimates and of the mixture-as-estimate baseline.

Global SDR of one song and source: 10 log10(sum s^2 / sum (s - s_hat)^2) over all samples and
channels; the table shows the mean over songs.

    python scripts/synth_sdr.py --root /tmp/synth --model x-umx/best_xumx.h5
"""
import argparse
import os

import numpy as np
import soundfile as sf


def global_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Shapes: (T, C), (T, C) -> dB."""
    err = np.sum((reference - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference ** 2) / max(err, 1e-12)))


def main(argv=None):
    from xumx.separator import Separator
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--subset", default="test")
    args = p.parse_args(argv)
    sep = Separator.load(args.model, chunk_dur=0)
    folder = os.path.join(args.root, args.subset)
    scores = {s: [] for s in sep.cfg.sources}
    base = {s: [] for s in sep.cfg.sources}
    for song in sorted(os.listdir(folder)):
        mix, _ = sf.read(os.path.join(folder, song, "mixture.wav"), dtype="float32", always_2d=True)
        est = sep.separate(mix)
        for s in sep.cfg.sources:
            ref, _ = sf.read(os.path.join(folder, song, f"{s}.wav"), dtype="float32", always_2d=True)
            scores[s].append(global_sdr(ref, est[s][:len(ref)]))
            base[s].append(global_sdr(ref, mix))
    print(f"{'source':8s} {'model SDR':>10s} {'mixture SDR':>12s}   (global SDR, dB, mean over {len(os.listdir(folder))} songs)")
    for s in sep.cfg.sources:
        print(f"{s:8s} {np.mean(scores[s]):10.2f} {np.mean(base[s]):12.2f}")


if __name__ == "__main__":
    main()
