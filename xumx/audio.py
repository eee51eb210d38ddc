"""Audio in and out for the command line: decode with ffmpeg, resample, write stems atomically.

Reading runs the ``ffmpeg`` binary (anything it decodes: mp3, m4a/aac, ogg, flac, wav of any
depth) to raw float32 on a pipe; ``ffprobe`` tells the channels and the rate first. Writing uses
soundfile for wav/flac and the ffmpeg binary for mp3. Every file is written to a temporary name
in its destination folder and renamed, so an interrupted run never leaves a truncated file.

Clipping policy: integer outputs (wav 16/24-bit, flac, mp3) cannot hold samples beyond
[-1, 1]; such samples are clamped to the range and a warning says how many. ``float`` wav
stores the samples as they are.

Errors are :class:`AudioError` with a one-line message naming the file and the cause.
"""
import contextlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Iterator, Optional

import numpy as np

from .config import DEFAULT_NB_CHANNELS, MAX_AMPLITUDE

#: Channels the separation keeps; more are dropped (with a warning).
MAX_CHANNELS = DEFAULT_NB_CHANNELS
_BLOCK = 1 << 20  # bytes read from the ffmpeg pipe at a time


class AudioError(Exception):
    """An input that cannot be read or an output that cannot be written (one-line message)."""


class AudioWarning(UserWarning):
    """Something the user should know about an input or an output (dropped channels, clipping)."""


@dataclass(frozen=True)
class AudioInfo:
    """What ffprobe says about the first audio stream of a file."""
    path: str
    channels: int
    rate: int
    codec: str
    duration: Optional[float]   # seconds, when the container says
    #: exact number of samples when the container states it in samples (ogg, mp4): decoders
    #: may return the codec's padding after it, which :func:`load` drops
    nb_samples: Optional[int] = None


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise AudioError(f"the '{name}' program is needed to read and write audio: install ffmpeg "
                         f"(e.g. apt install ffmpeg / conda install ffmpeg)")
    return exe


def _check_input_path(path: str):
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: the file is empty")


def _last_line(text: bytes, path: str = "") -> str:
    """The last line of an ffmpeg error output, without the file name it starts with."""
    lines = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    line = lines[-1] if lines else "unknown error"
    if path and line.startswith(path + ": "):
        line = line[len(path) + 2:]
    return line


def probe(path: str) -> AudioInfo:
    """Channels, rate, codec and duration of the first audio stream of ``path`` (via ffprobe)."""
    _check_input_path(path)
    cmd = [_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams",
           "-show_format", "-select_streams", "a:0", path]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise AudioError(f"{path}: not an audio file ffmpeg can read "
                         f"({_last_line(proc.stderr, path)})")
    try:
        meta = json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except ValueError:
        raise AudioError(f"{path}: ffprobe gave unreadable output") from None
    streams = [s for s in meta.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError(f"{path}: has no audio stream")
    s = streams[0]
    try:
        channels, rate = int(s["channels"]), int(s["sample_rate"])
    except (KeyError, ValueError, TypeError):
        raise AudioError(f"{path}: the audio stream has no channel count or sample rate") from None
    if channels < 1 or rate < 1:
        raise AudioError(f"{path}: the audio stream has {channels} channels at {rate} Hz")
    dur = s.get("duration", meta.get("format", {}).get("duration"))
    try:
        dur = float(dur) if dur is not None else None
    except ValueError:
        dur = None
    nb_samples = None
    if s.get("time_base") == f"1/{rate}" and str(s.get("start_pts", "0")) == "0":
        try:
            nb_samples = int(s["duration_ts"])
        except (KeyError, ValueError, TypeError):
            pass
    return AudioInfo(path, channels, rate, str(s.get("codec_name", "?")), dur, nb_samples)


def load(path: str, start: float = 0.0, duration: float = -1.0, info: Optional[AudioInfo] = None):
    """Decode ``path`` to float32 samples, keeping at most two channels.

    The span is selected sample-accurately from the decoded stream: samples
    ``round(start*rate)`` up to ``round((start+duration)*rate)`` (``duration < 0``: to the end).
    More than two channels: the first two are kept, with an :class:`AudioWarning`.

    Returns (audio (T, C) float32 with C = 1 or 2, rate, info).
    """
    info = info or probe(path)
    first = int(round(start * info.rate))
    count = int(round(duration * info.rate)) if duration > 0 else None
    if duration > 0 and count == 0:
        raise AudioError(f"{path}: --duration {duration:g} s is shorter than one sample")
    if info.nb_samples is not None and info.nb_samples > 0:   # drop the codec's end padding
        left = max(info.nb_samples - first, 0)
        count = left if count is None else min(count, left)
    frame = 4 * info.channels
    cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels), "-ar", str(info.rate),
           "pipe:1"]
    skip, want = first * frame, (None if count is None else count * frame)
    parts, got = [], 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            while want is None or got < want:
                block = proc.stdout.read(_BLOCK)
                if not block:
                    break
                if skip:
                    cut = min(skip, len(block))
                    skip -= cut
                    block = block[cut:]
                if want is not None:
                    block = block[:want - got]
                if block:
                    parts.append(block)
                    got += len(block)
        except BaseException:
            proc.kill()
            raise
        finally:
            stopped_early = want is not None and got >= want
            if stopped_early and proc.poll() is None:
                proc.kill()   # the span is read: stop decoding the rest
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0 and not stopped_early:
            err.seek(0)
            raise AudioError(f"{path}: ffmpeg could not decode it ({_last_line(err.read(), path)})")
    data = b"".join(parts)
    nb = len(data) // frame
    audio = np.frombuffer(data[:nb * frame], dtype="<f4").reshape(nb, info.channels)
    if nb == 0:
        if first > 0:
            raise AudioError(f"{path}: --start {start:g} s is at or after the end of the audio")
        raise AudioError(f"{path}: contains no audio samples")
    if info.channels > MAX_CHANNELS:
        warnings.warn(f"{path}: has {info.channels} channels; separating the first "
                      f"{MAX_CHANNELS}", AudioWarning, stacklevel=2)
        audio = audio[:, :MAX_CHANNELS]
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: decoded samples contain NaN or infinity")
    peak = float(np.max(np.abs(audio)))
    if peak > MAX_AMPLITUDE:
        raise AudioError(f"{path}: samples peak at {peak:.3g}, beyond the {MAX_AMPLITUDE:g} "
                         f"this separates (full scale is 1)")
    return audio, info.rate, info


