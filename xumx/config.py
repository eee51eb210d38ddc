"""The configuration of xumx: one frozen dataclass per concern, each default written once.

:class:`ModelConfig` fixes the network; :class:`SeparationConfig` and :class:`ChunkConfig` say
how a mixture is separated; :class:`LoadConfig` which model and where it runs;
:class:`OutputConfig`, :class:`EvalConfig`, :class:`TrainConfig`, :class:`ExportConfig`,
:class:`SynthConfig` and :class:`DemoConfig` what each command does. A field that a command
line sets carries its flag (:mod:`xumx.flags`); :mod:`xumx.parsing` generates the parsers and
:mod:`xumx.recipes` reads and writes training recipes. Invalid values raise
:class:`~xumx.errors.ConfigError` (one line).
"""
import dataclasses
import json
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .errors import ConfigError
from .flags import (BATCH_FRAMES, CHUNK_DUR, CONTEXT, DEVICE_ID, IS_WAV, MODEL, OUT, OUT_DIR,
                    OVERLAP, PRECISION, PRECISIONS, QUIET, ROOT, SAMPLE_RATE, SEED, TARGETS, UMX,
                    opt)
from .times import TIME_FORMS, seconds

#: The published source order (it fixes parameter creation order in ``x-umx.h5``).
DEFAULT_SOURCES = ("bass", "drums", "vocals", "other")
DEFAULT_SAMPLE_RATE = 44100
DEFAULT_NB_CHANNELS = 2
DEFAULT_NFFT = 4096
DEFAULT_NHOP = 1024
DEFAULT_BANDWIDTH = 16000
#: Largest sample magnitude separated (full scale is 1): beyond it float32 spectra overflow,
#: so such input is refused rather than turned into NaN stems.
MAX_AMPLITUDE = 1e6
#: Sample rates (Hz, lowest and highest) an audio file and a model's sidecar may state: a
#: header's rate fixes the work of resampling, so 1 Hz (3000 samples would become hours at
#: the model's rate) is refused.
SAMPLE_RATES = (1000, 768000)


