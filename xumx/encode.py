"""Writing stems: wav/flac by libsndfile, mp3 by the ``ffmpeg`` program (LAME), block by block,
every file of a set appearing together (:class:`StemWriter`).

Every file is written to a temporary name in its destination folder and renamed, so an
interrupted run never leaves a truncated file. Clipping policy: integer outputs (wav 16/24-bit,
flac, mp3) cannot hold samples beyond [-1, 1]; such samples are clamped to the range and a
warning says how many. ``float`` wav stores the samples as they are. Errors are
:class:`~xumx.errors.AudioError`, one line naming the file and the cause.
"""
import contextlib
import os
import signal
import subprocess
import tempfile
import warnings
from typing import Dict, Optional

import numpy as np

from . import files
from .config import DEFAULT_BITRATE, DEFAULT_BITS, OutputConfig
from .decode import last_line, tool
from .errors import AudioError, AudioWarning


#: The sample rates an mp3 file can hold (MPEG-1, 2 and 2.5 layer III), in Hz.
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def mp3_rate(rate: int) -> int:
    """The rate mp3 stems of ``rate`` Hz are written at: ``rate`` itself when an mp3 can hold
    it, else the lowest :data:`MP3_RATES` above it (no band is lost), at most 48000 Hz.

    >>> mp3_rate(44100), mp3_rate(12345), mp3_rate(96000)
    (44100, 16000, 48000)
    """
    return next((r for r in MP3_RATES if r >= rate), MP3_RATES[-1])


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
            cmd = [tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar",
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
        line = last_line(self._err.read())
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
