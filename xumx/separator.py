"""The Separator: model + STFT + Wiener filter + inverse STFT, built once and reused."""
import contextlib
import dataclasses
import threading
from typing import Dict, Optional

import numpy as np

from . import dsp
from .config import MAX_AMPLITUDE, ModelConfig, SeparationConfig
from .errors import ConfigError, InputError
from .engine import OnnxNet, device_of, load_net
from .filtering import wiener_blocks

#: 'auto' is 'onnxruntime', the separation engine; 'nnabla' runs the NNabla graph (the
#: reference and training's engine; it needs nnabla).
BACKENDS = ("auto", "onnxruntime", "nnabla")


def resolve_backend(backend: str) -> str:
    """'onnxruntime' or 'nnabla' for ``backend`` in :data:`BACKENDS`."""
    if backend not in BACKENDS:
        hint = " (the numpy path was replaced by onnxruntime)" if backend == "numpy" else ""
        raise ConfigError(f"backend must be one of {BACKENDS}, not {backend!r}{hint}")
    return "nnabla" if backend == "nnabla" else "onnxruntime"


def check_audio(audio, nb_channels: Optional[int] = None) -> np.ndarray:
    """Validate a waveform for separation and return it as float (T, C).

    Integer samples (int16 as soundfile or pydub give them, int32, uint8...) are scaled by
    their type's full scale (int16 / 32768, int32 / 2**31, uint8 centred on 128 / 128) to
    float32. Raises InputError (a ValueError) naming what was expected: a 2-D array of shape
    (nb_timesteps, nb_channels) with 1 or 2 channels, finite, not empty and with samples
    within +-:data:`~xumx.config.MAX_AMPLITUDE` (full scale is 1).
    """
    if not isinstance(audio, np.ndarray):
        raise InputError(f"audio must be a numpy array of shape (nb_timesteps, 2), "
                         f"not {type(audio).__name__}")
    if audio.dtype.kind in "iu":
        audio = integer_to_float(audio)
    elif audio.dtype.kind != "f":
        raise InputError(f"audio must hold real numbers: floating point around [-1, 1] or "
                         f"integer samples (int16, int32, uint8...), not {audio.dtype}")
    if audio.ndim == 1:
        raise InputError(f"audio must be 2-D (nb_timesteps, nb_channels), got 1-D shape "
                         f"{audio.shape}: use audio[:, None] for mono")
    if audio.ndim != 2:
        raise InputError(f"audio must be 2-D (nb_timesteps, nb_channels), got shape {audio.shape}")
    if audio.shape[0] in (1, 2) and audio.shape[1] > 2:
        raise InputError(f"audio has shape {audio.shape}, which looks like (channels, samples); "
                         f"expected (nb_timesteps, nb_channels): pass audio.T")
    if audio.shape[1] not in (1, 2):
        raise InputError(f"audio must have 1 or 2 channels (shape (nb_timesteps, 2)), "
                         f"got shape {audio.shape}")
    if audio.shape[0] == 0:
        raise InputError(f"audio is empty (shape {audio.shape}): expected at least one sample "
                         f"of shape (nb_timesteps, nb_channels)")
    finite = np.isfinite(audio)
    if not np.all(finite):
        bad, count = np.argwhere(~finite)[0], int(finite.size - finite.sum())
        raise InputError(f"audio contains NaN or infinite samples ({count}, first at sample "
                         f"{bad[0]}, channel {bad[1]}): expected finite samples")
    peak = float(np.max(np.abs(audio)))
    if peak > MAX_AMPLITUDE:
        raise InputError(f"audio peaks at {peak:.3g}: expected samples around [-1, 1] "
                         f"(at most {MAX_AMPLITUDE:g})")
    return audio


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


def integer_to_float(audio: np.ndarray) -> np.ndarray:
    """Integer samples as float32 around [-1, 1]: divided by the type's full scale
    (2**(bits-1)), unsigned types centred first (uint8: (x - 128) / 128)."""
    full = float(2 ** (8 * audio.dtype.itemsize - 1))
    x = audio.astype(np.float64 if audio.dtype.itemsize > 2 else np.float32)
    if audio.dtype.kind == "u":
        x -= full
    return (x / full).astype(np.float32)


@contextlib.contextmanager
def nnabla_scope(context=None, device_id=None):
    """Auto-forward on, no gradient graph, and ``context`` (a name such as 'cpu'/'cudnn' with
    ``device_id``, an nnabla Context, or None for the caller's default); the caller's settings
    come back after."""
    import nnabla as nn
    from ._nnabla import extension_context
    with contextlib.ExitStack() as stack:
        if context is not None:
            if isinstance(context, str):
                context = extension_context(context, device_id or 0)
            stack.enter_context(nn.context_scope(context))
        stack.enter_context(nn.auto_forward(True))
        stack.enter_context(nn.no_grad())
        yield


#: Stack for nnabla graph work: its CPU LSTM recurses once per frame when a graph is run or
#: freed, and overflows the usual 8 MB stack (a segfault) at a few thousand frames.
GRAPH_STACK_BYTES = 1 << 30


