"""Decoding audio files from strangers, in blocks: libsndfile in-process for plain PCM/float
WAV, AIFF and FLAC, the ``ffmpeg`` program for everything else.

:func:`probe` says what a file holds (``ffprobe``, or libsndfile for :data:`SNDFILE_KINDS`);
:func:`stream` decodes a span of it block by block, so memory does not grow with its length.
More than :data:`MAX_CHANNELS` channels: the first ones are kept, with a warning. Errors are
:class:`~xumx.errors.AudioError`, one line naming the file and the cause; what ffprobe, ffmpeg
and libsndfile print is captured (kept for those lines), never passed to the terminal.

A header's length is a claim, not a fact: memory and time follow the samples the decoder
delivers. The claim is a hint for progress (:func:`hint_samples`, dropped when the file is far
too small to hold it) and the measure of a truncation: a file that decodes to less than its
header states, whose decoder reports damage, or an Ogg stream without its last page, is
separated as far as it decodes, with one warning saying how much (docs/reliability.md).
"""
import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

from . import containers
from .config import DEFAULT_NB_CHANNELS, MAX_AMPLITUDE, SAMPLE_RATES
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
    #: exact number of samples when the container states it in samples (ogg, mp4, wav,
    #: flac): decoders may return the codec's padding after it, which :func:`stream` drops. A
    #: claim: a damaged or lying file may decode to fewer
    nb_samples: Optional[int] = None
    #: decoded by libsndfile instead of an ffmpeg process (:data:`SNDFILE_KINDS`)
    sndfile: bool = False
    #: samples a header states when not as an exact count (an mp3's Xing or Info header:
    #: frames less the encoder's delay and padding): for hints and truncation warnings only
    stated: Optional[int] = None
    #: False when the container shows that the file was cut short (an Ogg stream without its
    #: last page)
    whole: bool = True
    #: the file's size in bytes
    size: int = 0


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


#: What a path that is not a regular file is, by its ``stat`` type.
_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input_path(path: str) -> int:
    """The size of the regular, readable, non-empty file ``path``; else AudioError, before
    anything is read (a FIFO or a device is never opened: reading it could block or not end)."""
    try:
        mode = os.stat(path)
    except FileNotFoundError:
        wildcard = is_pattern(os.path.basename(path))
        raise AudioError(f"{path}: {'matches no file' if wildcard else 'no such file'}") from None
    except OSError as e:
        from .files import os_reason
        raise AudioError(f"{path}: cannot read it ({os_reason(e)})") from None
    if stat.S_ISDIR(mode.st_mode):
        raise AudioError(f"{path}: a folder without audio files")
    if not stat.S_ISREG(mode.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode.st_mode)), "")
        raise AudioError(f"{path}: not a regular file" + (f" ({kind})" if kind else ""))
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if mode.st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    return mode.st_size


#: The "[mp3float @ 0x5610431cb540] " tag that ffmpeg puts before a component's messages.
_TAG = re.compile(r"^\[[^\]@]+ @ (0x)?[0-9a-fA-F]+\] ")


def said_lines(text: bytes, path: str = "") -> List[str]:
    """The non-empty lines of an ffmpeg error output, without the component tags and the file
    name they may start with."""
    text = text.decode("utf-8", "replace")
    if path:   # before splitting: the name may hold a newline
        text = text.replace(path + ": ", "")
    return [line for line in (_TAG.sub("", ln.strip()) for ln in text.splitlines()) if line]


def last_line(text: bytes, path: str = "") -> str:
    """The last line of an ffmpeg error output (:func:`said_lines`)."""
    lines = said_lines(text, path)
    return lines[-1] if lines else "unknown error"


def cause(text: bytes, path: str = "") -> str:
    """Why ffmpeg or ffprobe failed, in one line: its first line (the cause, e.g. "moov atom
    not found") and its last (its verdict, e.g. "Invalid data found when processing input")."""
    lines = said_lines(text, path) or ["unknown error"]
    first = lines[0].rstrip(".")
    return first if len(lines) == 1 or lines[0] == lines[-1] else f"{first}; {lines[-1]}"


