"""Decoding audio files from strangers, in blocks: libsndfile in-process for plain PCM/float
WAV, AIFF and FLAC, the ``ffmpeg`` program for everything else.

:func:`probe` says what a file holds (``ffprobe``, or libsndfile for :data:`SNDFILE_KINDS`);
:func:`stream` decodes a span of it block by block, so memory does not grow with its length.
More than :data:`MAX_CHANNELS` channels: the first ones are kept, with a warning. Errors are
:class:`~xumx.errors.AudioError`, one line naming the file and the cause.
"""
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from .config import DEFAULT_NB_CHANNELS, MAX_AMPLITUDE
from .errors import AudioError, AudioWarning
from .times import clock

#: Channels the separation keeps; more are dropped (with a warning).
MAX_CHANNELS = DEFAULT_NB_CHANNELS


@dataclass(frozen=True)
class AudioInfo:
    """What ffprobe (or libsndfile, see :func:`probe`) says about the first audio stream of a
    file."""
    path: str
    channels: int
    rate: int
    codec: str
    duration: Optional[float]   # seconds, when the container says
    #: exact number of samples when the container states it in samples (ogg, mp4): decoders
    #: may return the codec's padding after it, which :func:`load` drops
    nb_samples: Optional[int] = None
    #: decoded by libsndfile instead of an ffmpeg process (:data:`SNDFILE_KINDS`)
    sndfile: bool = False


