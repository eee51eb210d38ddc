"""The Separator: a model loaded once, and every way of separating with it.

    sep = Separator.load()                       # the published weights, on the CPU
    stems = sep.separate(audio, rate=48000)      # {'bass': (T, 2), 'drums': ..., ...}
    paths = sep.separate_file("song.mp3", "out") # out/song/{bass,drums,vocals,other}.wav

One path does the work: audio at any rate is resampled to the model's rate block by block, cut
into chunks that overlap and are cross-faded (:mod:`xumx.chunking`), each chunk is separated
(STFT, the network, the Wiener filter, the inverse STFT) and the stems are resampled back
(:meth:`Separator.separate_blocks`). Arrays (:meth:`~Separator.separate`), files
(:meth:`~Separator.separate_file`, what ``python -m xumx.test`` runs) and the function API
(:mod:`xumx.api`) all take it, so they give the same stems for the same settings; memory
follows the chunk, not the song.
"""
import dataclasses
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import dsp, heap
from .chunking import nb_chunks, one_stream, separate_streams
from .config import PRECISIONS, ChunkConfig, ModelConfig, OutputConfig, SeparationConfig
from .errors import ConfigError, InputError, TargetError
from .filtering import wiener_blocks
from .modelfiles import ModelFiles
from .resample import StreamResampler, ratio, resampled_length
from .threads import single_thread_blas
from .waveform import BLOCK, audio_rate, check_audio, to_float

#: 'onnxruntime' (also 'auto'): the separation engine. 'nnabla': the NNabla graph, the
#: reference (it needs nnabla: :mod:`xumx.training.reference`).
BACKENDS = ("auto", "onnxruntime", "nnabla")
#: The residual stem's name (``residual_model``).
RESIDUAL = "residual"
MAGNITUDE_BLOCK = 128   # STFT frames made at once for the network's input
#: The settings :meth:`Separator.load` and :meth:`Separator.with_settings` take by name.
SETTINGS = tuple(f.name for f in dataclasses.fields(SeparationConfig)) + \
    tuple(f.name for f in dataclasses.fields(ChunkConfig))

Progress = Callable[[int, Optional[int]], None]