def resample(audio: np.ndarray, rate_in: int, rate_out: int, length: Optional[int] = None):
    """Polyphase resampling (scipy ``resample_poly`` with the exact rational ratio).

    Shapes: audio (T, C) -> (T', C) float32 with T' = ``length`` when given, else
    ceil(T * rate_out / rate_in). Equal rates return the input (trimmed/padded to ``length``).
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, not {rate_in} -> {rate_out}")
    if rate_in != rate_out:
        from scipy.signal import resample_poly
        ratio = Fraction(int(rate_out), int(rate_in))
        audio = resample_poly(audio, ratio.numerator, ratio.denominator, axis=0)
    if length is not None:
        if audio.shape[0] >= length:
            audio = audio[:length]
        else:
            audio = np.pad(audio, ((0, length - audio.shape[0]), (0, 0)))
    return np.ascontiguousarray(audio, dtype=np.float32)


def resampled_length(nb_samples: int, rate_in: int, rate_out: int) -> int:
    """Samples that span the same duration at ``rate_out`` (rounded to the nearest, at least 1
    for a non-empty signal)."""
    n = int(math.floor(nb_samples * rate_out / rate_in + 0.5))
    return max(n, 1) if nb_samples > 0 else 0


# --------------------------------------------------------------------------- writing
_SUBTYPES = {("wav", "16"): "PCM_16", ("wav", "24"): "PCM_24", ("wav", "float"): "FLOAT",
             ("flac", "16"): "PCM_16", ("flac", "24"): "PCM_24"}


def _clamped(audio: np.ndarray, name: str, integer: bool) -> np.ndarray:
    if not integer:
        return audio
    over = int(np.count_nonzero(np.abs(audio) > 1.0))
    if over:
        warnings.warn(f"{name}: {over} samples beyond [-1, 1] (peak {np.max(np.abs(audio)):.3f}) "
                      f"were clipped; use --bits float for unclipped output", AudioWarning,
                      stacklevel=3)
        audio = np.clip(audio, -1.0, 1.0)
    return audio


def _encode(tmp: str, audio: np.ndarray, rate: int, fmt: str, bits: str, bitrate: int):
    """Write ``audio`` (T, C) to the already-created file ``tmp`` in the given format."""
    if fmt in ("wav", "flac"):
        import soundfile as sf
        if (fmt, bits) not in _SUBTYPES:
            raise AudioError(f"{fmt} cannot store {bits} samples")
        sf.write(tmp, audio, rate, subtype=_SUBTYPES[fmt, bits], format=fmt.upper())
    elif fmt == "mp3":
        cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(rate),
               "-ac", str(audio.shape[1]), "-i", "pipe:0", "-c:a", "libmp3lame",
               "-b:a", f"{int(bitrate)}k", "-f", "mp3", tmp]
        proc = subprocess.run(cmd, input=np.ascontiguousarray(audio, dtype="<f4").tobytes(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise AudioError(f"ffmpeg could not encode mp3 ({_last_line(proc.stderr)})")
    else:
        raise AudioError(f"unknown output format {fmt!r}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temporary(path: str) -> Iterator[str]:
    """A temporary file next to ``path``, removed unless the caller renamed it."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part",
                                   dir=folder)
    except OSError as e:
        raise AudioError(f"{folder}: cannot write there ({e.strerror or e})") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; stems get the usual mode
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_stems(paths_audio: Dict[str, np.ndarray], rate: int, fmt: str = "wav", bits: str = "16",
                bitrate: int = 320):
    """Write several files so that they appear together: each goes to a temporary name in its
    folder first; only when all are written are they renamed (``os.replace``) into place.

    ``paths_audio``: {destination path: audio (T, C) float}. Interrupted or failing runs leave
    no partial files (earlier temporaries are removed).
    """
    integer = not (fmt == "wav" and bits == "float")
    with contextlib.ExitStack() as stack:
        temps = {}
        for path, audio in paths_audio.items():
            audio = _clamped(np.asarray(audio, dtype=np.float32), path, integer)
            tmp = stack.enter_context(_temporary(path))
            try:
                _encode(tmp, audio, rate, fmt, bits, bitrate)
            except OSError as e:
                raise AudioError(f"{path}: cannot write ({e.strerror or e})") from None
            except RuntimeError as e:   # soundfile's errors
                raise AudioError(f"{path}: cannot write ({e})") from None
            temps[path] = tmp
        for path, tmp in temps.items():
            os.replace(tmp, path)


def write(path: str, audio: np.ndarray, rate: int, fmt: str = "wav", bits: str = "16",
          bitrate: int = 320):
    """Write one file atomically; see :func:`write_stems`. Shapes: audio (T, C)."""
    write_stems({path: audio}, rate, fmt, bits, bitrate)
