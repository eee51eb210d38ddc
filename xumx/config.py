"""The one configuration of xumx: dataclasses for the model and for separation, and the
argparse parser shared by the ``xumx.test``, ``xumx.train`` and ``xumx.eval`` entry modules.

Nothing below the entry modules sees an ``argparse.Namespace``: they turn it into these
dataclasses with :func:`model_config_from_args` / :func:`separation_config_from_args`.
"""
import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Optional, Tuple

#: The published source order (it fixes parameter creation order in ``x-umx.h5``).
DEFAULT_SOURCES = ("bass", "drums", "vocals", "other")
DEFAULT_SAMPLE_RATE = 44100
DEFAULT_NB_CHANNELS = 2
DEFAULT_NFFT = 4096
DEFAULT_NHOP = 1024
DEFAULT_HIDDEN = 512
DEFAULT_LAYERS = 3
DEFAULT_BANDWIDTH = 16000
#: Default chunk length of ``xumx.test`` and ``xumx.eval`` in seconds (see the README's chunking
#: section for memory).
DEFAULT_CHUNK_DUR = 30.0
#: Overlap of neighbouring chunks in seconds (cross-faded).
DEFAULT_CHUNK_OVERLAP = 1.0
#: Largest sample magnitude separated (full scale is 1): beyond it float32 spectra overflow,
#: so such input is refused rather than turned into NaN stems.
MAX_AMPLITUDE = 1e6
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
class TrainConfig:
    """Everything of a training run except the network's shapes (see ``xumx.training``)."""
    root: Optional[str] = None          # MUSDB18 root; None downloads the 7 s preview
    output: str = "x-umx"
    resume: Optional[str] = None        # checkpoint (or output folder, or weights) to continue from
    is_wav: bool = False
    epochs: int = 1000
    batch_size: int = 16
    patience: int = 1000
    seq_dur: float = 6.0
    lr: float = 0.001
    lr_decay_patience: int = 80
    lr_decay_gamma: float = 0.3
    weight_decay: float = 0.00001
    seed: int = 42
    valid_dur: float = 100.0
    samples_per_track: int = 64
    source_augmentations: Tuple[str, ...] = ("gain", "channelswap")
    mcoef: float = 10.0
    context: str = "cpu"
    device_id: str = "0"

    def __post_init__(self):
        object.__setattr__(self, "source_augmentations", tuple(self.source_augmentations))
        problems = []
        for name in ("epochs", "batch_size", "samples_per_track"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("seq_dur", "valid_dur", "lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, not {getattr(self, name)}")
        if self.patience < 1 or self.lr_decay_patience < 0:
            problems.append("patience must be >= 1 and lr_decay_patience >= 0")
        if not 0 < self.lr_decay_gamma < 1:
            problems.append(f"lr_decay_gamma must be in (0, 1), not {self.lr_decay_gamma}")
        if self.weight_decay < 0 or self.mcoef < 0:
            problems.append("weight_decay and mcoef must be >= 0")
        unknown = set(self.source_augmentations) - {"gain", "channelswap"}
        if unknown:
            problems.append(f"unknown source augmentations {sorted(unknown)} (known: gain channelswap)")
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))


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
    chunk_dur: float = DEFAULT_CHUNK_DUR   # 0: each track in one piece
    baseline: bool = False
    context: str = "cpu"
    device_id: str = "0"
    sample_rate: Optional[int] = None

    def __post_init__(self):
        if self.tracks is not None:
            object.__setattr__(self, "tracks", tuple(self.tracks))
        if self.cores < 1:
            raise ValueError(f"--cores must be at least 1, not {self.cores}")
        if not self.chunk_dur >= 0:
            raise ValueError(f"--chunk-dur must be 0 (whole track) or positive, not {self.chunk_dur}")
        if self.model is None and not self.baseline:
            raise ValueError("no --model given (or pass --baseline to score only the mixture)")


# --------------------------------------------------------------------------- argparse
def _add_runtime_args(parser):
    g = parser.add_argument_group("runtime")
    g.add_argument("--context", "-c", default="cpu", choices=["cpu", "cudnn"],
                   help="cpu, or cudnn for an NVIDIA GPU (default: cpu)")
    g.add_argument("--device-id", "-d", default="0", help="GPU index for --context cudnn (default: 0)")


