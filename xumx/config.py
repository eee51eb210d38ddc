"""The one configuration of xumx: dataclasses for the model and for separation, and the
argparse parser shared by the ``xumx.test``, ``xumx.train`` and ``xumx.eval`` entry modules.

Nothing below the entry modules sees an ``argparse.Namespace``: they turn it into these
dataclasses with :func:`model_config_from_args` / :func:`separation_config_from_args`.
"""
import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

#: The published source order (it fixes parameter creation order in ``x-umx.h5``).
DEFAULT_SOURCES = ("bass", "drums", "vocals", "other")
DEFAULT_SAMPLE_RATE = 44100
DEFAULT_NB_CHANNELS = 2
DEFAULT_NFFT = 4096
DEFAULT_NHOP = 1024
DEFAULT_HIDDEN = 512
DEFAULT_LAYERS = 3
DEFAULT_BANDWIDTH = 16000
#: Where the published weights live and their SHA-1 (the file Spleeter Web verifies).
PUBLISHED_URL = "https://nnabla.org/pretrained-models/ai-research-code/x-umx/x-umx.h5"
PUBLISHED_SHA1 = "6414e08527d37bd1d08130c4b87255830af819bf"


def bandwidth_to_max_bin(rate: int, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins whose centre frequency is at most ``bandwidth`` Hz.

    >>> bandwidth_to_max_bin(44100, 4096, 16000)
    1487
    """
    import numpy as np
    freqs = np.linspace(0, float(rate) / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth)[0])) + 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shapes and its STFT front end.

    ``crossing=False`` gives four independent Open-Unmix networks (UMX mode); the
    parameters are the same either way.
    """
    sources: Tuple[str, ...] = DEFAULT_SOURCES
    nb_channels: int = DEFAULT_NB_CHANNELS
    hidden_size: int = DEFAULT_HIDDEN
    nb_layers: int = DEFAULT_LAYERS
    unidirectional: bool = False
    nfft: int = DEFAULT_NFFT
    nhop: int = DEFAULT_NHOP
    max_bin: Optional[int] = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    crossing: bool = True

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.max_bin is None:
            object.__setattr__(self, "max_bin", bandwidth_to_max_bin(
                self.sample_rate, self.nfft, DEFAULT_BANDWIDTH))
        problems = []
        if not self.sources:
            problems.append("at least one source is needed")
        if len(set(self.sources)) != len(self.sources):
            problems.append(f"sources repeat: {list(self.sources)}")
        if self.nb_channels not in (1, 2):
            problems.append(f"nb_channels must be 1 or 2, not {self.nb_channels}")
        if self.nfft < 2 or self.nfft % 2:
            problems.append(f"nfft must be even and positive, not {self.nfft}")
        if not 0 < self.nhop <= self.nfft // 2:
            # centred Hann analysis/synthesis needs overlapping windows to invert (NOLA)
            problems.append(f"nhop must be in 1..nfft/2 = {self.nfft // 2}, not {self.nhop}")
        if not 0 < self.max_bin <= self.nb_bins:
            problems.append(f"max_bin must be in 1..{self.nb_bins}, not {self.max_bin}")
        if self.nb_layers < 1:
            problems.append(f"nb_layers must be at least 1, not {self.nb_layers}")
        if self.hidden_size < 2 or (not self.unidirectional and self.hidden_size % 2):
            problems.append(f"hidden_size must be even and at least 2, not {self.hidden_size}")
        if problems:
            raise ValueError("invalid model configuration: " + "; ".join(problems))

    @property
    def nb_bins(self) -> int:
        return self.nfft // 2 + 1

    @property
    def lstm_hidden(self) -> int:
        return self.hidden_size if self.unidirectional else self.hidden_size // 2

    @property
    def nb_directions(self) -> int:
        return 1 if self.unidirectional else 2

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["sources"] = list(self.sources)
        d["format"] = "xumx-model-config/1"
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class SeparationConfig:
    """How estimates are post-processed (norbert 0.2.1 semantics) and which are returned."""
    targets: Optional[Tuple[str, ...]] = None   # None: every source of the model
    niter: int = 1
    softmask: bool = False
    alpha: float = 1.0
    residual_model: bool = False

    def __post_init__(self):
        if self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
        if int(self.niter) != self.niter or self.niter < 0:
            raise ValueError(f"niter must be a whole number >= 0, not {self.niter!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, not {self.alpha!r}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``xumx.eval`` scores and where it writes (see :mod:`xumx.evaluation`).

    ``model`` None scores only the mixture baseline (``baseline`` must then be set).
    """
    root: Optional[str] = None
    model: Optional[str] = None
    umx: bool = False
    subset: str = "test"
    is_wav: bool = False
    tracks: Optional[Tuple[str, ...]] = None
    out_dir: Optional[str] = None
    eval_dir: str = "scores"
    cores: int = 1
    chunk_dur: Optional[float] = None
    baseline: bool = False
    context: str = "cpu"
    device_id: str = "0"
    sample_rate: Optional[int] = None

    def __post_init__(self):
        if self.tracks is not None:
            object.__setattr__(self, "tracks", tuple(self.tracks))
        if self.cores < 1:
            raise ValueError(f"--cores must be at least 1, not {self.cores}")
        if self.chunk_dur is not None and not self.chunk_dur > 0:
            raise ValueError(f"--chunk-dur must be positive, not {self.chunk_dur}")
        if self.model is None and not self.baseline:
            raise ValueError("no --model given (or pass --baseline to score only the mixture)")


# --------------------------------------------------------------------------- argparse
def _add_runtime_args(parser):
    g = parser.add_argument_group("runtime")
    g.add_argument("--context", "-c", default="cpu", choices=["cpu", "cudnn"],
                   help="nnabla extension context (default: cpu)")
    g.add_argument("--device-id", "-d", default="0", help="GPU index for --context cudnn (default: 0)")


def _add_separation_args(parser):
    g = parser.add_argument_group("separation")
    g.add_argument("--model", default=None,
                   help="X-UMX parameter file (.h5); with --umx-infer a folder of <target>.h5")
    g.add_argument("--umx-infer", action="store_true",
                   help="use independent UMX networks (a folder of <target>.h5) instead of X-UMX")
    g.add_argument("--targets", nargs="+", default=None,
                   help="sources to write, by name (default: all sources of the model)")
    g.add_argument("--softmask", action="store_true",
                   help="start the Wiener EM from soft masks (spectrograms**alpha) instead of magnitudes")
    g.add_argument("--niter", type=int, default=1, help="Wiener EM iterations, 0 or more (default: 1)")
    g.add_argument("--alpha", type=float, default=1.0, help="exponent of the soft masks (default: 1.0)")
    g.add_argument("--residual-model", action="store_true",
                   help="add a 'residual' stem: what the targets leave of the mixture")
    g.add_argument("--sample-rate", type=int, default=None,
                   help="model sample rate in Hz (default: the model's, 44100 for x-umx.h5)")


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The parser of one entry module: ``mode`` is 'test', 'train' or 'eval'."""
    progs = {"test": "python -m xumx.test", "train": "python -m xumx.train",
             "eval": "python -m xumx.eval"}
    if mode not in progs:
        raise ValueError(f"unknown mode {mode!r}")
    parser = argparse.ArgumentParser(prog=progs[mode])
    if mode in ("test", "eval"):
        _add_separation_args(parser)
    if mode == "test":
        _add_test_args(parser)
    if mode == "eval":
        _add_eval_args(parser)
    _add_runtime_args(parser)
    return parser


def _add_test_args(parser):
    g = parser.add_argument_group("input and output")
    g.add_argument("--inputs", nargs="+", required=True, help="audio files to separate")
    g.add_argument("--out-dir", "--outdir", dest="out_dir", default=None,
                   help="folder for the stems (default: the current folder)")


def _add_eval_args(parser):
    g = parser.add_argument_group("evaluation")
    g.add_argument("--root", default=None,
                   help="MUSDB18 folder (STEMS, or WAV with --is-wav; default: $MUSDB_PATH)")
    g.add_argument("--subset", default="test", choices=["train", "test"],
                   help="MUSDB18 subset to evaluate (default: test)")
    g.add_argument("--is-wav", action="store_true",
                   help="the dataset is the WAV layout <root>/<subset>/<track>/<source>.wav")
    g.add_argument("--tracks", nargs="+", default=None,
                   help="names of the tracks to evaluate (default: every track of the subset)")
    g.add_argument("--out-dir", "--outdir", dest="out_dir", default=None,
                   help="folder for the estimates <out-dir>/<subset>/<track>/<target>.wav "
                        "(default: not written)")
    g.add_argument("--eval-dir", "--evaldir", dest="eval_dir", default="scores",
                   help="folder for the scores: museval JSON per track, CSV, store, sdr.png "
                        "(default: ./scores)")
    g.add_argument("--cores", type=int, default=1,
                   help="tracks separated and scored in parallel processes (default: 1)")
    g.add_argument("--chunk-dur", type=float, default=None,
                   help="separate in chunks of this many seconds to bound memory "
                        "(default: whole track)")
    g.add_argument("--baseline", action="store_true",
                   help="also score the mixture as the estimate of every target "
                        "(the mixture-as-estimate baseline)")


def model_path_or_default(path: Optional[str]) -> str:
    if path:
        return path
    raise ValueError("no --model given")


def separation_config_from_args(args) -> SeparationConfig:
    return SeparationConfig(targets=tuple(args.targets) if args.targets else None,
                            niter=args.niter, softmask=bool(args.softmask),
                            alpha=float(args.alpha), residual_model=bool(args.residual_model))


def eval_config_from_args(args) -> EvalConfig:
    return EvalConfig(root=args.root, model=args.model, umx=bool(args.umx_infer),
                      subset=args.subset, is_wav=bool(args.is_wav),
                      tracks=tuple(args.tracks) if args.tracks else None, out_dir=args.out_dir,
                      eval_dir=args.eval_dir, cores=args.cores,
                      chunk_dur=args.chunk_dur, baseline=bool(args.baseline),
                      context=args.context, device_id=str(args.device_id),
                      sample_rate=args.sample_rate)
