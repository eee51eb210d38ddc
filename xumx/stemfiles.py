"""Audio files in and stems out, for ``python -m xumx.test`` and :meth:`xumx.Separator.separate_file`.

What the inputs of a command line name (:func:`expand_inputs`), where each input's stems go
(:func:`output_folders`), and separating one file in bounded memory (:func:`separate_file`:
decoded, separated and encoded block by block).

Output layout: ``<out_dir>/<input name>/<stem>.<ext>`` for one or many inputs, where
``<input name>`` is the input's file name without its extension, or the track's folder name
for a MUSDB-layout ``<track>/mixture.<ext>`` (``out_dir`` defaults to the current folder).
Inputs of one run with the same name (names that differ only in case included) get
``<name>_2``, ``<name>_3``... in the order given, skipping a name another input has.
Every stem has exactly the duration of the selected span of its input, at the input's rate
unless ``OutputConfig.output_rate`` says otherwise (or mp3 cannot hold that rate:
:func:`output_rate`). A folder holds the stems of one run: once
the new stems are in place, the stems an earlier run left there that this one did not write
(other targets, another format) are removed (:func:`stale_stems`); any other file stays.
"""
import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import decode, files, interrupt
from .config import OutputConfig
from .errors import AudioError, AudioWarning, one_line
from .times import clock

#: The mixture's file name in the MUSDB18 layout (its stems are named after the track).
MIXTURE = "mixture"
#: MUSDB18's stem files are ``<track>.stem.mp4``: the stems' folder is ``<track>``, as in eval.
STEM_SUFFIX = ".stem"


@dataclass(frozen=True)
class FileResult:
    """What :func:`separate_file` did for one input."""
    input: str
    paths: Dict[str, str]      # {stem name: written path}
    duration: float            # seconds of audio separated
    wall: float                # seconds it took

    @property
    def realtime_factor(self) -> float:
        """Wall time over audio duration (below 1: faster than real time)."""
        return self.wall / self.duration if self.duration else float("inf")

    def summary(self) -> str:
        first = next(iter(self.paths.values()), "?")
        folder, ext = os.path.dirname(first), os.path.splitext(first)[1]
        names = ",".join(self.paths)
        stems = names if len(self.paths) == 1 else f"{{{names}}}"
        return (f"{self.input}: {clock(self.duration)} separated in {self.wall:.1f} s "
                f"({self.realtime_factor:.2f}x real time) -> {folder}/{stems}{ext}")


#: File name endings taken from a folder given as an input (:func:`expand_inputs`).
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".aac", ".aif",
                    ".aiff", ".wma", ".webm", ".mka")


#: The input that means standard input (``cat song.mp3 | python -m xumx.test -``), and the
#: name of its stems' folder.
STDIN, STDIN_NAME = "-", "stdin"


def folder_audio(folder: str, recursive: bool = False) -> List[str]:
    """The audio files of ``folder`` (:data:`AUDIO_EXTENSIONS`), sorted by name; a MUSDB-layout
    track folder as its ``mixture`` file. ``recursive``: then those of its sub-folders, each
    sub-folder in name order after the folder's own files."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return []
    names = [n for n in entries if n.lower().endswith(AUDIO_EXTENSIONS)
             and os.path.isfile(os.path.join(folder, n))]
    mixture = [n for n in names if os.path.splitext(n)[0] == MIXTURE]
    out = [os.path.join(folder, n) for n in (mixture[:1] or names)]
    if recursive:
        for n in entries:
            sub = os.path.join(folder, n)
            if os.path.isdir(sub) and not os.path.islink(sub):   # no cycle through a link
                out += folder_audio(sub, True)
    return out


def expand_inputs(inputs: Sequence[str], recursive: bool = False) -> List[str]:
    """The files that ``inputs`` name, in order: a file as it is; a folder as its audio files
    (:func:`folder_audio`: its sub-folders' too with ``recursive``); a wildcard pattern that
    names no file as the files it matches, sorted (``'songs/*.mp3'``, quoted so that no shell
    expanded it); :data:`STDIN` as it is. A folder without audio files and a pattern that
    matches nothing stay as they are: each is then one failed input (:func:`check_input` says
    which), and the others are still separated."""
    import glob
    out: List[str] = []
    for item in inputs:
        found: List[str] = []
        if os.path.isdir(item):
            found = folder_audio(item, recursive)
        elif item != STDIN and not os.path.exists(item) and decode.is_pattern(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
        out += found or [item]
    return out


def check_input(path: str) -> None:
    """Raise AudioError (one line) for an input that cannot be separated, as far as the file
    system says (no such file, a folder without audio files, an empty file...), before any
    model is loaded; :data:`STDIN` is checked when it is read."""
    if path == STDIN:
        return
    if os.path.isdir(path):
        below = len(folder_audio(path, recursive=True))
        raise AudioError(f"{path}: a folder without audio files" + (
            f" (its sub-folders hold {below}: add --recursive)" if below else ""))
    decode.check_input_path(path)


def output_folders(inputs: Sequence[str], out_dir: Optional[str] = None) -> List[str]:
    """The folder of each input's stems (see the module docstring for the rule)."""
    base = out_dir if out_dir else os.curdir
    taken = set()
    folders = []
    for path in inputs:
        name = candidate = input_name(path)
        number = 1
        while candidate.casefold() in taken:   # "Song" and "song" are one folder on macOS
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate.casefold())
        folders.append(os.path.join(base, candidate))
    return folders


