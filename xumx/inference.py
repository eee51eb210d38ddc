"""Separating audio files: decode, resample, chunked separation, resample back, write stems.

Output layout: ``<out_dir>/<input name>/<target>.<ext>`` for one or many inputs, where
``<input name>`` is the input's file name without its extension (``out_dir`` defaults to the
current folder). Inputs with the same name get ``<name>_2``, ``<name>_3``... in the order given.
Every stem has exactly the duration of the selected span of its input, at the input's rate
unless ``OutputConfig.output_rate`` says otherwise.
"""
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import audio as audio_io
from .chunking import chunk_bounds, separate_chunked
from .config import OutputConfig


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
        return (f"{self.input}: {_clock(self.duration)} separated in {self.wall:.1f} s "
                f"({self.realtime_factor:.2f}x real time) -> {folder}/{{{','.join(self.paths)}}}{ext}")


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60.0)
    return f"{int(m)}:{s:06.3f}"


def output_folders(inputs: Sequence[str], out_dir: Optional[str] = None) -> List[str]:
    """The folder of each input's stems (see the module docstring for the rule)."""
    base = out_dir if out_dir else os.curdir
    seen: Dict[str, int] = {}
    folders = []
    for path in inputs:
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "input"
        seen[name] = seen.get(name, 0) + 1
        folders.append(os.path.join(base, name if seen[name] == 1 else f"{name}_{seen[name]}"))
    return folders


def output_rate(options: OutputConfig, input_rate: int, model_rate: int) -> int:
    if options.output_rate == "input":
        return int(input_rate)
    if options.output_rate == "model":
        return int(model_rate)
    return int(options.output_rate)


def separate_audio(separator, audio: np.ndarray, rate: int, options: OutputConfig,
                   model_rate: Optional[int] = None, progress=None) -> Dict[str, np.ndarray]:
    """Separate a decoded mixture.

    Shapes: audio (T, C) float32 at ``rate`` (C = 1 or 2) -> {stem: (T_out, C) float32} with
    T_out = T at the output rate of ``options`` (``output_rate``), i.e. the same duration.
    ``model_rate`` defaults to the separator's. ``progress(1)`` is called per chunk.
    """
    model_rate = int(model_rate or separator.cfg.sample_rate)
    nb = audio.shape[0]
    x = audio_io.resample(audio, rate, model_rate,
                          length=audio_io.resampled_length(nb, rate, model_rate))
    chunk = int(round(options.chunk_dur * model_rate))
    overlap = int(round(options.overlap * model_rate))
    stems = separate_chunked(separator.separate, x, chunk, overlap, progress)
    out_rate = output_rate(options, rate, model_rate)
    length = nb if out_rate == rate else audio_io.resampled_length(nb, rate, out_rate)
    return {name: audio_io.resample(y, model_rate, out_rate, length=length)
            for name, y in stems.items()}


def nb_chunks(nb_samples: int, rate: int, options: OutputConfig, model_rate: int) -> int:
    """How many chunks :func:`separate_audio` will run for ``nb_samples`` at ``rate``."""
    n = audio_io.resampled_length(nb_samples, rate, model_rate)
    return len(chunk_bounds(n, int(round(options.chunk_dur * model_rate)),
                            int(round(options.overlap * model_rate))))


def separate_file(separator, in_path: str, out_folder: str, options: OutputConfig,
                  model_rate: Optional[int] = None) -> FileResult:
    """Separate one file and write its stems to ``out_folder/<stem>.<ext>``.

    The separator (network and weights) is the caller's, built once for all files. A tqdm
    bar over chunks goes to stderr unless ``options.quiet``. All stems of the file appear
    together (temporary names, then renamed). Raises :class:`xumx.audio.AudioError` with a
    one-line message for unreadable inputs and unwritable outputs.
    """
    from tqdm import tqdm
    t0 = time.perf_counter()
    model_rate = int(model_rate or separator.cfg.sample_rate)
    audio, rate, _ = audio_io.load(in_path, options.start, options.duration)
    created = not os.path.isdir(out_folder)
    try:   # before the long part, so that an unusable destination fails fast
        os.makedirs(out_folder, exist_ok=True)
    except OSError as e:
        raise audio_io.AudioError(f"{out_folder}: cannot create the output folder "
                                  f"({e.strerror or e})") from None
    try:
        if not os.access(out_folder, os.W_OK):
            raise audio_io.AudioError(f"{out_folder}: the output folder is not writable")
        total = nb_chunks(audio.shape[0], rate, options, model_rate)
        with tqdm(total=total, desc=os.path.basename(in_path), unit="chunk", file=sys.stderr,
                  disable=options.quiet, leave=False) as bar:
            stems = separate_audio(separator, audio, rate, options, model_rate, bar.update)
        out_rate = output_rate(options, rate, model_rate)
        paths = {name: os.path.join(out_folder, f"{name}.{options.out_format}") for name in stems}
        audio_io.write_stems({paths[n]: y for n, y in stems.items()}, out_rate,
                             options.out_format, options.bits, options.bitrate)
    except BaseException:
        if created and os.path.isdir(out_folder) and not os.listdir(out_folder):
            os.rmdir(out_folder)   # leave no empty folder behind a failed or interrupted file
        raise
    return FileResult(in_path, paths, audio.shape[0] / rate, time.perf_counter() - t0)
