"""Spleeter Web's X-UMX call, as its separator makes it (the xumx reference, section 8.2).

    python scripts/spleeterweb_call.py MODEL AUDIO.wav OUT.npz [--nnabla-lines]

Reads AUDIO (44.1 kHz; more than two channels: the first two; mono: duplicated), separates it
as ``XUMXSeparator.get_estimates`` does (30 s chunks, ``separate_args_dict`` with its seven
keys, each key's results concatenated) and saves the stems to OUT. ``--nnabla-lines`` runs the
caller's three nnabla lines first (import, ``set_default_context``, ``set_auto_forward``), as
Spleeter Web v3 does; on Python 3.11+ they are removed. Prints one line with what it did.
"""
import sys

import numpy as np

RATE = 44100
CHUNK_SECONDS = 30


def spleeterweb_estimates(audio, model, softmask=False, alpha=1.0, iterations=1):
    """``get_estimates`` after loading: (T, 2) float32 at 44.1 kHz -> {bass, drums, vocals,
    other: (T, 2)}."""
    from xumx.test import separate_args_dict
    chunk_size = RATE * CHUNK_SECONDS
    estimates = {}
    for i in range(int(np.ceil(audio.shape[0] / chunk_size))):
        chunk = audio[i * chunk_size:(i + 1) * chunk_size]
        est = separate_args_dict(chunk, {"model": model, "umx_infer": False,
                                         "targets": ["bass", "drums", "vocals", "other"],
                                         "softmask": softmask, "alpha": alpha,
                                         "residual_model": False, "niter": iterations})
        for key, value in est.items():
            estimates.setdefault(key, []).append(value)
    return {key: np.concatenate(values, axis=0) for key, values in estimates.items()}


def main(argv):
    import soundfile as sf
    model, wav, out = argv[:3]
    if "--nnabla-lines" in argv[3:]:
        import nnabla as nn
        from nnabla.ext_utils import get_extension_context
        nn.set_default_context(get_extension_context("cpu"))
        nn.set_auto_forward(True)
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != RATE:
        sys.exit(f"{wav}: {rate} Hz, Spleeter Web decodes to {RATE} Hz")
    audio = audio[:, :2] if audio.shape[1] >= 2 else np.repeat(audio, 2, axis=1)
    est = spleeterweb_estimates(audio, model)
    assert list(est) == ["bass", "drums", "vocals", "other"], list(est)
    assert all(v.shape == audio.shape and np.isfinite(v).all() for v in est.values())
    np.savez(out, **est)
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}: {audio.shape[0] / RATE:.1f} s "
          f"in {int(np.ceil(audio.shape[0] / (RATE * CHUNK_SECONDS)))} chunks -> {list(est)}, "
          f"each {est['bass'].shape}; nnabla lines: {'yes' if '--nnabla-lines' in argv else 'no'}, "
          f"nnabla loaded: {'yes' if 'nnabla' in sys.modules else 'no'}")


if __name__ == "__main__":
    main(sys.argv[1:])
