"""A stand-in for torchaudio's file functions, for open-unmix's ``umx`` command in
benchmarks/separate.py only (never a dependency of xumx).

open-unmix 1.3's CLI imports torchaudio for ``load``/``info``/``save``; torchaudio has no
wheel for the PyTorch used here (2.13). These functions do what torchaudio's soundfile backend
does for WAV: read float32 (channels, samples) tensors, write a float tensor as a 32-bit float
WAV (torchaudio's default encoding for float tensors). Only used when the interpreter given to
the benchmark cannot import a real torchaudio.
"""
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch

__version__ = "0+xumx-benchmark-shim"


def set_audio_backend(name):
    """Accepted and ignored (the shim reads and writes with soundfile)."""


def get_audio_backend():
    return "soundfile"


def info(path):
    i = sf.info(str(path))
    return SimpleNamespace(sample_rate=i.samplerate, num_frames=i.frames, num_channels=i.channels)


def load(path, frame_offset=0, num_frames=-1, **_):
    data, rate = sf.read(str(path), start=frame_offset, frames=num_frames, dtype="float32",
                         always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def save(path, src, sample_rate, **_):
    sf.write(str(path), src.detach().cpu().numpy().T, int(sample_rate), subtype="FLOAT")
