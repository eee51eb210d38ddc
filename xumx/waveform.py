"""The waveforms the separation API takes: checked, and integers scaled, without copying a long
song whole."""
from typing import Tuple

import numpy as np

from .config import MAX_AMPLITUDE
from .errors import InputError

#: Samples checked or converted at a time (bounded temporary memory for long songs).
BLOCK = 1 << 18


def check_audio(audio) -> Tuple[np.ndarray, bool]:
    """Validate a waveform for separation: (audio as (T, C), whether it was 1-D).

    ``audio``: a numpy array (T, C) with C = 1 or 2, or (T,) for mono; floating point around
    [-1, 1], or integer samples (int16 as soundfile or pydub give them, int32, uint8...), which
    :func:`to_float` scales by their type's full scale. The array is returned as it is (no
    copy; a 1-D one as a (T, 1) view). Raises InputError (a ValueError) naming what was
    expected: 1 or 2 channels samples-first, finite, not empty, samples within
    +-:data:`~xumx.config.MAX_AMPLITUDE` (full scale is 1).
    """
    if not isinstance(audio, np.ndarray):
        raise InputError(f"audio must be a numpy array of shape (nb_timesteps, 2), "
                         f"not {type(audio).__name__}")
    if audio.dtype.kind not in "iuf":
        raise InputError(f"audio must hold real numbers: floating point around [-1, 1] or "
                         f"integer samples (int16, int32, uint8...), not {audio.dtype}")
    mono = audio.ndim == 1
    if mono:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise InputError(f"audio must be (nb_timesteps, nb_channels) or (nb_timesteps,), got "
                         f"shape {audio.shape}")
    if audio.shape[0] in (1, 2) and audio.shape[1] > 2:
        raise InputError(f"audio has shape {audio.shape}, which looks like (channels, samples); "
                         f"expected (nb_timesteps, nb_channels): pass audio.T")
    if audio.shape[1] not in (1, 2):
        raise InputError(f"audio must have 1 or 2 channels (shape (nb_timesteps, 2)), "
                         f"got shape {audio.shape}")
    if audio.shape[0] == 0:
        raise InputError(f"audio is empty (shape {audio.shape}): expected at least one sample "
                         f"of shape (nb_timesteps, nb_channels)")
    if audio.dtype.kind == "f":
        for start in range(0, audio.shape[0], BLOCK):
            part = audio[start:start + BLOCK]
            finite = np.isfinite(part)
            if not np.all(finite):
                bad = np.argwhere(~finite)[0]
                raise InputError(f"audio contains NaN or infinite samples (first at sample "
                                 f"{start + bad[0]}, channel {bad[1]}): expected finite samples")
            peak = float(np.max(np.abs(part)))
            if peak > MAX_AMPLITUDE:
                raise InputError(f"audio peaks at {peak:.3g}: expected samples around [-1, 1] "
                                 f"(at most {MAX_AMPLITUDE:g})")
    return audio, mono


def to_float(audio: np.ndarray) -> np.ndarray:
    """Samples as float32 around [-1, 1]: float as it is (cast), integers divided by their
    type's full scale (2**(bits-1)), unsigned types centred first (uint8: (x - 128) / 128)."""
    if audio.dtype.kind not in "iu":
        return np.asarray(audio, dtype=np.float32)
    full = float(2 ** (8 * audio.dtype.itemsize - 1))
    x = audio.astype(np.float64 if audio.dtype.itemsize > 2 else np.float32)
    if audio.dtype.kind == "u":
        x -= full
    return (x / full).astype(np.float32)


def audio_rate(rate) -> int:
    """``rate`` (the audio's sample rate in Hz, a whole number) as an int; InputError if not."""
    try:
        ok = not isinstance(rate, (bool, str)) and int(rate) == rate and rate > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"rate must be the audio's sample rate in Hz, a positive whole "
                         f"number, not {rate!r}")
    return int(rate)