#: Files that libsndfile decodes to exactly the samples ffmpeg gives (plain PCM and float in
#: WAV, AIFF, FLAC): :func:`probe` and :func:`stream` read them in-process, with no ffprobe
#: and ffmpeg programs to start. Anything else goes to ffmpeg.
SNDFILE_KINDS = ({"WAV", "WAVEX", "AIFF", "FLAC"},
                 {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


def tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise AudioError(f"the '{name}' program is needed to read and write audio: install ffmpeg "
                         f"(e.g. apt install ffmpeg / conda install ffmpeg)")
    return exe


#: Characters of a wildcard pattern (an input that names no file but has one is a pattern).
WILDCARDS = "*?["


def is_pattern(path: str) -> bool:
    return any(c in path for c in WILDCARDS)


def _check_input_path(path: str):
    if not os.path.exists(path):
        wildcard = is_pattern(os.path.basename(path))
        raise AudioError(f"{path}: {'matches no file' if wildcard else 'no such file'}")
    if os.path.isdir(path):
        raise AudioError(f"{path}: a folder without audio files")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: the file is empty")


def last_line(text: bytes, path: str = "") -> str:
    """The last line of an ffmpeg error output, without the file name it starts with."""
    lines = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    line = lines[-1] if lines else "unknown error"
    if path and line.startswith(path + ": "):
        line = line[len(path) + 2:]
    return line


def probe(path: str, sndfile: bool = True) -> AudioInfo:
    """Channels, rate, codec and duration of the first audio stream of ``path``: via
    libsndfile for the files of :data:`SNDFILE_KINDS` (unless not ``sndfile``), else
    ffprobe."""
    _check_input_path(path)
    info = _sndfile_info(path) if sndfile else None
    if info is not None:
        return info
    cmd = [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams",
           "-show_format", "-select_streams", "a:0", path]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise AudioError(f"{path}: not an audio file ffmpeg can read "
                         f"({last_line(proc.stderr, path)})")
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


def _sndfile_info(path: str) -> Optional[AudioInfo]:
    """:func:`probe` by libsndfile, or None when the file is not one of :data:`SNDFILE_KINDS`."""
    import soundfile as sf
    try:
        i = sf.info(path)
    except Exception:   # libsndfile cannot open it: ffprobe says what it is
        return None
    formats, subtypes = SNDFILE_KINDS
    if i.format not in formats or i.subtype not in subtypes or i.frames <= 0 \
            or i.channels < 1 or i.samplerate < 1:
        return None
    return AudioInfo(path, i.channels, i.samplerate, f"{i.format.lower()}/{i.subtype.lower()}",
                     i.frames / i.samplerate, i.frames, sndfile=True)


def _sndfile_span(path: str, info: AudioInfo, first: int, count: Optional[int], block: int,
                  where: dict) -> Iterator[np.ndarray]:
    """Frames ``first`` to ``first + count`` (None: the end) of a :data:`SNDFILE_KINDS` file,
    float32 (t, C) blocks; ``where['before']``: frames of the file before the span."""
    import soundfile as sf
    try:
        with sf.SoundFile(path) as f:
            where["before"] = min(first, f.frames)
            if first >= f.frames:
                return
            f.seek(first)
            left = f.frames - first if count is None else count
            while left > 0:
                data = f.read(min(block, left), dtype="float32", always_2d=True)
                if not data.shape[0]:
                    break
                left -= data.shape[0]
                yield data
    except (RuntimeError, sf.SoundFileError) as e:   # LibsndfileError is a RuntimeError
        raise AudioError(f"{path}: libsndfile could not decode it ({e})") from None


def _ffmpeg_span(path: str, info: AudioInfo, first: int, count: Optional[int], block: int,
                 where: dict) -> Iterator[np.ndarray]:
    """:func:`_sndfile_span` by an ffmpeg process, for any file ffmpeg reads."""
    frame = 4 * info.channels
    cmd = [tool("ffmpeg"), "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels), "-ar", str(info.rate),
           "pipe:1"]
    skip, want = first * frame, (None if count is None else count * frame)
    got, rest = 0, b""
    nbytes = max(int(block), 1) * frame
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            while want is None or got < want:
                data = proc.stdout.read(nbytes)
                if not data:
                    break
                if skip:
                    cut = min(skip, len(data))
                    skip -= cut
                    data = data[cut:]
                if want is not None:
                    data = data[:want - got]
                got += len(data)
                data = rest + data
                whole = len(data) // frame * frame
                data, rest = data[:whole], data[whole:]
                if data:
                    yield np.frombuffer(data, dtype="<f4").reshape(-1, info.channels)
        except BaseException:
            proc.kill()
            raise
        finally:
            stopped_early = want is not None and got >= want
            if proc.poll() is None:
                proc.kill()   # the span is read (or the consumer stopped): stop decoding
            proc.stdout.close()
            rc = proc.wait()
            where["before"] = (first * frame - skip) // frame
        if rc != 0 and not stopped_early:
            err.seek(0)
            raise AudioError(f"{path}: ffmpeg could not decode it ({last_line(err.read(), path)})")


def stream(path: str, start: float = 0.0, duration: float = -1.0,
           info: Optional[AudioInfo] = None, block: int = 1 << 16) -> Iterator[np.ndarray]:
    """Decode ``path`` incrementally: yields float32 blocks (t, C) of at most ``block`` frames,
    C = 1 or 2, in order; memory does not grow with the file's length.

    The span is selected sample-accurately from the decoded stream: samples
    ``round(start*rate)`` up to ``round((start+duration)*rate)`` (``duration < 0``: to the end).
    More than two channels: the first two are kept, with an :class:`AudioWarning`.
    Errors (:class:`AudioError`) may come after some blocks were yielded (a file that stops
    decoding half-way), so a consumer must not commit its output before the generator ends.
    """
    info = info or probe(path)
    first = int(round(start * info.rate))
    count = asked = int(round(duration * info.rate)) if duration > 0 else None
    if duration > 0 and count == 0:
        raise AudioError(f"{path}: --duration {duration:g} s is shorter than one sample")
    if info.nb_samples is not None and info.nb_samples > 0:   # drop the codec's end padding
        left = max(info.nb_samples - first, 0)
        count = left if count is None else min(count, left)
    if info.channels > MAX_CHANNELS:
        warnings.warn(f"{path}: has {info.channels} channels; separating the first "
                      f"{MAX_CHANNELS}", AudioWarning, stacklevel=3)
    where = {"before": 0}
    got = 0
    span = _sndfile_span if info.sndfile else _ffmpeg_span
    for raw in span(path, info, first, count, block, where):
        got += raw.shape[0]
        yield _samples(raw, path)
    # the file's length: the container's count, else what was decoded (all of it, when short)
    length = (info.nb_samples or where["before"] + got) / info.rate
    if not got:
        if first > 0:
            raise AudioError(f"{path}: --start {clock(start)} is at or after the end of the "
                             f"audio, which is {clock(length)} long")
        raise AudioError(f"{path}: contains no audio samples")
    if asked is not None and got < asked:
        warnings.warn(f"{path}: the audio is {clock(length)} long, so --start {clock(start)} "
                      f"--duration {clock(duration)} gives only {clock(got / info.rate)}",
                      AudioWarning, stacklevel=3)


def _samples(audio: np.ndarray, path: str) -> np.ndarray:
    """Decoded float32 frames (t, C) -> (t, min(C, MAX_CHANNELS)) float32, checked finite."""
    audio = np.ascontiguousarray(audio[:, :MAX_CHANNELS], dtype=np.float32)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: decoded samples contain NaN or infinity")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > MAX_AMPLITUDE:
        raise AudioError(f"{path}: samples peak at {peak:.3g}, beyond the {MAX_AMPLITUDE:g} "
                         f"this separates (full scale is 1)")
    return audio