def _add_separation_args(parser):
    g = parser.add_argument_group("separation")
    g.add_argument("--model", default=None,
                   help="X-UMX parameter file (.h5); with --umx-infer a folder of <target>.h5 "
                        "(xumx.test without --model: the published x-umx.h5, downloaded once "
                        "into $XUMX_CACHE or ~/.cache/xumx and checked by SHA-1)")
    g.add_argument("--umx-infer", action="store_true",
                   help="use independent UMX networks (a folder of <target>.h5) instead of X-UMX")
    g.add_argument("--targets", nargs="+", default=None,
                   help="sources to write, by name (default: all sources of the model)")
    g.add_argument("--softmask", action="store_true",
                   help="start the Wiener EM from soft masks (spectrograms**alpha) instead of magnitudes")
    g.add_argument("--niter", type=int, default=1, help="Wiener EM iterations, 0 or more (default: 1)")
    g.add_argument("--alpha", type=float, default=1.0, help="exponent of the soft masks (default: 1.0)")
    g.add_argument("--residual-model", action="store_true",
                   help="add a 'residual' stem: what the model's sources leave of the mixture "
                        "(norbert's residual model)")
    g.add_argument("--sample-rate", type=int, default=None,
                   help="model sample rate in Hz (default: the model's, 44100 for x-umx.h5)")


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The parser of one entry module: ``mode`` is 'test', 'train', 'eval', 'synth' or 'export'."""
    progs = {"test": "python -m xumx.test", "train": "python -m xumx.train",
             "eval": "python -m xumx.eval", "synth": "python -m xumx.synth",
             "export": "python -m xumx.export"}
    if mode not in progs:
        raise ValueError(f"unknown mode {mode!r}")
    parser = argparse.ArgumentParser(prog=progs[mode])
    if mode == "synth":
        _add_synth_args(parser)
        return parser
    if mode == "export":
        _add_export_args(parser)
        return parser
    if mode in ("test", "eval"):
        _add_separation_args(parser)
    if mode == "test":
        _add_test_args(parser)
    if mode == "train":
        _add_train_args(parser)
    if mode == "eval":
        _add_eval_args(parser)
    _add_runtime_args(parser)
    return parser


def _add_export_args(parser):
    g = parser.add_argument_group("export")
    g.add_argument("--model", default=None,
                   help="X-UMX parameter file (.h5); with --umx-infer a folder of <target>.h5 "
                        "(default: the published x-umx.h5, as xumx.test)")
    g.add_argument("--umx-infer", action="store_true",
                   help="export independent UMX networks (a folder of <target>.h5)")
    g.add_argument("--targets", nargs="+", default=None,
                   help="with --umx-infer: the <target>.h5 files to read (default: bass drums "
                        "vocals other)")
    g.add_argument("--out", required=True, help="ONNX file to write (e.g. x-umx.onnx)")
    g.add_argument("--quiet", action="store_true", help="no download bar and no summary line")


def _add_test_args(parser):
    g = parser.add_argument_group("input and output")
    g.add_argument("--inputs", nargs="+", required=True,
                   help="audio files to separate (anything ffmpeg decodes)")
    g.add_argument("--out-dir", "--outdir", dest="out_dir", default=None,
                   help="stems go to <out-dir>/<input name>/<target>.<ext> "
                        "(default: the current folder)")
    g.add_argument("--start", type=float, default=0.0,
                   help="separate from this time in seconds (default: 0)")
    g.add_argument("--duration", type=float, default=-1.0,
                   help="separate this many seconds; negative: to the end (default: -1)")
    g.add_argument("--chunk-dur", type=float, default=DEFAULT_CHUNK_DUR,
                   help=f"separate in overlapping chunks of this many seconds, cross-faded; "
                        f"0: the whole file at once (default: {DEFAULT_CHUNK_DUR:g})")
    g.add_argument("--overlap", type=float, default=DEFAULT_CHUNK_OVERLAP,
                   help=f"seconds shared by neighbouring chunks, cross-faded "
                        f"(default: {DEFAULT_CHUNK_OVERLAP:g})")
    g.add_argument("--format", dest="out_format", default="wav", choices=OUTPUT_FORMATS,
                   help="stem file format (default: wav)")
    g.add_argument("--bits", default="16", choices=OUTPUT_BITS,
                   help="sample format of wav/flac stems: 16, 24 (integer) or float "
                        "(32-bit float, wav only) (default: 16)")
    g.add_argument("--bitrate", type=int, default=DEFAULT_MP3_BITRATE,
                   help=f"mp3 bitrate in kbit/s (default: {DEFAULT_MP3_BITRATE})")
    g.add_argument("--output-rate", default="input",
                   help="sample rate of the stems: 'input' (the input file's), 'model' "
                        "(the model's), or a rate in Hz (default: input)")
    g.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no summary lines (errors are still printed)")


DEFAULT_MP3_BITRATE = 320
OUTPUT_FORMATS = ("wav", "flac", "mp3")
OUTPUT_BITS = ("16", "24", "float")


@dataclass(frozen=True)
class OutputConfig:
    """How ``xumx.test`` reads its inputs and writes the stems.

    ``output_rate``: 'input', 'model' or a rate in Hz. ``bits``: '16', '24' or 'float'
    (wav/flac). ``chunk_dur``: seconds per chunk, 0 for the whole file at once.
    """
    start: float = 0.0
    duration: float = -1.0
    chunk_dur: float = DEFAULT_CHUNK_DUR
    overlap: float = DEFAULT_CHUNK_OVERLAP
    out_format: str = "wav"
    bits: str = "16"
    bitrate: int = DEFAULT_MP3_BITRATE
    output_rate: str = "input"
    quiet: bool = False

    def __post_init__(self):
        problems = []
        if not self.start >= 0:
            problems.append(f"--start must be 0 or more seconds, not {self.start!r}")
        if self.duration == 0:
            problems.append("--duration must be positive (or negative for 'to the end'), not 0")
        if not self.chunk_dur >= 0:
            problems.append(f"--chunk-dur must be 0 (no chunking) or positive, not {self.chunk_dur!r}")
        if not self.overlap >= 0:
            problems.append(f"chunk overlap must be 0 or more seconds, not {self.overlap!r}")
        if self.chunk_dur and self.overlap * 2 >= self.chunk_dur:
            problems.append(f"--chunk-dur must be more than twice the overlap "
                            f"({2 * self.overlap:g} s), not {self.chunk_dur:g}")
        if self.out_format not in OUTPUT_FORMATS:
            problems.append(f"unknown output format {self.out_format!r}")
        if self.bits not in OUTPUT_BITS:
            problems.append(f"--bits must be one of {list(OUTPUT_BITS)}, not {self.bits!r}")
        if self.out_format == "flac" and self.bits == "float":
            problems.append("flac stores integers only: use --bits 16 or 24 (or --format wav)")
        if not 8 <= self.bitrate <= 320:
            problems.append(f"--bitrate must be 8..320 kbit/s, not {self.bitrate}")
        if self.output_rate not in ("input", "model"):
            try:
                ok = int(self.output_rate) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                problems.append(f"--output-rate must be 'input', 'model' or a rate in Hz, "
                                f"not {self.output_rate!r}")
        if problems:
            raise ValueError("; ".join(problems))


def output_config_from_args(args) -> OutputConfig:
    return OutputConfig(start=float(args.start), duration=float(args.duration),
                        chunk_dur=float(args.chunk_dur), overlap=float(args.overlap),
                        out_format=args.out_format,
                        bits=str(args.bits), bitrate=int(args.bitrate),
                        output_rate=str(args.output_rate), quiet=bool(args.quiet))


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
    g.add_argument("--chunk-dur", type=float, default=DEFAULT_CHUNK_DUR,
                   help="separate in overlapping chunks of this many seconds, as xumx.test, to bound "
                        f"memory; 0: each track in one piece (default: {DEFAULT_CHUNK_DUR:g})")
    g.add_argument("--baseline", action="store_true",
                   help="also score the mixture as the estimate of every target "
                        "(the mixture-as-estimate baseline)")


def separation_config_from_args(args) -> SeparationConfig:
    return SeparationConfig(targets=tuple(args.targets) if args.targets else None,
                            niter=args.niter, softmask=bool(args.softmask),
                            alpha=float(args.alpha), residual_model=bool(args.residual_model))


def _add_train_args(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--root", default=None,
                   help="MUSDB18 root folder (default: download the 7 s preview)")
    g.add_argument("--is-wav", action="store_true", help="the dataset is decoded WAV (musdb is_wav layout)")
    g.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES),
                   help="sources to separate, in order (default: bass drums vocals other)")
    g.add_argument("--seq-dur", type=float, default=6.0, help="training excerpt length in s (default: 6.0)")
    g.add_argument("--valid_dur", "--valid-dur", dest="valid_dur", type=float, default=100.0,
                   help="validation window length in s; the last partial window counts (default: 100.0)")
    g.add_argument("--samples-per-track", type=int, default=64,
                   help="excerpts per track and epoch (default: 64)")
    g.add_argument("--source-augmentations", nargs="*", default=["gain", "channelswap"],
                   help="per-source augmentations: gain, channelswap (default: gain channelswap)")
    g.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    g = parser.add_argument_group("model")
    g.add_argument("--hidden-size", type=int, default=DEFAULT_HIDDEN, help="hidden units (default: 512)")
    g.add_argument("--nb-layers", type=int, default=DEFAULT_LAYERS, help="LSTM layers (default: 3)")
    g.add_argument("--unidirectional", action="store_true", help="unidirectional LSTM (default: bidirectional)")
    g.add_argument("--nfft", type=int, default=DEFAULT_NFFT, help="STFT size (default: 4096)")
    g.add_argument("--nhop", type=int, default=DEFAULT_NHOP, help="STFT hop (default: 1024)")
    g.add_argument("--bandwidth", type=int, default=DEFAULT_BANDWIDTH,
                   help="highest frequency the network sees, Hz (default: 16000)")
    g.add_argument("--nb-channels", type=int, default=DEFAULT_NB_CHANNELS,
                   help="audio channels, 1 or 2 (default: 2)")
    g.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE,
                   help="sample rate of the dataset in Hz (default: 44100)")
    g = parser.add_argument_group("training")
    g.add_argument("--output", default="x-umx", help="output folder (default: ./x-umx)")
    g.add_argument("--model", default=None,
                   help="resume from this checkpoint (or output folder); a plain weights file starts from its weights")
    g.add_argument("--epochs", type=int, default=1000, help="epochs (default: 1000)")
    g.add_argument("--batch-size", type=int, default=16, help="excerpts per step and process (default: 16)")
    g.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default: 0.001)")
    g.add_argument("--patience", type=int, default=1000,
                   help="early stopping: epochs without validation improvement (default: 1000)")
    g.add_argument("--lr-decay-patience", type=int, default=80,
                   help="epochs without improvement before the LR decays (default: 80)")
    g.add_argument("--lr-decay-gamma", type=float, default=0.3, help="LR decay factor (default: 0.3)")
    g.add_argument("--weight-decay", type=float, default=0.00001, help="L2 weight decay (default: 0.00001)")
    g.add_argument("--mcoef", type=float, default=10.0,
                   help="loss = mcoef * time-domain loss + frequency-domain loss (default: 10.0)")


def train_configs_from_args(args) -> Tuple[ModelConfig, TrainConfig]:
    """The model and training configurations of ``python -m xumx.train`` flags."""
    model = ModelConfig(sources=tuple(args.sources), nb_channels=args.nb_channels,
                        hidden_size=args.hidden_size, nb_layers=args.nb_layers,
                        unidirectional=bool(args.unidirectional), nfft=args.nfft, nhop=args.nhop,
                        max_bin=bandwidth_to_max_bin(args.sample_rate, args.nfft, args.bandwidth),
                        sample_rate=args.sample_rate)
    train = TrainConfig(root=args.root, output=args.output, resume=args.model, is_wav=bool(args.is_wav),
                        epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                        seq_dur=args.seq_dur, lr=args.lr, lr_decay_patience=args.lr_decay_patience,
                        lr_decay_gamma=args.lr_decay_gamma, weight_decay=args.weight_decay,
                        seed=args.seed, valid_dur=args.valid_dur,
                        samples_per_track=args.samples_per_track,
                        source_augmentations=tuple(args.source_augmentations), mcoef=args.mcoef,
                        context=args.context, device_id=str(args.device_id))
    return model, train


def _add_synth_args(parser):
    g = parser.add_argument_group("generated dataset")
    g.add_argument("--out", required=True, help="dataset root to write")
    g.add_argument("--train", type=int, default=8, help="training songs (default: 8)")
    g.add_argument("--test", type=int, default=3, help="test songs (default: 3)")
    g.add_argument("--duration", type=float, default=12.0, help="song length in seconds (default: 12)")
    g.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")


def eval_config_from_args(args) -> EvalConfig:
    return EvalConfig(root=args.root, model=args.model, umx=bool(args.umx_infer),
                      subset=args.subset, is_wav=bool(args.is_wav),
                      tracks=tuple(args.tracks) if args.tracks else None, out_dir=args.out_dir,
                      eval_dir=args.eval_dir, cores=args.cores,
                      chunk_dur=args.chunk_dur, baseline=bool(args.baseline),
                      context=args.context, device_id=str(args.device_id),
                      sample_rate=args.sample_rate)