def input_name(path: str) -> str:
    """The name of an input's stems folder: the file name without its extension, or for a
    MUSDB-layout ``<track>/mixture.<ext>`` the track's folder name (:data:`STDIN_NAME` for
    standard input)."""
    if path == STDIN:
        return STDIN_NAME
    path = os.path.normpath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    if name.lower().endswith(STEM_SUFFIX) and len(name) > len(STEM_SUFFIX):   # x.stem.mp4
        name = name[:-len(STEM_SUFFIX)]
    if name == MIXTURE and os.path.basename(os.path.dirname(os.path.abspath(path))):
        name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return name or "input"


def output_rate(options: OutputConfig, input_rate: int, model_rate: int) -> int:
    """The stems' rate: ``options.output_rate`` ('input', 'model' or Hz); for mp3 stems a rate
    an mp3 holds (:func:`xumx.encode.mp3_rate`), with a warning when that changes it."""
    import warnings
    from .encode import mp3_rate
    if options.output_rate == "input":
        rate = int(input_rate)
    elif options.output_rate == "model":
        rate = int(model_rate)
    else:
        rate = int(options.output_rate)
    if options.out_format == "mp3" and mp3_rate(rate) != rate:
        warnings.warn(f"mp3 cannot hold {rate} Hz: the stems are written at {mp3_rate(rate)} Hz "
                      f"(wav and flac keep any rate)", AudioWarning, stacklevel=2)
        rate = mp3_rate(rate)
    return rate


#: frames decoded at a time by :func:`separate_file` (about 1.5 s at 44.1 kHz)
DECODE_BLOCK = 1 << 16


def _expected_samples(info, options: OutputConfig) -> Optional[int]:
    """Samples of the selected span as far as the container says, for the progress bar only
    (:func:`xumx.decode.hint_samples`: a claim the file's size cannot hold is no hint)."""
    total = decode.hint_samples(info)
    if total is None:
        return None
    left = max(total - int(round(options.start * info.rate)), 0)
    return min(left, int(round(options.duration * info.rate))) if options.duration > 0 else left


def stale_stems(folder: str, written: Iterable[str], names: Iterable[str]) -> List[str]:
    """The files of ``folder`` named like a stem, ``<name>.<format>`` for one of ``names`` and
    of :data:`xumx.config.OUTPUT_FORMATS`, that are not among ``written``: an earlier run's."""
    from .config import OUTPUT_FORMATS
    keep = {os.path.normcase(os.path.abspath(p)) for p in written}
    out = []
    for name in dict.fromkeys(names):
        for ext in OUTPUT_FORMATS:
            path = os.path.join(folder, f"{name}.{ext}")
            if os.path.isfile(path) and os.path.normcase(os.path.abspath(path)) not in keep:
                out.append(path)
    return out


def _remove_stale(folder: str, written: Iterable[str], names: Iterable[str]):
    import warnings
    for path in stale_stems(folder, written, names):
        try:
            os.unlink(path)
        except OSError as e:
            from .files import os_reason
            warnings.warn(f"{path}: an earlier run's stem, not removed ({os_reason(e)})",
                          AudioWarning, stacklevel=3)


class WriteBehind:
    """``writer.write(path, block)`` calls run in order on one background thread, so encoding
    and writing stems overlap the next chunk's separation. An error of a write is raised by a
    later :meth:`write` or on leaving the block; on leaving (normally or not) no write runs
    any more, so the writer's own exit (commit, or removal of its temporaries) comes after
    the last write. At most ``pending`` writes wait (bounded memory)."""

    def __init__(self, writer, pending: int = 8):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        self.writer, self.limit = writer, pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="xumx-write")
        self._pending = deque()

    def write(self, path: str, block: np.ndarray):
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.limit):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self.writer.write, path, block))

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, kind, value, tb):
        try:
            while kind is None and self._pending:
                self._pending.popleft().result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
        return False