def probe(path: str, sndfile: bool = True) -> AudioInfo:
    """Channels, rate, codec and duration of the first audio stream of ``path``: via
    libsndfile for the files of :data:`SNDFILE_KINDS` (unless not ``sndfile``), else
    ffprobe."""
    size = check_input_path(path)
    info = _sndfile_info(path, size) if sndfile and containers.sndfile_magic(path) else None
    if info is not None:
        return info
    cmd = [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams",
           "-show_format", "-select_streams", "a:0", path]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise AudioError(f"{path}: not an audio file ffmpeg can read "
                         f"({cause(proc.stderr, path)})")
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
    _check_rate(path, rate)
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
    mp3 = meta.get("format", {}).get("format_name") == "mp3"
    return AudioInfo(path, channels, rate, str(s.get("codec_name", "?")), dur, nb_samples,
                     stated=containers.xing_samples(path) if mp3 else None,
                     whole=containers.ogg_ends(path) is not False, size=size)


def _check_rate(path: str, rate: int):
    low, high = SAMPLE_RATES
    if not low <= rate <= high:
        raise AudioError(f"{path}: a sample rate of {rate} Hz, outside the {low}..{high} Hz "
                         f"of audio files separated")


#: Bytes per sample of libsndfile's subtypes in :data:`SNDFILE_KINDS`.
_SUBTYPE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                  "DOUBLE": 8}


def _sndfile_info(path: str, size: int) -> Optional[AudioInfo]:
    """:func:`probe` by libsndfile, or None when the file is not one of :data:`SNDFILE_KINDS`.
    ``nb_samples``: what the header states (a WAV or AIFF cut short states more frames than
    libsndfile finds in it)."""
    import soundfile as sf
    try:
        i = sf.info(path)
    except Exception:   # libsndfile cannot open it: ffprobe says what it is
        return None
    formats, subtypes = SNDFILE_KINDS
    if i.format not in formats or i.subtype not in subtypes or i.frames <= 0 \
            or i.channels < 1 or i.samplerate < 1:
        return None
    _check_rate(path, i.samplerate)
    stated = containers.stated_frames(path, i.channels * _SUBTYPE_BYTES[i.subtype])
    return AudioInfo(path, i.channels, i.samplerate, f"{i.format.lower()}/{i.subtype.lower()}",
                     i.frames / i.samplerate, max(i.frames, stated or 0), sndfile=True,
                     size=size)


#: The most samples per byte of file a header may claim and still serve as a progress hint
#: (generous: docs/reliability.md); a claim beyond it is a lie (a 12 kB file "of 2^62
#: samples").
MAX_SAMPLES_PER_BYTE = 1 << 14


def hint_samples(info: AudioInfo) -> Optional[int]:
    """The samples the file's header claims (exact or estimated), as a hint for progress and
    plans: None when it does not say, or claims more than :data:`MAX_SAMPLES_PER_BYTE` of its
    size could hold. Never a size to allocate: the decoder may deliver fewer."""
    total = info.nb_samples or info.stated or (int(round(info.duration * info.rate))
                                               if info.duration and info.duration > 0 else None)
    if total is None or (info.size and total > info.size * MAX_SAMPLES_PER_BYTE):
        return None
    return total


#: Bytes of decoded audio handed over at most at a time (a file of many channels gets
#: blocks of fewer frames).
BLOCK_BYTES = 1 << 22


