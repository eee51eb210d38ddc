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
import signal
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Iterator, Optional

import numpy as np

from . import files
from .config import (DEFAULT_BITRATE, DEFAULT_BITS, DEFAULT_NB_CHANNELS, MAX_AMPLITUDE,
                     OutputConfig, clock)
from .errors import AudioError, XumxWarning

#: Channels the separation keeps; more are dropped (with a warning).
MAX_CHANNELS = DEFAULT_NB_CHANNELS


class AudioWarning(XumxWarning):
    """Something the user should know about an input or an output (dropped channels, clipping)."""


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
#: and ffmpeg programs to start (about 0.15 s less per file). Anything else goes to ffmpeg.
SNDFILE_KINDS = ({"WAV", "WAVEX", "AIFF", "FLAC"},
                 {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


def _tool(name: str) -> str:
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


def _last_line(text: bytes, path: str = "") -> str:
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
    cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
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
            raise AudioError(f"{path}: ffmpeg could not decode it ({_last_line(err.read(), path)})")


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


def load(path: str, start: float = 0.0, duration: float = -1.0, info: Optional[AudioInfo] = None):
    """Decode ``path`` (or its span ``start``/``duration``) whole; see :func:`stream`.

    Returns (audio (T, C) float32 with C = 1 or 2, rate, info).
    """
    info = info or probe(path)
    audio = np.concatenate(list(stream(path, start, duration, info, block=1 << 18)), axis=0)
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


class StreamResampler:
    """:func:`resample` of a signal that arrives in blocks, with the same result.

    ``push(block (t, C)) -> (t', C)`` returns every output sample whose filter window is
    complete; ``finish(length)`` returns the rest, trimmed or zero-padded so that the whole
    output has ``length`` samples. The concatenated output equals ``resample`` of the whole
    signal (scipy ``resample_poly``: same Kaiser FIR, same zero padding at both ends; each
    output sample is computed from the same input samples and taps). Memory: the block plus
    the filter's span (``20 * max(up, down) / up`` input samples).
    """

    def __init__(self, rate_in: int, rate_out: int):
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, not {rate_in} -> {rate_out}")
        ratio = Fraction(int(rate_out), int(rate_in))
        self.up, self.down = ratio.numerator, ratio.denominator
        self._buf: Optional[np.ndarray] = None   # input from sample self._first on
        self._channels = 1
        self._first = 0          # a multiple of ``down``
        self._seen = 0           # input samples pushed
        self._next = 0           # next output sample to return
        self._done = 0           # output samples returned (after padding/trimming)
        self._h = None

    def _filter(self, dtype) -> np.ndarray:
        """resample_poly's filter, zero-padded in front as it does (and behind, generously)."""
        if self._h is None:
            from scipy.signal import firwin
            half = 10 * max(self.up, self.down)
            h = firwin(2 * half + 1, 1.0 / max(self.up, self.down),
                       window=("kaiser", 5.0)).astype(dtype)
            h *= self.up
            pre = self.down - half % self.down
            self._skip = (half + pre) // self.down   # resample_poly's n_pre_remove
            self._h = np.concatenate([np.zeros(pre, h.dtype), h, np.zeros(2 * self.down, h.dtype)])
        return self._h

    def _emit(self, end: int) -> np.ndarray:
        """Output samples [self._next, end) from the buffered input."""
        from scipy.signal import upfirdn
        up, down, h = self.up, self.down, self._h
        count = max(end - self._next, 0)
        # the earliest input sample output self._next depends on, rounded down to a multiple
        # of ``down`` so that the phase matches the whole-signal computation
        lo = max(-((len(h) - 1 - (self._next + self._skip) * down) // up), 0)
        lo = min(lo, self._seen) // down * down
        assert lo >= self._first
        seg = self._buf[lo - self._first:]
        shift = self._next + self._skip - lo * up // down
        if count and len(seg):
            y = upfirdn(h, seg, up, down, axis=0)[shift:shift + count]
        else:
            y = np.zeros((0,) + self._buf.shape[1:])
        if y.shape[0] < count:   # only at the end, when padding the output to ``length``
            y = np.concatenate([y, np.zeros((count - y.shape[0],) + y.shape[1:], y.dtype)])
        self._next += count
        lo = max(-((len(h) - 1 - (self._next + self._skip) * down) // up), 0)
        lo = min(lo, self._seen) // down * down
        if lo > self._first:   # forget input no future output needs
            self._buf = self._buf[lo - self._first:]
            self._first = lo
        return y

    def push(self, block: np.ndarray) -> np.ndarray:
        """Shapes: block (t, C) -> (t', C) float32 (t' may be 0)."""
        block = np.asarray(block)
        self._seen += block.shape[0]
        self._channels = block.shape[1]
        if self.up == self.down:
            self._next += block.shape[0]
            return np.asarray(block, dtype=np.float32)
        self._filter(block.dtype)
        self._buf = block if self._buf is None else np.concatenate([self._buf, block])
        # output k needs inputs up to floor((k + skip) * down / up)
        end = (self._seen * self.up - 1) // self.down - self._skip + 1
        return np.asarray(self._emit(end), dtype=np.float32)

    def finish(self, length: Optional[int] = None) -> np.ndarray:
        """The remaining output; the whole output then has ``length`` samples (default:
        ceil(T * up / down), as resample_poly; beyond that, zeros). ``length`` cannot be less
        than what was already returned: with different rates ``push`` keeps back the last
        half filter span (at least 10 samples), enough for the rounding of
        :func:`resampled_length`. Shapes: -> (t', C) float32."""
        total = -(-self._seen * self.up // self.down)
        length = total if length is None else int(length)
        if length < self._next:
            raise ValueError(f"{self._next} samples were already returned, more than {length}")
        if self.up == self.down or self._buf is None:
            y = np.zeros((0, self._channels), np.float32)
        else:
            y = self._emit(min(length, total))
        pad = np.zeros((length - self._next, y.shape[1]), np.float32)
        self._next = length
        return np.concatenate([np.asarray(y, dtype=np.float32), pad])


# --------------------------------------------------------------------------- writing
_SUBTYPES = {("wav", "16"): "PCM_16", ("wav", "24"): "PCM_24", ("wav", "float"): "FLOAT",
             ("flac", "16"): "PCM_16", ("flac", "24"): "PCM_24"}


class _ReasonFile:
    """The unbuffered file that soundfile writes through (its virtual I/O), keeping the OS error
    of a failed write: libsndfile reports every failed write as "System error." and drops
    the errno (no space left, file too large, I/O error...)."""

    def __init__(self, path: str):
        self._f = open(path, "r+b", buffering=0)
        self.error: Optional[OSError] = None

    def _call(self, method, *args):
        try:
            return method(*args)
        except OSError as e:   # raised inside a C callback it would be printed and lost
            self.error = self.error or e
        except ValueError:     # closed after a failure: libsndfile gets a failed call
            pass
        return None

    def write(self, data) -> int:
        view, done = memoryview(data), 0
        while done < len(view):
            n = self._call(self._f.write, view[done:])
            if not n:
                break
            done += n
        return done

    def readinto(self, buf) -> int:
        return self._call(self._f.readinto, buf) or 0

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self._call(self._f.seek, offset, whence)
        return -1 if pos is None else pos

    def tell(self) -> int:
        pos = self._call(self._f.tell)
        return -1 if pos is None else pos

    def close(self):
        self._call(self._f.close)


class _Encoder:
    """Writes blocks (t, C) of one file in ``fmt`` to ``tmp``: soundfile for wav/flac, an
    ffmpeg (LAME) process fed raw float32 on a pipe for mp3. ``close()`` completes the file;
    ``abort()`` stops without completing it (the caller removes ``tmp``)."""

    def __init__(self, tmp: str, rate: int, channels: int, fmt: str, bits: str, bitrate: int):
        self.tmp, self._file, self._proc, self._err, self._raw = tmp, None, None, None, None
        if fmt in ("wav", "flac"):
            import soundfile as sf
            if (fmt, bits) not in _SUBTYPES:
                raise AudioError(f"{fmt} cannot store {bits} samples")
            self._raw = _ReasonFile(tmp)
            try:
                with self._os_errors():
                    self._file = sf.SoundFile(self._raw, "w", samplerate=int(rate),
                                              channels=int(channels),
                                              subtype=_SUBTYPES[fmt, bits], format=fmt.upper())
            except BaseException:
                self._raw.close()
                raise
        elif fmt == "mp3":
            cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar",
                   str(rate), "-ac", str(channels), "-i", "pipe:0", "-c:a", "libmp3lame",
                   "-b:a", f"{int(bitrate)}k", "-f", "mp3", tmp]
            self._err = tempfile.TemporaryFile()
            # restore_signals=False: ffmpeg ignores SIGXFSZ as Python does, so a file size
            # limit is a write error it reports ("File too large"), not a kill
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._err, restore_signals=False)
        else:
            raise AudioError(f"unknown output format {fmt!r}")

    def _stop(self):
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._proc.wait()

    def _failed(self) -> AudioError:
        self._stop()
        self._err.seek(0)
        line = _last_line(self._err.read())
        self._err.close()
        if self.tmp in line:   # "Error closing file <tmp>: No space left on device"
            line = line.rsplit(": ", 1)[-1]
        elif line == "unknown error" and self._proc.returncode < 0:
            line = f"ffmpeg was stopped: {signal.strsignal(-self._proc.returncode)}"
        return AudioError(f"cannot write mp3 ({line})")

    @contextlib.contextmanager
    def _os_errors(self):
        """soundfile's errors as the OSError of the failed write, when there was one."""
        try:
            yield
        except Exception:
            if self._raw.error is None:
                raise
        if self._raw.error is not None:
            raise self._raw.error from None

    def write(self, audio: np.ndarray):
        if self._file is not None:
            with self._os_errors():
                self._file.write(audio)
            return
        try:
            self._proc.stdin.write(np.ascontiguousarray(audio, dtype="<f4").tobytes())
        except BrokenPipeError:
            raise self._failed() from None

    def close(self):
        if self._file is not None:
            with self._os_errors():
                self._file.close()
            self._raw.close()
            return
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        # ffmpeg 5 exits with 0 after "Error writing trailer ...: No space left on device":
        # with -v error anything it says is a failure
        if self._proc.wait() != 0 or os.fstat(self._err.fileno()).st_size:
            raise self._failed()
        self._err.close()

    def abort(self):
        if self._raw is not None:
            try:
                if self._file is not None:
                    self._file.close()
            except Exception:   # a failed write is what is being aborted
                pass
            self._raw.close()
        elif self._proc is not None:
            self._stop()
            self._err.close()


@contextlib.contextmanager
def _write_errors(path: str):
    """OSError and soundfile's RuntimeError as a one-line :class:`AudioError` naming ``path``."""
    try:
        yield
    except AudioError as e:   # the mp3 encoder's, which does not know the destination
        raise AudioError(f"{path}: {e}") from None
    except files.WriteError as e:
        raise AudioError(str(e)) from None
    except OSError as e:
        raise AudioError(f"{path}: cannot write ({files.os_reason(e)})") from None
    except RuntimeError as e:   # soundfile's errors other than failed writes
        raise AudioError(f"{path}: cannot write ({e})") from None


class StemWriter:
    """The stem writer: several files written block by block that appear together.

    ``with StemWriter(rate, fmt, bits, bitrate) as w: w.write(path, block (t, C))`` appends
    to ``path``'s temporary file (:class:`xumx.files.Together`, made in its folder at the first
    block); when the block exits normally every file is completed and renamed into place. On
    any exception (KeyboardInterrupt included) the encoders are stopped and every temporary
    file is removed, so no partial stem is left. Integer formats clip to [-1, 1] with one
    warning per file at the end, saying how many samples were clipped (the clipping policy of
    the module docstring).
    """

    def __init__(self, rate: int, fmt: str = OutputConfig.out_format,
                 bits: Optional[str] = OutputConfig.bits, bitrate: Optional[int] = OutputConfig.bitrate):
        """``bits``/``bitrate`` None: their defaults (:class:`~xumx.config.OutputConfig`); the
        one that does not apply to ``fmt`` is ignored (the command line refuses it)."""
        bits, bitrate = bits or DEFAULT_BITS, bitrate or DEFAULT_BITRATE
        self.rate, self.fmt, self.bits, self.bitrate = int(rate), fmt, bits, bitrate
        self._integer = not (fmt == "wav" and bits == "float")
        self._together = None
        self._open: Dict[str, list] = {}   # path -> [encoder, clipped, peak]

    def __enter__(self) -> "StemWriter":
        self._together = files.Together().__enter__()
        return self

    def write(self, path: str, audio: np.ndarray):
        audio = np.asarray(audio, dtype=np.float32)
        if path not in self._open:
            entry = [None, 0, 0.0]
            self._open[path] = entry
            with _write_errors(path):
                tmp = self._together.temporary(path)
                entry[0] = _Encoder(tmp, self.rate, audio.shape[1], self.fmt, self.bits,
                                    self.bitrate)
        entry = self._open[path]
        if self._integer and audio.size:
            over = int(np.count_nonzero(np.abs(audio) > 1.0))
            if over:
                entry[1] += over
                entry[2] = max(entry[2], float(np.max(np.abs(audio))))
                audio = np.clip(audio, -1.0, 1.0)
        with _write_errors(path):
            entry[0].write(audio)

    def __exit__(self, kind, value, tb):
        complete = False
        try:
            if kind is None:
                for path, (enc, over, peak) in self._open.items():
                    with _write_errors(path):
                        enc.close()
                    if over:
                        warnings.warn(f"{path}: {over} samples beyond [-1, 1] (peak {peak:.3f}) "
                                      f"were clipped; use --bits float for unclipped output",
                                      AudioWarning, stacklevel=2)
                complete = True
        finally:
            for enc, *_rest in self._open.values():
                if enc is not None:
                    enc.abort()
            if complete:   # every file renamed into place
                with _write_errors("stems"):
                    self._together.__exit__(None, None, None)
            else:          # every temporary removed
                self._together.__exit__(RuntimeError, None, None)
        return False


def write_stems(paths_audio: Dict[str, np.ndarray], rate: int, fmt: str = OutputConfig.out_format,
                bits: Optional[str] = OutputConfig.bits,
                bitrate: Optional[int] = OutputConfig.bitrate):
    """Write whole signals with :class:`StemWriter`: {destination path: audio (T, C) float},
    all appearing together."""
    with StemWriter(rate, fmt, bits, bitrate) as writer:
        for path, audio in paths_audio.items():
            writer.write(path, audio)


def write(path: str, audio: np.ndarray, rate: int, fmt: str = OutputConfig.out_format,
          bits: Optional[str] = OutputConfig.bits, bitrate: Optional[int] = OutputConfig.bitrate):
    """Write one file atomically (:func:`write_stems`). Shapes: audio (T, C)."""
    write_stems({path: audio}, rate, fmt, bits, bitrate)