def bandwidth_to_max_bin(rate: int, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins whose centre frequency is at most ``bandwidth`` Hz (the ``max_bin``
    of a model that sees frequencies up to ``bandwidth``).

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
    parameters are the same either way. ``max_bin`` None: the bins up to 16 kHz.
    """
    sources: Tuple[str, ...] = opt(DEFAULT_SOURCES, "--sources", metavar="NAME", group="model",
                                   help="sources to separate, in the order of the parameters")
    nb_channels: int = opt(DEFAULT_NB_CHANNELS, "--nb-channels", help="audio channels, 1 or 2",
                           group="model", metavar="N")
    hidden_size: int = opt(512, "--hidden-size", help="hidden units", group="model", metavar="N")
    nb_layers: int = opt(3, "--nb-layers", help="LSTM layers", group="model", metavar="N")
    unidirectional: bool = opt(False, "--unidirectional", group="model",
                               help="unidirectional LSTMs instead of bidirectional")
    nfft: int = opt(DEFAULT_NFFT, "--nfft", help="STFT size", group="model", metavar="N")
    nhop: int = opt(DEFAULT_NHOP, "--nhop", help="STFT hop", group="model", metavar="N")
    max_bin: Optional[int] = None
    sample_rate: int = SAMPLE_RATE.field(DEFAULT_SAMPLE_RATE)
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
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be positive, not {self.sample_rate}")
        if problems:
            raise ConfigError("invalid model configuration: " + "; ".join(problems))

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


def aggregate_item(text: str) -> Tuple[str, Tuple[str, ...]]:
    """``NAME=SOURCE,SOURCE...`` (the command line's form of one aggregate stem) as
    (name, sources); raises ``argparse.ArgumentTypeError`` for another form."""
    import argparse
    name, sep, sources = str(text).partition("=")
    parts = tuple(s.strip() for s in sources.replace("+", ",").split(",") if s.strip())
    if not sep or not name.strip() or not parts:
        raise argparse.ArgumentTypeError(f"expected NAME=SOURCE,SOURCE (e.g. "
                                         f"accompaniment=bass,drums,other), not {text!r}")
    return name.strip(), parts


@dataclass(frozen=True)
class SeparationConfig:
    """Which stems a separation returns and how the estimates are post-processed (norbert 0.2.1
    semantics).

    ``targets``: source names (one name may be a string; "vocals,drums" is two names); None:
    every source of the model.
    ``aggregate``: extra stems, each the sum of some sources' estimates, as
    {name: sources} or ((name, sources), ...), e.g. {"accompaniment": ("bass", "drums",
    "other")} (all but vocals, for karaoke); they come after the targets.
    ``precision``: the network's graph, one of :data:`~xumx.flags.PRECISIONS` ("int8": the
    LSTMs' weights in int8, :mod:`xumx.onnxnet`; opt-in, the onnxruntime backend only).
    """
    targets: Optional[Tuple[str, ...]] = TARGETS.field(None, "all sources of the model")
    niter: int = opt(1, "--niter", help="Wiener EM iterations, 0 or more", group="separation",
                     metavar="N")
    softmask: bool = opt(False, "--softmask", group="separation",
                         help="start the Wiener EM from soft masks (spectrograms**alpha) instead "
                              "of magnitudes")
    alpha: float = opt(1.0, "--alpha", help="exponent of the soft masks", group="separation",
                       metavar="A")
    residual_model: bool = opt(False, "--residual-model", group="separation",
                               help="add a 'residual' stem: what the model's sources leave of the "
                                    "mixture (norbert's residual model)")
    aggregate: Optional[Tuple[Tuple[str, Tuple[str, ...]], ...]] = opt(
        None, "--aggregate", metavar="NAME=SOURCES", group="separation", parse=aggregate_item,
        default_text="none",
        help="also write a stem that is the sum of some sources, e.g. "
             "accompaniment=bass,drums,other (may be repeated)")
    precision: str = PRECISION.field(PRECISIONS[0])

    def __post_init__(self):
        if self.targets is not None:   # one name is not its letters; "vocals,drums" is two
            names = (self.targets,) if isinstance(self.targets, str) else self.targets
            object.__setattr__(self, "targets", tuple(
                t.strip() for name in names for t in str(name).split(",") if t.strip()))
        if self.aggregate is not None:
            items = self.aggregate.items() if isinstance(self.aggregate, dict) else self.aggregate
            try:
                pairs = tuple((str(name), (parts,) if isinstance(parts, str) else tuple(parts))
                              for name, parts in items)
            except (TypeError, ValueError):
                raise ConfigError(f"aggregate must map stem names to source names, e.g. "
                                  f"{{'accompaniment': ('bass', 'drums', 'other')}}, not "
                                  f"{self.aggregate!r}") from None
            names = [n for n, _ in pairs]
            if len(set(names)) != len(names):
                raise ConfigError(f"aggregate names repeat: {names}")
            if any(not parts for _, parts in pairs):
                raise ConfigError("each aggregate stem needs at least one source")
            object.__setattr__(self, "aggregate", pairs or None)
        if int(self.niter) != self.niter or self.niter < 0:
            raise ConfigError(f"niter must be a whole number >= 0, not {self.niter!r}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be positive, not {self.alpha!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                              f"{self.precision!r}")


@dataclass(frozen=True)
class LoadConfig:
    """Which model to separate with and where it runs (:meth:`xumx.Separator.load`).

    ``model`` None: the published weights. ``sample_rate`` None: the model's own.
    ``context``/``device_id``: the command line's spelling of the device (:attr:`device`).
    """
    model: Optional[str] = MODEL.field(None, "the published weights")
    umx: bool = UMX.field(False)
    sample_rate: Optional[int] = SAMPLE_RATE.field(None, "the model's (44100 for x-umx.h5)")
    context: str = CONTEXT.field("cpu")
    device_id: str = DEVICE_ID.field("0")

    def __post_init__(self):
        if self.sample_rate is not None and self.sample_rate <= 0:
            raise ConfigError(f"--sample-rate must be positive, not {self.sample_rate}")

    @property
    def device(self) -> str:
        """The device as :func:`xumx.engine.parse_device` reads it: 'cpu' or 'cuda:<id>'."""
        return "cpu" if self.context == "cpu" else f"cuda:{self.device_id}"


@dataclass(frozen=True)
class ChunkConfig:
    """How long signals are cut for separation (:mod:`xumx.chunking`): chunks of ``chunk_dur``
    seconds (0: one piece) sharing ``overlap`` seconds, cross-faded; consecutive chunks of
    equal length go through the network together while their STFT frames add up to at most
    ``batch_frames`` (the cap on the network's frames in flight; one chunk always)."""
    chunk_dur: float = CHUNK_DUR.field(30.0)
    overlap: float = OVERLAP.field(1.0)
    batch_frames: int = BATCH_FRAMES.field(0)

    def __post_init__(self):
        problems = []
        if not self.chunk_dur >= 0:
            problems.append(f"--chunk-dur must be 0 (no chunking) or positive, not {self.chunk_dur!r}")
        if not self.overlap >= 0:
            problems.append(f"--overlap must be 0 or more seconds, not {self.overlap!r}")
        if self.chunk_dur and self.overlap * 2 >= self.chunk_dur:
            problems.append(f"--chunk-dur must be more than twice the overlap "
                            f"({2 * self.overlap:g} s), not {self.chunk_dur:g}")
        if not self.batch_frames >= 0:
            problems.append(f"--batch-frames must be 0 (one chunk at a time) or more, "
                            f"not {self.batch_frames!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    def samples(self, rate: int) -> Tuple[int, int]:
        """(chunk, overlap) in samples at ``rate``."""
        return int(round(self.chunk_dur * rate)), int(round(self.overlap * rate))


OUTPUT_FORMATS = ("wav", "flac", "mp3")
OUTPUT_BITS = ("16", "24", "float")
#: Sample format of wav/flac stems and bitrate of mp3 stems when not given.
DEFAULT_BITS, DEFAULT_BITRATE = "16", 320


@dataclass(frozen=True)
class OutputConfig:
    """What ``xumx.test`` reads and how it writes the stems.

    ``inputs``: files, folders (their audio files) or quoted wildcard patterns
    (:func:`xumx.inference.expand_inputs`). ``output_rate``: 'input', 'model' or a rate in
    Hz. ``bits``: '16', '24' or 'float' (wav/flac; None: :data:`DEFAULT_BITS`); ``bitrate``:
    kbit/s (mp3; None: :data:`DEFAULT_BITRATE`).
    """
    inputs: Tuple[str, ...] = opt((), "--inputs", metavar="FILE", required=True, positional=True,
                                  group="input and output",
                                  help="audio files to separate (anything ffmpeg decodes), "
                                       "folders of them, quoted wildcards ('songs/*.mp3') or - "
                                       "(standard input: stems in <out-dir>/stdin); also "
                                       "without --inputs: xumx.test song.mp3")
    out_dir: Optional[str] = OUT_DIR.field(None, "the current folder")
    recursive: bool = opt(False, "--recursive", "-r", group="input and output",
                          help="a folder given also means the audio files of its sub-folders, at "
                               "any depth (without it: only the folder's own files)")
    start: float = opt(0.0, "--start", help=f"separate from this time: {TIME_FORMS}",
                       group="input and output", metavar="TIME", parse=seconds)
    duration: float = opt(-1.0, "--duration", help="separate this long (same forms as --start); "
                          "negative: to the end", group="input and output", metavar="TIME",
                          parse=seconds)
    out_format: str = opt("wav", "--format", choices=OUTPUT_FORMATS, group="input and output",
                          help="stem file format")
    bits: Optional[str] = opt(None, "--bits", choices=OUTPUT_BITS, group="input and output",
                              default_text=f"{DEFAULT_BITS}",
                              help="sample format of wav/flac stems: 16, 24 (integer) or float "
                                   "(32-bit float, wav only)")
    bitrate: Optional[int] = opt(None, "--bitrate", help="bitrate of mp3 stems in kbit/s",
                                 group="input and output", metavar="KBPS",
                                 default_text=f"{DEFAULT_BITRATE}")
    output_rate: str = opt("input", "--output-rate", group="input and output", metavar="RATE",
                           help="sample rate of the stems: 'input' (the input file's), 'model' "
                                "(the model's), or a rate in Hz; mp3 stems at a rate mp3 cannot "
                                "hold: the next one up (at most 48000), with a warning")
    quiet: bool = QUIET.field(False)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        problems = []
        if not self.start >= 0:
            problems.append(f"--start must be 0 or more seconds, not {self.start!r}")
        if self.duration == 0:
            problems.append("--duration must be positive (or negative for 'to the end'), not 0")
        if self.out_format not in OUTPUT_FORMATS:
            problems.append(f"unknown output format {self.out_format!r}")
        if self.bits is not None and self.bits not in OUTPUT_BITS:
            problems.append(f"--bits must be one of {list(OUTPUT_BITS)}, not {self.bits!r}")
        if self.out_format == "mp3" and self.bits is not None:
            problems.append(f"--bits {self.bits} applies to wav and flac stems, not mp3 "
                            f"(mp3 has --bitrate)")
        if self.out_format != "mp3" and self.bitrate is not None:
            problems.append(f"--bitrate applies to mp3 stems only, not {self.out_format} "
                            f"(use --format mp3, or --bits)")
        if self.out_format == "flac" and self.bits == "float":
            problems.append("flac stores integers only: use --bits 16 or 24 (or --format wav)")
        if self.bitrate is not None and not 8 <= self.bitrate <= 320:
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
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class EvalConfig:
    """What ``xumx.eval`` scores and where it writes (see :mod:`xumx.evaluation`)."""
    root: Optional[str] = ROOT.field(None, "$MUSDB_PATH")
    subset: str = opt("test", "--subset", choices=("train", "test"), group="evaluation",
                      help="MUSDB18 subset to evaluate")
    is_wav: bool = IS_WAV.field(False)
    tracks: Optional[Tuple[str, ...]] = opt(None, "--tracks", metavar="NAME", group="evaluation",
                                            default_text="every track of the subset",
                                            help="names of the tracks to evaluate")
    out_dir: Optional[str] = OUT_DIR.field(None, "not written")
    eval_dir: str = opt("scores", "--eval-dir", "--evaldir", metavar="DIR", group="evaluation",
                        help="folder for the scores: museval JSON per track, CSV, store, sdr.png")
    cores: int = opt(1, "--cores", help="tracks separated and scored in parallel processes",
                     group="evaluation", metavar="N")
    baseline: bool = opt(False, "--baseline", group="evaluation",
                         help="also score the mixture as the estimate of every target "
                              "(the mixture-as-estimate baseline)")
    name: Optional[str] = opt(None, "--name", metavar="NAME", group="evaluation",
                              default_text="the run folder's or weights file's name",
                              help="the model's name in scores.csv and sdr.png")
    quiet: bool = QUIET.field(False)

    def __post_init__(self):
        if self.tracks is not None:
            object.__setattr__(self, "tracks", tuple(self.tracks))
        if self.cores < 1:
            raise ConfigError(f"--cores must be at least 1, not {self.cores}")


AUGMENTATIONS = ("gain", "channelswap")


@dataclass(frozen=True)
class TrainConfig:
    """Everything of a training run except the network's shapes (see :mod:`xumx.training.trainer`).

    ``bandwidth`` fixes the ``max_bin`` of a new model (:func:`parse` applies it).
    """
    root: Optional[str] = ROOT.field(None, "download the 7 s preview")
    is_wav: bool = IS_WAV.field(False)
    seq_dur: float = opt(6.0, "--seq-dur", help="training excerpt length in seconds",
                         group="data", metavar="SECONDS")
    valid_dur: float = opt(100.0, "--valid-dur", "--valid_dur", group="data", metavar="SECONDS",
                           help="validation window length in seconds; the last partial window "
                                "counts")
    samples_per_track: int = opt(64, "--samples-per-track", help="excerpts per track and epoch",
                                 group="data", metavar="N")
    source_augmentations: Tuple[str, ...] = opt(AUGMENTATIONS, "--source-augmentations", nargs="*",
                                                metavar="NAME", group="data",
                                                help="per-source augmentations: gain, channelswap")
    seed: int = SEED.field(42)
    bandwidth: float = opt(float(DEFAULT_BANDWIDTH), "--bandwidth", group="model", metavar="HZ",
                           help="highest frequency the network sees, in Hz (fixes max_bin)")
    output: str = opt("x-umx", "--output", group="training", metavar="DIR",
                      help="output folder of the run; one that holds another run is refused "
                           "(continue that one with --resume DIR, or add --force)")
    force: bool = opt(False, "--force", group="training",
                      help="start a new run in an --output folder that holds one, removing that "
                           "run's files (its model, checkpoint, history and configuration)")
    resume: Optional[str] = opt(None, "--resume", deprecated=("--model",), group="training",
                                metavar="PATH",
                                help="continue a run: its output folder (its checkpoint.h5 and "
                                     "config.yaml) or a checkpoint file; a weights file starts a "
                                     "new run from its weights (--model: the old spelling)")
    epochs: int = opt(1000, "--epochs", help="epochs", group="training", metavar="N")
    batch_size: int = opt(16, "--batch-size", help="excerpts per step and process",
                          group="training", metavar="N")
    lr: float = opt(0.001, "--lr", help="Adam learning rate", group="training", metavar="LR")
    patience: int = opt(1000, "--patience", group="training", metavar="N",
                        help="early stopping: epochs without validation improvement")
    lr_decay_patience: int = opt(80, "--lr-decay-patience", group="training", metavar="N",
                                 help="epochs without improvement before the learning rate decays")
    lr_decay_gamma: float = opt(0.3, "--lr-decay-gamma", help="learning-rate decay factor",
                                group="training", metavar="G")
    weight_decay: float = opt(0.00001, "--weight-decay", help="L2 weight decay", group="training",
                              metavar="W")
    mcoef: float = opt(10.0, "--mcoef", group="training", metavar="C",
                       help="loss = mcoef * time-domain loss + frequency-domain loss")
    dropout: float = opt(0.4, "--dropout", group="training", metavar="P",
                         help="dropout rate between LSTM layers in training (cuDNN's: on the "
                              "outputs of every layer but the last); 0: none")
    context: str = CONTEXT.field("cpu")
    device_id: str = DEVICE_ID.field("0")
    quiet: bool = QUIET.field(False)

    def __post_init__(self):
        object.__setattr__(self, "source_augmentations", tuple(self.source_augmentations))
        problems = []
        for name in ("epochs", "batch_size", "samples_per_track"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("seq_dur", "valid_dur", "lr", "bandwidth"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, not {getattr(self, name)}")
        if self.patience < 1 or self.lr_decay_patience < 0:
            problems.append("patience must be >= 1 and lr_decay_patience >= 0")
        if not 0 < self.lr_decay_gamma < 1:
            problems.append(f"lr_decay_gamma must be in (0, 1), not {self.lr_decay_gamma}")
        if self.weight_decay < 0 or self.mcoef < 0:
            problems.append("weight_decay and mcoef must be >= 0")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), not {self.dropout}")
        unknown = set(self.source_augmentations) - set(AUGMENTATIONS)
        if unknown:
            problems.append(f"unknown source augmentations {sorted(unknown)} (known: "
                            f"{' '.join(AUGMENTATIONS)})")
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(problems))


@dataclass(frozen=True)
class ExportConfig:
    """What ``xumx.export`` writes (the model: :class:`LoadConfig`)."""
    out: str = OUT.field(None)
    quiet: bool = QUIET.field(False)


@dataclass(frozen=True)
class SynthConfig:
    """The generated data set of ``xumx.synth`` (see :mod:`xumx.synth`)."""
    out: str = OUT.field(None)
    train: int = opt(8, "--train", help="training songs", group="generated data set", metavar="N")
    test: int = opt(3, "--test", help="test songs", group="generated data set", metavar="N")
    song_dur: float = opt(12.0, "--song-dur", help="length of each song in seconds",
                          group="generated data set", metavar="SECONDS")
    seed: int = SEED.field(0)

    def __post_init__(self):
        if self.train < 0 or self.test < 0 or not self.song_dur > 0:
            raise ConfigError("--train/--test must be >= 0 and --song-dur > 0")


@dataclass(frozen=True)
class DemoConfig:
    """Where ``xumx.demo`` works (see :mod:`xumx.demo`)."""
    workdir: str = opt("xumx-demo", "--workdir", metavar="DIR", group="demo",
                       help="folder for the data, model, stems and scores")