def _block_frames(block: int, channels: int) -> int:
    return max(1, min(int(block), BLOCK_BYTES // (4 * max(channels, 1))))


def _sndfile_span(path: str, info: AudioInfo, first: int, count: Optional[int], block: int,
                  where: dict) -> Iterator[np.ndarray]:
    """Frames ``first`` to ``first + count`` (None: the end) of a :data:`SNDFILE_KINDS` file,
    float32 (t, C) blocks; ``where['before']``: frames of the file before the span;
    ``where['damage']``: what the decoder reported when it went on (or stopped) after an error,
    else None. Where libsndfile stops on an error (it gives up on a FLAC file at the first bad
    frame), ffmpeg decodes the rest (the same samples, lossless), so that every format keeps
    what decodes."""
    import soundfile as sf
    at = first
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
                at += data.shape[0]
                yield data
            return
    except (RuntimeError, sf.SoundFileError):   # LibsndfileError is a RuntimeError
        pass
    rest = None if count is None else count - (at - first)
    yield from _ffmpeg_span(path, info, at, rest, block, where)
    where["before"] = min(first, where["before"])


def _ffmpeg_span(path: str, info: AudioInfo, first: int, count: Optional[int], block: int,
                 where: dict) -> Iterator[np.ndarray]:
    """:func:`_sndfile_span` by an ffmpeg process, for any file ffmpeg reads. ffmpeg's messages
    go to a file: the last line names the cause of a failure (or of the damage it decoded
    past); none reaches the terminal."""
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
        if stopped_early:
            return
        err.seek(0)
        said = err.read()
        if rc != 0 and not got:
            raise AudioError(f"{path}: ffmpeg could not decode it ({cause(said, path)})")
        if rc != 0 or said.strip():   # went on past damage, or stopped after some audio
            lines = said_lines(said, path)
            where["damage"] = lines[0] if lines else f"ffmpeg stopped with status {rc}"


def stream(path: str, start: float = 0.0, duration: float = -1.0,
           info: Optional[AudioInfo] = None, block: int = 1 << 16) -> Iterator[np.ndarray]:
    """Decode ``path`` incrementally: yields float32 blocks (t, C) of at most ``block`` frames
    (fewer for files of many channels: :data:`BLOCK_BYTES`), C = 1 or 2, in order; memory does
    not grow with the file's length, nor with what its header claims.

    The span is selected sample-accurately from the decoded stream: samples
    ``round(start*rate)`` up to ``round((start+duration)*rate)`` (``duration < 0``: to the end).
    More than two channels: the first two are kept, with an :class:`AudioWarning`. A file that
    decodes to less than its header states, or whose decoder reports damage, gives what
    decodes and one :class:`AudioWarning` saying how much (:func:`_warn_if_cut`).
    Errors (:class:`AudioError`) may come after some blocks were yielded (samples that are
    NaN half-way), so a consumer must not commit its output before the generator ends.
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
    where = {"before": 0, "damage": None}
    got = 0
    span = _sndfile_span if info.sndfile else _ffmpeg_span
    with contextlib.closing(span(path, info, first, count,
                                 _block_frames(block, info.channels), where)) as raw:
        for data in raw:
            got += data.shape[0]
            yield _samples(data, path)
    # the file's length: what was decoded, up to where the decoder stopped
    end = where["before"] + got
    if not got:
        length = end if end else (info.nb_samples or 0)
        if first > 0:
            raise AudioError(f"{path}: --start {clock(start)} is at or after the end of the "
                             f"audio, which is {clock(length / info.rate)} long")
        raise AudioError(f"{path}: contains no audio samples" + (
            f" that decode ({where['damage']})" if where["damage"] else ""))
    if asked is None or got < asked:   # the span went to the end of what decodes
        _warn_if_cut(info, end, where["damage"])
    if asked is not None and got < asked:
        warnings.warn(f"{path}: the audio is {clock(end / info.rate)} long, so --start "
                      f"{clock(start)} --duration {clock(duration)} gives only "
                      f"{clock(got / info.rate)}", AudioWarning, stacklevel=3)


def _warn_if_cut(info: AudioInfo, end: int, damage: Optional[str]):
    """One warning when a file that decoded to ``end`` samples is damaged or truncated: less
    than its header states (beyond a tenth of a second: Opus's priming samples are no cut), a
    decoder that reported ``damage``, or an Ogg stream without its last page."""
    stated = info.nb_samples or info.stated
    short = stated is not None and end < stated - max(info.rate // 10, 1)
    if not (short or damage or not info.whole):
        return
    why = damage or ("" if info.whole else "the Ogg stream has no last page")
    warnings.warn(f"{info.path}: damaged or truncated{f' ({why})' if why else ''}: separating "
                  f"the {clock(end / info.rate)} that decode"
                  + (f" (its header states {clock(stated / info.rate)})" if short else ""),
                  AudioWarning, stacklevel=4)


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