def call_with_large_stack(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a thread with a :data:`GRAPH_STACK_BYTES` stack and return
    its result (or raise its exception). The memory is only reserved, not committed."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread below
            result["error"] = e

    previous = threading.stack_size(GRAPH_STACK_BYTES)
    try:
        worker = threading.Thread(target=target, name="xumx-graph")
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _targets(cfg: ModelConfig, separation: SeparationConfig) -> tuple:
    """The targets to return: ``separation.targets`` (checked against the model) or all sources."""
    targets = separation.targets or cfg.sources
    unknown = [t for t in targets if t not in cfg.sources]
    if unknown:
        raise InputError(f"unknown target(s) {unknown}: the model separates {list(cfg.sources)}")
    return tuple(targets)


class Separator:
    """Separates a mixture into the sources of one model.

    Args:
        cfg: the model's configuration.
        arrays: {parameter name: array} (see :func:`xumx.spec.parameter_spec`); may be None
            when ``net`` is given.
        separation: targets and Wiener settings.
        context: where the network runs: 'cpu', 'cuda'/'cudnn', an nnabla Context, or None
            (the caller's nnabla default context if nnabla is imported, else the CPU); see
            :mod:`xumx.engine` for the rule.
        backend: 'auto' or 'onnxruntime' (the engine: the network's ONNX graph in onnxruntime),
            or 'nnabla' (the reference NNabla graph, which needs nnabla).
        device_id: the GPU index with a context name ('cuda'/'cudnn'); default: the
            context's own, or 0.
        net: an :class:`xumx.engine.OnnxNet` of this model, instead of building one from
            ``arrays``.
        threads: onnxruntime's CPU threads (None: one per core not busy with other work, see
            :func:`xumx.engine.default_threads`).
    Raises :class:`xumx.engine.EngineError` when a GPU is asked for and cannot be used.
    """

    def __init__(self, cfg: ModelConfig, arrays: Optional[Dict[str, np.ndarray]],
                 separation: SeparationConfig = SeparationConfig(), context=None,
                 backend: str = "auto", device_id=None, net: Optional[OnnxNet] = None,
                 threads: Optional[int] = None):
        self.cfg = cfg
        self.separation = separation
        self.context = context
        self.device_id = device_id
        self.backend = resolve_backend(backend)
        if self.backend == "nnabla":
            from ._nnabla import require_nnabla
            require_nnabla("the NNabla graph (backend='nnabla')")
        self.targets = _targets(cfg, separation)
        self._arrays = arrays
        self._model = None
        self.net = None
        if self.backend == "onnxruntime":
            self.device = device_of(context, device_id)
            if net is None:
                if arrays is None:
                    raise ValueError("Separator needs parameter arrays or an OnnxNet")
                net = OnnxNet.from_arrays(cfg, arrays, self.device, threads)
            self.net = net
        else:
            self.model  # build the graph's parameters now, so copies share them

    @property
    def model(self):
        """The NNabla network (the reference; built on first use with the onnxruntime engine)."""
        if self._model is None:
            if self._arrays is None:
                raise ValueError("this Separator was loaded from the ONNX model cache and holds no "
                                 "parameter arrays: use backend='nnabla' for the NNabla graph")
            from .model import OpenUnmixCrossNet
            self._model = OpenUnmixCrossNet(self.cfg)
            self._model.set_parameters(self._arrays)
        return self._model

    @classmethod
    def from_file(cls, path: str, separation: SeparationConfig = SeparationConfig(),
                  umx: bool = False, context=None, backend: str = "auto", device_id=None,
                  threads: Optional[int] = None) -> "Separator":
        """Load an X-UMX ``.h5`` (or, with ``umx``, a folder of ``<target>.h5``): see
        :func:`load_separator`."""
        return load_separator(path, separation, umx, None, context, device_id, backend, threads)

    def with_separation(self, separation: SeparationConfig) -> "Separator":
        """A Separator sharing this one's loaded network, with other Wiener settings/targets."""
        other = object.__new__(Separator)
        other.__dict__.update(self.__dict__)
        other.separation = separation
        other.targets = _targets(self.cfg, separation)
        return other

    def with_rate(self, sample_rate: int) -> "Separator":
        """A Separator sharing this one's network that runs at ``sample_rate`` Hz (audio is
        resampled to it by :mod:`xumx.inference`)."""
        other = self.with_separation(self.separation)
        other.cfg = dataclasses.replace(self.cfg, sample_rate=int(sample_rate))
        return other

    # ---------------------------------------------------------------- stages
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
        if self.net is not None:
            return self.net.masks(mag)
        import nnabla as nn

        def forward():
            with nnabla_scope(self.context, self.device_id):
                x = nn.Variable.from_numpy_array(mag[:, None])
                out = self.model.masks(x, test=True)
                return np.stack([m.d[:, 0] for m in out])
        return call_with_large_stack(forward)

    def separate(self, audio: np.ndarray, rate: Optional[int] = None) -> Dict[str, np.ndarray]:
        """Separate one mixture.

        Shapes: audio (T, C) with C = 1 or 2, float around [-1, 1] or integer samples (scaled
        by their type's full scale, see :func:`check_audio`), at ``rate`` Hz (default: the
        model's, ``cfg.sample_rate``) -> {target: (T, C) float32} at ``rate`` for each target
        (plus 'residual' with residual_model). Another rate is resampled to the model's and
        back by the separation path of the command line
        (:func:`xumx.inference.separate_audio`, in one piece).
        """
        audio = check_audio(audio)
        rate = None if rate is None else audio_rate(rate)
        if rate is not None and rate != int(self.cfg.sample_rate):
            from .config import ChunkConfig
            from .inference import separate_audio
            return separate_audio(self, audio, rate, ChunkConfig(chunk_dur=0))
        channels = audio.shape[1]
        if self.cfg.nb_channels == 2 and channels == 1:
            audio = np.repeat(audio, 2, axis=1)
        spec = self.spectrogram(audio)  # (C, N, F)
        mag = self.model_input(spec)    # (N, C_model, F)
        v = self.masks(mag)
        v *= mag[None]  # (S, N, C_model, F) source magnitudes, in place
        del mag
        sep = self.separation
        names = list(self.cfg.sources) + (["residual"] if sep.residual_model else [])
        wanted = list(self.targets) + (["residual"] if sep.residual_model else [])
        picked = [names.index(name) for name in wanted]
        c, n = spec.shape[:2]
        # every wanted stem's channels in one overlap-add: (W C, samples)
        ola = dsp.OverlapAdd(len(wanted) * c, self.cfg.nfft, self.cfg.nhop, n, audio.shape[0],
                             np.float32)

        def synthesis(y):   # on the Wiener filter's threads: y (S', n, C, F) -> (W C, samples)
            y = y[picked].transpose(0, 2, 1, 3)
            return ola.segment(y.reshape((-1,) + y.shape[2:]))

        for start, _, segment in wiener_blocks(v, spec.transpose(1, 0, 2), sep.niter,
                                               sep.softmask, sep.alpha, sep.residual_model,
                                               post=synthesis, dtype=np.complex64):
            ola.add_segment(start, segment)   # the block's own overlap-add ran on its thread
        del v, spec
        out = ola.result()   # (T, W C)
        return {name: np.ascontiguousarray(out[:, k * c:k * c + channels])
                for k, name in enumerate(wanted)}

    __call__ = separate


def load_separator(model: Optional[str] = None, separation: SeparationConfig = SeparationConfig(),
                   umx: bool = False, sample_rate: Optional[int] = None, context=None,
                   device_id=None, backend: str = "auto", threads: Optional[int] = None,
                   quiet: bool = True) -> Separator:
    """The one way to a ready :class:`Separator` (xumx.test, xumx.eval, the function API and
    ``Separator.from_file`` all come here).

    Args:
        model: an X-UMX ``.h5`` (with ``umx``, a folder of ``<target>.h5``); None: the
            published weights, downloaded once into the cache (a byte bar unless ``quiet``).
        separation: targets (checked against the model's sources) and Wiener settings.
        sample_rate: the rate the model runs at (default: the model's, from its sidecar; a
            rate that contradicts the sidecar is a ConfigError, for a file without one it is
            the rate the model was trained at).
        context, device_id, threads: where the network runs (:func:`xumx.engine.device_of`:
            None follows the caller's nnabla default context, else the CPU).
        backend: 'auto'/'onnxruntime' (the engine; the graph comes from the model cache when
            it was built before from the same files) or 'nnabla' (the reference graph).

    Each failure is one :class:`~xumx.errors.XumxError` line: DownloadError, WeightsError
    ("cannot load the model: <path>: <why>"), EngineError (a GPU that cannot be used),
    NnablaMissing (backend 'nnabla' without nnabla), InputError (a target the model does not
    have), ConfigError (UMX without a folder).
    """
    from .config import DEFAULT_SOURCES
    from .pretrained import model_path
    from .weights import cannot_load, load_umx, load_xumx
    path = model_path(model, umx, quiet)
    loading = SeparationConfig(targets=separation.targets)   # UMX reads one file per target
    targets = loading.targets or DEFAULT_SOURCES
    with cannot_load(path):
        if resolve_backend(backend) == "onnxruntime":
            net = load_net(path, umx, targets, device_of(context, device_id), threads)
            sep = Separator(net.cfg, None, loading, context, backend, device_id, net=net)
        else:
            cfg, arrays = load_umx(path, targets) if umx else load_xumx(path)
            sep = Separator(cfg, arrays, loading, context, backend, device_id)
    if sample_rate and int(sample_rate) != int(sep.cfg.sample_rate):
        from .weights import stated_rate
        stated = None if umx else stated_rate(path)
        if stated:
            raise ConfigError(f"--sample-rate {sample_rate} contradicts the model: {path} was "
                              f"trained at {stated} Hz (its sidecar says so); leave "
                              f"--sample-rate out, audio at any rate is resampled to the model's")
        sep = sep.with_rate(sample_rate)
    return sep.with_separation(separation)