def settings_of(separation: SeparationConfig, chunking: ChunkConfig,
                settings: dict) -> Tuple[SeparationConfig, ChunkConfig]:
    """``separation`` and ``chunking`` with the named ``settings`` changed (TypeError for a
    name that is not one of :data:`SETTINGS`; ConfigError for a bad value)."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; the settings are {', '.join(SETTINGS)}")
    sep = {k: v for k, v in settings.items() if hasattr(separation, k)}
    chunk = {k: v for k, v in settings.items() if hasattr(chunking, k)}
    return dataclasses.replace(separation, **sep), dataclasses.replace(chunking, **chunk)


def needed_sources(separation: SeparationConfig) -> Optional[Tuple[str, ...]]:
    """The sources a separation needs from the network: its targets and the sources of its
    aggregate stems, in that order (None: every source)."""
    if separation.targets is None:
        return None
    out = list(separation.targets)
    for _, parts in separation.aggregate or ():
        out += [s for s in parts if s not in out]
    return tuple(out)


def stem_plan(sources: Sequence[str], separation: SeparationConfig) -> List[Tuple[str, Tuple[int, ...]]]:
    """[(stem name, indices of the estimates it sums)] in the order :meth:`Separator.separate`
    returns them: the targets (or every source), 'residual' with ``residual_model``, then the
    aggregate stems. The estimates are the sources, then the residual. Raises TargetError (an
    InputError) for a target or aggregate source the model does not have, or a stem name given twice."""
    sources = list(sources)
    targets = list(separation.targets or sources)
    unknown = [t for t in targets if t not in sources]
    unknown += [s for _, parts in separation.aggregate or () for s in parts if s not in sources]
    if unknown:
        raise TargetError(f"unknown target(s) {sorted(set(unknown), key=unknown.index)}: the "
                         f"model separates {sources}")
    plan = [(t, (sources.index(t),)) for t in targets]
    if separation.residual_model:
        plan.append((RESIDUAL, (len(sources),)))
    plan += [(name, tuple(sources.index(s) for s in parts))
             for name, parts in separation.aggregate or ()]
    names = [name for name, _ in plan]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"stem name(s) {repeated} given twice (targets, residual and "
                         f"aggregate stems must have different names)")
    return plan


class Separator:
    """Separates mixtures into the stems of one model (see the module docstring).

    Make one with :meth:`load`. The constructor takes a loaded network directly (``net``: an
    object with ``cfg``, a :class:`~xumx.config.ModelConfig`, and ``masks(mag)``, mapping
    magnitudes (N, C, F) to masks (S, N, C, F): :class:`xumx.engine.OnnxNet` or
    :class:`xumx.training.reference.NnablaNet`), for tests and tools that hold parameters in
    memory; its ``precision`` (float32 where it has none) must be ``separation.precision``
    (ConfigError).

    Attributes: ``sources`` (the model's sources), ``stems`` (the names :meth:`separate`
    returns, in order), ``sample_rate`` (the rate the network runs at; audio at other rates is
    resampled to it and back), ``device``, ``model`` (its :class:`~xumx.modelfiles.ModelFiles`,
    None for a network from memory), ``separation`` and ``chunking`` (the settings).
    """

    def __init__(self, net, model: Optional[ModelFiles] = None,
                 separation: SeparationConfig = SeparationConfig(),
                 chunking: ChunkConfig = ChunkConfig(), sample_rate: Optional[int] = None):
        self.net = net
        self.model = model
        self.cfg: ModelConfig = net.cfg if not sample_rate else \
            dataclasses.replace(net.cfg, sample_rate=int(sample_rate))
        self.separation = separation
        self.chunking = chunking
        loaded = getattr(net, "precision", PRECISIONS[0])
        if loaded != separation.precision:
            raise ConfigError(f"the network was loaded in {loaded} and the settings ask for "
                              f"{separation.precision}: load it in that precision "
                              f"(Separator.load(..., precision={separation.precision!r}))")
        self._plan = stem_plan(self.cfg.sources, separation)

    # ------------------------------------------------------------------ making one
    @classmethod
    def load(cls, model=None, device="cpu", *, umx: Optional[bool] = None,
             sample_rate: Optional[int] = None, backend: str = "onnxruntime",
             threads: Optional[int] = None, quiet: bool = True, **settings) -> "Separator":
        """A Separator for ``model`` on ``device``.

        Args:
            model: an X-UMX weights file (``.h5``), a training run's folder (its
                ``best_xumx.h5``), an Open-Unmix folder of ``<target>.h5`` files (``umx``:
                True/False forces the reading), a :class:`~xumx.modelfiles.ModelFiles`, or None
                for the published weights (downloaded once into the cache; a byte bar on stderr
                unless ``quiet``).
            device: "cpu", "cuda", "cuda:1" (:func:`xumx.engine.parse_device`; "cudnn" means
                "cuda"). A GPU that cannot be used raises EngineError, never a silent CPU run.
            sample_rate: the rate the model runs at, for weights without a sidecar that were
                trained at another rate (a rate contradicting the sidecar is a ConfigError).
            backend: "onnxruntime" (the engine) or "nnabla" (the reference NNabla graph;
                needs nnabla).
            threads: onnxruntime's CPU threads (None: the cores other work leaves free).
            **settings: :data:`SETTINGS`: targets, niter, softmask, alpha, residual_model,
                aggregate, precision (:class:`~xumx.config.SeparationConfig`; precision
                "int8" builds the network's int8 graph, onnxruntime only), chunk_dur, overlap
                and batch_frames (:class:`~xumx.config.ChunkConfig`).

        Each failure is one :class:`~xumx.errors.XumxError` line: DownloadError, WeightsError
        ("cannot load the model: <path>: <why>"), EngineError, NnablaMissing, InputError (a
        target the model does not have), ConfigError.
        """
        from .engine import parse_device
        from .weights import cannot_load
        separation, chunking = settings_of(SeparationConfig(), ChunkConfig(), settings)
        where = parse_device(device)
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if backend == "nnabla" and separation.precision != PRECISIONS[0]:
            raise ConfigError(f"precision {separation.precision} needs the onnxruntime backend "
                              f"(the NNabla reference runs in {PRECISIONS[0]})")
        files = model if isinstance(model, ModelFiles) else \
            ModelFiles.resolve(model, umx, needed_sources(separation), quiet)
        with cannot_load(files.path):
            if backend == "nnabla":
                from .training.reference import NnablaNet
                net = NnablaNet.load(files, where)
            else:
                from .modelcache import load_net
                net = load_net(files, where, threads, separation.precision)
        if sample_rate and int(sample_rate) != int(net.cfg.sample_rate):
            stated = files.stated_rate()
            if stated:
                raise ConfigError(f"--sample-rate {sample_rate} contradicts the model: "
                                  f"{files.path} was trained at {stated} Hz (its sidecar says "
                                  f"so); leave --sample-rate out, audio at any rate is "
                                  f"resampled to the model's")
        return cls(net, files, separation, chunking, sample_rate)

    def with_settings(self, **settings) -> "Separator":
        """A Separator sharing this one's loaded network, with some :data:`SETTINGS` changed
        (not ``precision``, which needs another network: :meth:`load`; ConfigError)."""
        separation, chunking = settings_of(self.separation, self.chunking, settings)
        return Separator(self.net, self.model, separation, chunking, self.cfg.sample_rate)

    # ------------------------------------------------------------------ what it gives
    @property
    def sources(self) -> Tuple[str, ...]:
        return tuple(self.cfg.sources)

    @property
    def stems(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self._plan)

    @property
    def stem_names(self) -> Tuple[str, ...]:
        """Every name a stem of this model may have: its sources, the residual and the
        aggregate stems of these settings (an earlier run's stems in a folder have these)."""
        return tuple(dict.fromkeys(self.sources + (RESIDUAL,) + self.stems))

    @property
    def targets(self) -> Tuple[str, ...]:
        """The model's sources that are returned as they are (the targets asked for)."""
        return tuple(self.separation.targets or self.cfg.sources)

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def device(self):
        return self.net.device

    # ------------------------------------------------------------------ separating
    def separate(self, audio: np.ndarray, rate: Optional[int] = None,
                 progress: Optional[Progress] = None) -> Dict[str, np.ndarray]:
        """Separate a whole signal of any length.

        Shapes: audio (T, C) with C = 1 or 2, or (T,) for mono, float around [-1, 1] or
        integer samples (scaled by their type's full scale), at ``rate`` Hz (default: the
        model's) -> {stem: (T, C) float32} at ``rate``, for each of :attr:`stems` ((T,) for
        1-D input). ``progress(done, total)`` is called after each chunk. Memory: the input, the
        stems and one chunk's work.
        """
        audio, mono = check_audio(audio)
        rate = self.sample_rate if rate is None else audio_rate(rate)
        total = audio.shape[0]
        blocks = (to_float(audio[i:i + BLOCK]) for i in range(0, total, BLOCK))
        out: Dict[str, np.ndarray] = {}
        done = 0
        for piece in self.separate_blocks(blocks, rate, rate, progress,
                                          self.nb_chunks(total, rate)):
            length = next(iter(piece.values())).shape[0] if piece else 0
            for name in list(piece):   # each stem's piece let go once copied, and its memory
                y = piece.pop(name)    # handed back (glibc would keep it in its heap): the
                if name not in out:    # stems' pages are taken as the pieces are copied
                    out[name] = np.empty((total,) + y.shape[1:], np.float32)
                out[name][done:done + length] = y
                del y
                heap.trim()
            done += length
        if done != total:   # the pieces always add up to the input's length
            raise AssertionError(f"separated {done} samples of {total}")
        return {name: y[:, 0] if mono else y for name, y in out.items()}

    __call__ = separate

    def separate_file(self, path: str, out_dir: Optional[str] = None, *,
                      format: str = OutputConfig.out_format, bits: Optional[str] = None,
                      bitrate: Optional[int] = None, start: float = 0.0,
                      duration: Optional[float] = None,
                      output_rate=OutputConfig.output_rate, quiet: bool = True) -> Dict[str, str]:
        """Separate an audio file and write its stems, as ``python -m xumx.test`` does:
        ``<out_dir>/<input name>/<stem>.<format>`` (``out_dir`` default: the current folder).
        ``format`` 'wav', 'flac' or 'mp3'; ``bits`` '16', '24' or 'float' (wav/flac);
        ``bitrate`` kbit/s (mp3); ``start``/``duration`` in seconds (None: to the end);
        ``output_rate`` 'input', 'model' or a rate in Hz. Returns {stem: written path}. The
        stems of the file appear together, and none on an error (AudioError, one line)."""
        from .stemfiles import output_folders, separate_file
        options = OutputConfig(inputs=(path,), out_dir=out_dir, out_format=format, bits=bits,
                               bitrate=bitrate, start=start,
                               duration=-1.0 if duration is None else duration,
                               output_rate=str(output_rate), quiet=quiet)
        folder = output_folders([path], out_dir)[0]
        return dict(separate_file(self, path, folder, options).paths)

    def nb_chunks(self, nb_samples: int, rate: Optional[int] = None) -> int:
        """How many chunks :meth:`separate_blocks` runs for ``nb_samples`` at ``rate``."""
        n = resampled_length(nb_samples, int(rate or self.sample_rate), self.sample_rate)
        return nb_chunks(n, *self.chunking.samples(self.sample_rate)) if n else 0

    def separate_blocks(self, blocks: Iterable[np.ndarray], rate: Optional[int] = None,
                        out_rate: Optional[int] = None, progress: Optional[Progress] = None,
                        total: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
        """The one separation path for one mixture that arrives in blocks, in bounded memory:
        :meth:`separate_streams` of one stream, its error raised as it is.

        Shapes: blocks (t, C) float32 at ``rate`` (default: the model's), in order -> pieces
        {stem: (t', C) float32} at ``out_rate`` (default: ``rate``), in order; the pieces of
        each stem add up to the mixture's duration at ``out_rate``. ``progress(done, total)``
        after each chunk (``total``: the number of chunks if the caller knows it, else None).
        InputError for rates whose ratio has a term beyond :data:`xumx.resample.MAX_TERM`,
        before any block is read.
        """
        yield from one_stream(self.separate_streams([(blocks, rate, out_rate, progress, total)]))

    def separate_streams(self, streams: Iterable[Tuple]) -> Iterator[Tuple[int, object]]:
        """Several mixtures, each arriving in blocks, whose chunks share the network's runs.

        ``streams``: ``(blocks, rate, out_rate, progress, total)`` per mixture, as
        :meth:`separate_blocks` takes them, taken one at a time (the next only when a batch
        has room for its chunks). Each is resampled to the model's rate
        (:class:`~xumx.resample.StreamResampler`), cut into the chunks of :attr:`chunking`,
        separated with cross-fades and resampled back; the chunks go through the network in
        batches (:func:`xumx.chunking.separate_streams`: consecutive chunks, of one mixture
        or of the next ones, at most ``chunking.batch_frames`` STFT frames in all, one chunk
        always; chunks of equal length share a run). Yields ``(index, what)`` in order: the
        pieces {stem: (t', C) float32} of each mixture, then None after its last; or an
        Exception in place of the rest of that mixture, and the others go on. Memory: the
        chunks of one batch, each open mixture's overlap and the resamplers' filter spans;
        not the songs.
        """
        model_rate = self.sample_rate
        state: Dict[int, Optional[_Stream]] = {}   # by index, None once done

        def at_model_rate(blocks, mine: "_Stream"):
            for a, b in ((mine.rate, model_rate), (model_rate, mine.out_rate)):
                try:
                    ratio(a, b)
                except ValueError as e:
                    raise InputError(str(e)) from None
            into = StreamResampler(mine.rate, model_rate)
            for block in blocks:
                mine.seen += block.shape[0]
                x = into.push(block)
                if x.shape[0]:
                    yield x
            x = into.finish(resampled_length(mine.seen, mine.rate, model_rate))
            if x.shape[0] or mine.seen == 0:
                yield x

        def mixtures():
            for blocks, rate, out_rate, progress, total in streams:
                rate = int(rate or model_rate)
                mine = state[len(state)] = _Stream(rate, int(out_rate or rate), progress, total)
                yield at_model_rate(blocks, mine)

        def chunk_done(s):
            mine = state[s]
            mine.done += 1
            heap.trim()   # the chunk's temporaries, freed, back to the system
            if mine.progress is not None:
                mine.progress(mine.done, mine.total)

        chunk, overlap = self.chunking.samples(model_rate)
        for s, piece in separate_streams(self._separate_chunks, mixtures(), chunk, overlap,
                                         chunk_done, self.nb_frames,
                                         self.chunking.batch_frames):
            mine = state[s]
            if piece is None:   # the mixture's end: what the resamplers hold back
                length = (mine.seen if mine.out_rate == mine.rate
                          else resampled_length(mine.seen, mine.rate, mine.out_rate))
                yield s, {name: r.finish(length) for name, r in mine.back.items()}
            elif isinstance(piece, dict):
                out = {}
                for name in list(piece):   # each stem's piece let go once resampled (the
                    y = piece.pop(name)    # chunking's generator still holds the dict)
                    if name not in mine.back:
                        mine.back[name] = StreamResampler(model_rate, mine.out_rate)
                    out[name] = mine.back[name].push(y)
                    del y
                    heap.trim()
                yield s, out   # the caller may empty it (separate does, stem by stem)
                out = None
                continue
            yield s, piece
            state[s] = mine = None   # done: its resamplers go

    # ------------------------------------------------------------------ one chunk
    def spectrogram(self, audio: np.ndarray) -> np.ndarray:
        """Shapes: audio (T, C) -> mixture STFT, frames first per channel: (C, N, F) complex64."""
        return dsp.stft_frames(audio.T, self.cfg.nfft, self.cfg.nhop, np.complex64)

    def model_input(self, spec: np.ndarray) -> np.ndarray:
        """Shapes: spec (C, N, F) -> magnitude (N, C_model, F) float32 (mono models: mean)."""
        mag = np.ascontiguousarray(np.abs(spec).transpose(1, 0, 2))
        if self.cfg.nb_channels == 1:
            mag = mag.mean(axis=1, keepdims=True)
        return mag

    def masks(self, mag: np.ndarray) -> np.ndarray:
        """Run the network. Shapes: mag (N, C_model, F) -> masks (S, N, C_model, F) float32."""
        return self.net.masks(mag)

    def batch_masks(self, mag: np.ndarray) -> np.ndarray:
        """Run the network on a batch of chunks of equal length, in one call where the network
        takes a batch (:meth:`xumx.engine.OnnxNet.batch_masks`). Shapes: mag (N, B, C_model, F)
        -> masks (S, N, B, C_model, F) float32; item b is :meth:`masks` of ``mag[:, b]``."""
        run = getattr(self.net, "batch_masks", None)
        if run is not None:
            return run(mag)
        return np.stack([self.net.masks(mag[:, b]) for b in range(mag.shape[1])], axis=2)

    def batch_sources(self, mag: np.ndarray) -> List:
        """The source magnitude estimates (masks x ``mag``) of a batch of chunks of equal
        length: item b is (S, N, C_model, F), sliced by frames (``v[:, a:b]``; made block by
        block where the network can, :meth:`xumx.engine.OnnxNet.batch_sources`).
        Shapes: mag (N, B, C_model, F)."""
        from .engine import sources_of_masks
        run = getattr(self.net, "batch_sources", None)
        return run(mag) if run is not None else sources_of_masks(self.batch_masks(mag), mag)

    def nb_frames(self, nb_samples: int) -> int:
        """STFT frames of a chunk of ``nb_samples`` at the model's rate."""
        return dsp.nb_frames(nb_samples, self.cfg.nhop)

    def _separate_chunks(self, chunks: List[np.ndarray]) -> Iterator[Dict[str, np.ndarray]]:
        """Chunks at the model's rate, in order -> their stems, one dict per chunk, in order.
        Shapes: each chunk (t, C) float32 -> {stem: (t, C) float32}. Chunks of equal length
        go through the network in one batch (run when the first of them is reached); the
        Wiener filter and the synthesis run one chunk at a time."""
        groups: Dict[int, List[int]] = {}
        for i, audio in enumerate(chunks):
            groups.setdefault(audio.shape[0], []).append(i)
        ready: Dict[int, List] = {}   # [source magnitudes, the mixture's largest magnitude]
        for i, audio in enumerate(chunks):
            if i not in ready:
                members = groups[audio.shape[0]]
                # the STFTs are not held through the network (its peak): the Wiener filter
                # makes the mixture's frames again as it needs them, the same numbers
                # (docs/onnx-engine.md "Memory")
                inputs = [self._input_and_peak(chunks[j]) for j in members]
                peaks = [peak for _, peak in inputs]
                mags = inputs[0][0][:, None] if len(inputs) == 1 else \
                    np.stack([mag for mag, _ in inputs], axis=1)    # (N, B, C_model, F)
                del inputs[:]
                heap.trim()   # what the STFTs and the last chunk's tail freed, before the network
                v = self.batch_sources(mags)   # B of (S, N, C_model, F)
                heap.trim()   # the network's intermediates (from onnxruntime's threads too)
                for k, j in enumerate(members):
                    ready[j] = [v[k], peaks[k]]
                del mags, v
            yield self._filter(audio, ready.pop(i))

    def _input_and_peak(self, audio: np.ndarray) -> Tuple[np.ndarray, float]:
        """The network's input of a chunk (:meth:`model_input` of its :meth:`spectrogram`,
        the same numbers) and the largest magnitude of the mixture's STFT (the Wiener filter's
        scale), made a block of frames at a time: the complex spectrogram is never whole.
        Shapes: audio (t, C) -> ((N, C_model, F), number)."""
        frames = dsp.StftFrames(self._model_channels(audio).T, self.cfg.nfft, self.cfg.nhop,
                                np.complex64, workers=-1)
        n, _, bins = frames.shape
        mag = np.empty((n, self.cfg.nb_channels, bins), np.float32)
        peak = 0.0
        for a in range(0, n, MAGNITUDE_BLOCK):
            block = np.abs(frames[a:a + MAGNITUDE_BLOCK])   # (n', C, F)
            peak = max(peak, float(block.max(initial=0.0)))
            mag[a:a + MAGNITUDE_BLOCK] = block if block.shape[1] == mag.shape[1] \
                else block.mean(axis=1, keepdims=True)      # mono models: the mean
        return mag, peak

    def _model_channels(self, audio: np.ndarray) -> np.ndarray:
        """Mono audio for a stereo model: both channels the same. Shapes: (t, C) -> (t, C')."""
        if self.cfg.nb_channels == 2 and audio.shape[1] == 1:
            return np.repeat(audio, 2, axis=1)
        return audio

    def _filter(self, audio: np.ndarray, parts: List) -> Dict[str, np.ndarray]:
        """One chunk's stems from its source magnitudes. Shapes: audio (t, C) float32 at the
        model's rate; ``parts``: [v (S, N, C_model, F), the masks times the network's input,
        sliced by frames (:meth:`batch_sources`); the largest magnitude of the mixture's STFT],
        emptied here, so that v is freed before the stems are made -> {stem: (t, C) float32}."""
        channels = audio.shape[1]
        audio = self._model_channels(audio)
        v, peak = parts
        del parts[:]
        # the mixture's STFT frames, made block by block as the filter needs them: the whole
        # spectrogram is not held (docs/onnx-engine.md "Memory")
        x = dsp.StftFrames(audio.T, self.cfg.nfft, self.cfg.nhop, np.complex64)
        sep = self.separation
        plan = self._plan
        n, c = x.shape[:2]
        # every stem's channels in one overlap-add: (W C, samples)
        ola = dsp.OverlapAdd(len(plan) * c, self.cfg.nfft, self.cfg.nhop, n, audio.shape[0],
                             np.float32)

        def synthesis(y):   # on the Wiener filter's threads: y (S', n, C, F) -> (W C, samples)
            y = np.stack([y[idx[0]] if len(idx) == 1 else y[list(idx)].sum(axis=0)
                          for _, idx in plan])            # (W, n, C, F): linear, so sums
            y = y.transpose(0, 2, 1, 3)                   # of spectra are sums of stems
            return ola.segment(y.reshape((-1,) + y.shape[2:]))

        # one source alone would be the whole mixture: it is filtered against the residual,
        # as the published code does (docs/fixes.md), which is returned only if asked for
        residual = sep.residual_model or len(self.cfg.sources) == 1
        with single_thread_blas():   # each block's fc3 (v[:, a:b]): the blocks are the threads
            for start, _, segment in wiener_blocks(v, x, sep.niter, sep.softmask, sep.alpha,
                                                   residual, post=synthesis, dtype=np.complex64,
                                                   peak=peak):
                ola.add_segment(start, segment)   # the block's overlap-add ran on its thread
        del v, x
        heap.trim()   # the filter's blocks, freed on its threads, before the cross-fade
        out = ola.result()   # (T, W C); each stem a view of it (the chunking copies them)
        return {name: out[:, k * c:k * c + channels] for k, (name, _) in enumerate(plan)}


@dataclasses.dataclass
class _Stream:
    """One mixture of :meth:`Separator.separate_streams`: its rates, progress callback and
    total, input samples read, chunks done and each stem's resampler back to ``out_rate``."""
    rate: int
    out_rate: int
    progress: Optional[Progress]
    total: Optional[int]
    seen: int = 0
    done: int = 0
    back: Dict[str, StreamResampler] = dataclasses.field(default_factory=dict)