@contextlib.contextmanager
def stdin_file() -> Iterator[str]:
    """Standard input copied to a temporary file (removed on leaving): ffmpeg needs to seek in
    most containers, so a pipe is read whole first. AudioError when it is a terminal."""
    import shutil
    import sys
    import tempfile
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None or stream.closed or stream.isatty():
        raise AudioError(f"{STDIN}: standard input is a terminal or closed: pipe the audio in "
                         f"(cat song.mp3 | python -m xumx.test -)")
    fd, path = tempfile.mkstemp(prefix="xumx-stdin-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        yield path
    finally:
        os.unlink(path)


def separate_file(separator, in_path: str, out_folder: str, options: OutputConfig) -> FileResult:
    """Separate one file with ``separator`` (its settings and chunking) and write its stems to
    ``out_folder/<stem>.<ext>``, in bounded memory: :func:`separate_files` of one input, its
    error raised as it is.

    The file is decoded, resampled, separated, resampled back and encoded block by block
    (:meth:`xumx.Separator.separate_streams`, :class:`xumx.encode.StemWriter`): memory does not
    grow with its length. A bar over chunks goes to stderr when it is a terminal, unless
    ``options.quiet`` (:func:`xumx.progress.progress_bar`). All stems of the file appear
    together (temporary names, then renamed), and none on an error or an interruption; then
    the stems an earlier run left in ``out_folder`` that this one did not write are removed
    (:func:`stale_stems`). Raises :class:`~xumx.errors.AudioError` with a one-line message for
    unreadable inputs and unwritable outputs.
    """
    from .chunking import one_stream
    with contextlib.closing(separate_files(separator, [(in_path, out_folder)], options)) as done:
        return next(one_stream(done))


def separate_files(separator, jobs: Sequence, options: OutputConfig) -> Iterator:
    """Separate the inputs of ``jobs`` ``[(input path, its stems' folder)]`` as
    :func:`separate_file` does each, their chunks sharing the network's runs as the
    separator's ``chunking.batch_frames`` allows (:meth:`xumx.Separator.separate_streams`:
    0, the default, is one chunk at a time, each input finished before the next is opened).

    Yields ``(input, FileResult or Exception)`` per input, in order. Each input has its own
    decoder, output folder, stem writer and commit, and its own failure: an input that cannot
    be read or written yields its Exception (its stems not written, no folder made for it left
    behind) and the others go on; an error of a network run fails the inputs with chunks in
    that batch. An interruption (or leaving the generator early) drops every input not
    finished, as :func:`separate_file` does. Memory: the chunks of one batch (at most
    ``batch_frames`` STFT frames, or one chunk) and, for each input with chunks in it, its
    decoder's next block, its overlap and its writer's queue (:class:`WriteBehind`); the
    next input is opened only when the batch has room for its chunks.
    """
    songs = [_Song(separator, path, folder, options) for path, folder in jobs]

    def streams():
        for song in songs:
            yield song.stream()

    try:
        for s, what in separator.separate_streams(streams()):
            song = songs[s]
            if song is None:   # failed already: the rest of its stream is dropped
                continue
            try:
                if isinstance(what, Exception):
                    raise what
                elif what is None:
                    song.finish()
                else:
                    song.write(what)
                    continue
            except Exception as e:   # this input fails, the others go on
                song.abort(e)
            songs[s] = None   # its result (an error's traceback too) is not held after
            yield song.path, song.result
            del song
    except BaseException as e:   # an interruption: no input half-written
        for song in songs:
            if song is not None and song.result is None:
                song.abort(e)
        raise


class _Song:
    """One input of :func:`separate_files` on its way: :meth:`open` (when the separation first
    needs its audio) decodes its first block, makes its folder and opens its stem writer;
    its pieces are written as they come (:meth:`write`), then the stems are committed
    together (:meth:`finish`) or none are written (:meth:`abort`). ``result``: None while it
    is open, then its FileResult or the Exception that failed it.

    The per-input seams (where tests plant a fault, an interrupt or a record of which input
    ran): :meth:`open`, called once per input (by :meth:`stream`) in the inputs' order, the
    next input's only after the one before is finished when ``batch_frames`` is 0; and
    :meth:`finish`, called once per input separated, after its last piece. What either
    raises is what the input's separation raised: an Exception is the input's ``result``
    (the others go on), an interrupt ends :func:`separate_files` with every input not
    finished dropped."""

    def __init__(self, separator, path: str, folder: str, options: OutputConfig):
        self.separator, self.path, self.folder, self.options = separator, path, folder, options
        self.result: Union[None, FileResult, BaseException] = None
        self.stack = contextlib.ExitStack()   # what open() opened: closed by finish or abort
        self.created: List[str] = []          # the folders made for it (gone if it fails)
        self.paths: Dict[str, str] = {}       # {stem name: its path}, as first written
        self.writer: Optional[WriteBehind] = None   # of its stems, once opened
        self.counted = 0                      # frames decoded so far (at the input's rate)
        self.rate = 0                         # the input's rate, once its first block is read
        self.t0 = 0.0                         # time.perf_counter() when it was opened

    def stream(self):
        """-> ``(blocks, rate, out_rate, progress, total)`` for
        :meth:`xumx.Separator.separate_streams`: :meth:`open`'s, or for an input that cannot
        be opened blocks that raise its error (what it opened is closed by then)."""
        try:
            return self.open()
        except Exception as e:   # its error comes in its turn
            self._close(e)
            model_rate = self.separator.sample_rate
            return self._failed(e), model_rate, model_rate, None, None

    def open(self):
        """Decode the first block, make the folder, open the stem writer: -> ``(blocks, rate,
        out_rate, progress, total)``; raises the input's error (what it opened is left for
        :meth:`_close`)."""
        self.t0 = time.perf_counter()
        model_rate, options = self.separator.sample_rate, self.options
        path, info, decoded, first = self._decode()
        self._make_folder()   # before the long part: an unusable destination fails fast
        expected = _expected_samples(info, options)
        total = self.separator.nb_chunks(expected, self.rate) if expected else None
        out_rate = output_rate(options, self.rate, model_rate)
        progress = self._open_writer(os.path.basename(path), total, out_rate)
        return self._blocks(first, decoded), self.rate, out_rate, progress, total

    def _decode(self):
        """-> (the path read, its :func:`xumx.decode.probe`, its decoder, its first block);
        an unreadable input fails here, before any folder is made. Standard input is read
        into a temporary file first (:func:`stdin_file`)."""
        path = self.stack.enter_context(stdin_file()) if self.path == STDIN else self.path
        info = decode.probe(path)
        decoded = self.stack.enter_context(contextlib.closing(
            decode.stream(path, self.options.start, self.options.duration, info, DECODE_BLOCK)))
        first = next(decoded)
        self.counted, self.rate = first.shape[0], info.rate
        return path, info, decoded, first

    def _make_folder(self):
        """Make the stems' folder (and ``--out-dir``'s own, remembered in ``created``);
        AudioError when it cannot be made or written to."""
        folder = self.folder
        self.created = files.missing_folders(folder)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise AudioError(f"{folder}: cannot create the output folder "
                             f"({e.strerror or e})") from None
        if not os.access(folder, os.W_OK):
            raise AudioError(f"{folder}: the output folder is not writable")

    def _open_writer(self, name: str, total: Optional[int], out_rate: int):
        """Open the progress bar over ``total`` chunks (labelled ``name``) and the stems'
        writer (:class:`WriteBehind` of a :class:`xumx.encode.StemWriter` at ``out_rate``);
        -> the per-chunk progress callback, which also re-raises an interrupt that a
        finaliser swallowed (:func:`xumx.interrupt.check`)."""
        from .encode import StemWriter
        from .progress import progress_bar
        options = self.options
        bar = self.stack.enter_context(progress_bar(total, one_line(name), options.quiet,
                                                    "chunk", leave=False, lines=False))
        stems = self.stack.enter_context(StemWriter(out_rate, options.out_format,
                                                    options.bits, options.bitrate))
        self.writer = self.stack.enter_context(WriteBehind(stems))

        def progress(done, of):
            interrupt.check()
            bar.update(1)
        return progress

    def _blocks(self, first, decoded):
        yield first
        while self.result is None:   # a failed input is read no further (its decoder closed)
            block = next(decoded, None)
            if block is None:
                return
            self.counted += block.shape[0]
            yield block
        raise self.result

    @staticmethod
    def _failed(error):
        raise error
        yield   # a generator: it raises when its first block is asked for

    def write(self, piece: Dict[str, np.ndarray]):
        for name, y in piece.items():
            self.paths.setdefault(name, os.path.join(self.folder,
                                                     f"{name}.{self.options.out_format}"))
            self.writer.write(self.paths[name], y)

    def finish(self):
        """Commit the stems together (the writes done), remove an earlier run's stale stems
        and set ``result`` to the FileResult."""
        self.stack.close()
        _remove_stale(self.folder, self.paths.values(), self.separator.stem_names)
        self.result = self._file_result()

    def _file_result(self) -> FileResult:
        """What was done: the input's name, its stems' paths, the seconds decoded and the
        wall time since :meth:`open`."""
        return FileResult(STDIN_NAME if self.path == STDIN else self.path, self.paths,
                          self.counted / self.rate, time.perf_counter() - self.t0)

    def abort(self, error: BaseException):
        self.result = error
        self._close(error)

    def _close(self, error: BaseException):
        try:
            self.stack.__exit__(type(error), error, error.__traceback__)
        finally:
            files.remove_empty(self.created)   # no empty folder behind a failed input
