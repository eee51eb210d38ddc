"""The one configuration of xumx: dataclasses, and the command lines generated from them.

Every field that a command line sets carries its flag in its metadata (:class:`Flag`: names,
help, group; the default is the field's own), so a flag, its help and its default are written
once. :data:`COMMANDS` says which dataclasses make up each entry module's command line;
:func:`build_parser` generates its parser and :func:`parse` turns a command line into the
dataclasses (no ``argparse.Namespace`` leaves the entry modules). A flag that several commands
share is one :class:`Flag` object, so it means the same in each (``--sample-rate``: the rate
the model runs at; ``--context``: where the network runs; ``--out-dir``: the folder of the
separated stems...).

Training also reads YAML recipes (:func:`train_values`): ``python -m xumx.train --config
FILE.yaml`` sets any field of :class:`ModelConfig` and :class:`TrainConfig` by its name, flags
on the command line override it, and the run's folder records the effective configuration as
``config.yaml`` (:func:`recipe_text`), which resuming reads.

``python scripts/flags_doc.py > docs/flags.md`` writes the flag tables of docs/flags.md
(:func:`flags_document`).
"""
import argparse
import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .errors import ConfigError, XumxWarning
from .spec import bandwidth_to_max_bin

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


# --------------------------------------------------------------------------- times
TIME_FORMS = "seconds (90, 2.5) or [h:]m:ss[.fff] (1:30, 1:02.5)"


def seconds(text: str) -> float:
    """A time given on the command line, in seconds: ``90``, ``2.5``, ``1:30``, ``1:02.5`` or
    ``1:00:05`` (minutes and seconds below 60 after the first field). Negative plain numbers
    pass (``--duration -1``). Raises ``argparse.ArgumentTypeError`` naming the forms."""
    text = str(text).strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            return float(text)
        if len(parts) <= 3 and all(p and p.lstrip("0123456789.") == "" for p in parts):
            values = [float(p) for p in parts]
            if all(v < 60 for v in values[1:]) and all(v == int(v) for v in values[:-1]):
                total = 0.0
                for v in values:
                    total = total * 60 + v
                return total
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected {TIME_FORMS}, not {text!r}")


def clock(value: float) -> str:
    """``value`` seconds as ``m:ss.fff`` (how summaries and messages print times)."""
    m, s = divmod(max(float(value), 0.0), 60.0)
    if round(s, 3) >= 60:
        m, s = m + 1, 0.0
    return f"{int(m)}:{s:06.3f}"


# --------------------------------------------------------------------------- flags
@dataclass(frozen=True)
class Flag:
    """A command-line flag of a config field: its option strings (the first is the one shown),
    help, help group and argparse details. The default is the field's (:meth:`field`).

    ``deprecated``: older spellings still accepted, each with a warning naming the new one.
    ``parse``: turns the command line's text into the value (default: the field's type).
    ``positional``: the values may also be given without the flag (``xumx.test song.mp3``).
    """
    names: Tuple[str, ...]
    help: str
    group: str
    choices: Optional[Tuple[str, ...]] = None
    metavar: Optional[str] = None
    required: bool = False
    nargs: Optional[str] = None          # lists: '+' unless given ('*': may be empty)
    deprecated: Tuple[str, ...] = ()
    parse: Optional[Callable[[str], Any]] = None
    positional: bool = False

    def field(self, default, default_text: Optional[str] = None):
        """A dataclass field with this flag; ``default_text`` says what a None default means."""
        return dataclasses.field(default=default,
                                 metadata={"flag": self, "default_text": default_text})


def opt(default, *names: str, help: str, group: str, default_text: Optional[str] = None, **kw):
    """A field with a flag of its own (not shared with another command)."""
    return Flag(tuple(names), help, group, **kw).field(default, default_text)


# The flags that several commands share: one object each, so one meaning and one help.
MODEL = Flag(("--model",), "X-UMX weights file (.h5) or a training run's folder (its "
             "best_xumx.h5); with --umx-infer a folder of <target>.h5; without --model: the "
             "published x-umx.h5, downloaded once into $XUMX_CACHE or ~/.cache/xumx and checked "
             "by SHA-1", "model", metavar="PATH")
UMX = Flag(("--umx-infer",), "independent Open-Unmix (UMX) networks, a folder of <target>.h5, "
           "instead of X-UMX", "model")
SAMPLE_RATE = Flag(("--sample-rate",), "the rate the model runs at, in Hz: audio is resampled to "
                   "it (xumx.train: the rate of the model trained, which the data set must have)",
                   "model", metavar="HZ")
TARGETS = Flag(("--targets",), "sources to separate, by name (with --umx-infer: the <target>.h5 "
               "files read)", "separation", metavar="NAME")
CHUNK_DUR = Flag(("--chunk-dur",), "separate in chunks of this many seconds, cross-faded over "
                 "--overlap, in bounded memory; 0: each file or track in one piece",
                 "separation", metavar="SECONDS")
OVERLAP = Flag(("--overlap",), "seconds shared by neighbouring chunks, cross-faded "
               "(raised cosine)", "separation", metavar="SECONDS")
CONTEXT = Flag(("--context", "-c"), "cpu, or cudnn for an NVIDIA GPU (separation: onnxruntime-gpu's "
               "CUDA provider; training: nnabla-ext-cuda)", "runtime", choices=("cpu", "cudnn"))
DEVICE_ID = Flag(("--device-id", "-d"), "GPU index for --context cudnn", "runtime", metavar="ID")
OUT_DIR = Flag(("--out-dir", "--outdir"), "folder for the separated stems: <out-dir>/<input name>/"
               "<target>.<ext> (xumx.test), <out-dir>/<subset>/<track>/<target>.wav (xumx.eval)",
               "input and output", metavar="DIR")
ROOT = Flag(("--root",), "MUSDB18 root folder (STEMS, or WAV with --is-wav)", "data", metavar="DIR")
IS_WAV = Flag(("--is-wav",), "the data set is decoded WAV: <root>/<subset>/<track>/<source>.wav "
              "(musdb's is_wav layout)", "data")
SEED = Flag(("--seed",), "random seed (every generator of the run is a function of it)", "data",
            metavar="N")
OUT = Flag(("--out",), "what the command writes: the ONNX file (xumx.export), the data set's root "
           "folder (xumx.synth)", "input and output", metavar="PATH", required=True)
QUIET = Flag(("--quiet", "-q"), "no progress bars and no summary lines (errors and warnings are "
             "still printed)", "input and output")


# --------------------------------------------------------------------------- the configurations
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


@dataclass(frozen=True)
class SeparationConfig:
    """How estimates are post-processed (norbert 0.2.1 semantics) and which are returned
    (``targets``: names, or one name as a string; None: every source of the model)."""
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

    def __post_init__(self):
        if isinstance(self.targets, str):   # one name, not its letters
            object.__setattr__(self, "targets", (self.targets,))
        elif self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
        if int(self.niter) != self.niter or self.niter < 0:
            raise ConfigError(f"niter must be a whole number >= 0, not {self.niter!r}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be positive, not {self.alpha!r}")


@dataclass(frozen=True)
class LoadConfig:
    """Which model to separate with and where it runs (:func:`xumx.separator.load_separator`).

    ``model`` None: the published weights. ``sample_rate`` None: the model's own.
    """
    model: Optional[str] = MODEL.field(None, "the published weights")
    umx: bool = UMX.field(False)
    sample_rate: Optional[int] = SAMPLE_RATE.field(None, "the model's (44100 for x-umx.h5)")
    context: str = CONTEXT.field("cpu")
    device_id: str = DEVICE_ID.field("0")

    def __post_init__(self):
        if self.sample_rate is not None and self.sample_rate <= 0:
            raise ConfigError(f"--sample-rate must be positive, not {self.sample_rate}")


@dataclass(frozen=True)
class ChunkConfig:
    """How long signals are cut for separation (:mod:`xumx.chunking`): chunks of ``chunk_dur``
    seconds (0: one piece) sharing ``overlap`` seconds, cross-faded."""
    chunk_dur: float = CHUNK_DUR.field(30.0)
    overlap: float = OVERLAP.field(1.0)

    def __post_init__(self):
        problems = []
        if not self.chunk_dur >= 0:
            problems.append(f"--chunk-dur must be 0 (no chunking) or positive, not {self.chunk_dur!r}")
        if not self.overlap >= 0:
            problems.append(f"--overlap must be 0 or more seconds, not {self.overlap!r}")
        if self.chunk_dur and self.overlap * 2 >= self.chunk_dur:
            problems.append(f"--chunk-dur must be more than twice the overlap "
                            f"({2 * self.overlap:g} s), not {self.chunk_dur:g}")
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
                                       "folders of them or quoted wildcards ('songs/*.mp3'); "
                                       "also without --inputs: xumx.test song.mp3")
    out_dir: Optional[str] = OUT_DIR.field(None, "the current folder")
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
                                "(the model's), or a rate in Hz")
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

    @property
    def sample_bits(self) -> str:
        """The sample format of wav/flac stems (``bits`` or its default)."""
        return self.bits or DEFAULT_BITS

    @property
    def mp3_bitrate(self) -> int:
        """The bitrate of mp3 stems in kbit/s (``bitrate`` or its default)."""
        return self.bitrate or DEFAULT_BITRATE


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

    def __post_init__(self):
        if self.tracks is not None:
            object.__setattr__(self, "tracks", tuple(self.tracks))
        if self.cores < 1:
            raise ConfigError(f"--cores must be at least 1, not {self.cores}")


AUGMENTATIONS = ("gain", "channelswap")


@dataclass(frozen=True)
class TrainConfig:
    """Everything of a training run except the network's shapes (see ``xumx.training``).

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
    output: str = opt("x-umx", "--output", help="output folder of the run", group="training",
                      metavar="DIR")
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
    context: str = CONTEXT.field("cpu")
    device_id: str = DEVICE_ID.field("0")

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


# --------------------------------------------------------------------------- the commands
@dataclass(frozen=True)
class Command:
    """An entry module's command line: what it does, and the dataclasses it sets (``fields``:
    the fields of each that it sets, None for all with a flag), in the order :func:`parse`
    returns them."""
    summary: str
    sections: Tuple[Tuple[type, Optional[Tuple[str, ...]]], ...]
    recipes: bool = False    # --config FILE.yaml


COMMANDS: Dict[str, Command] = {
    "test": Command("Separate audio files into stems.",
                    ((OutputConfig, None), (ChunkConfig, None), (LoadConfig, None),
                     (SeparationConfig, None))),
    "train": Command("Train X-UMX on MUSDB18 (or any musdb-layout data set), on one machine or "
                     "with mpirun -n N.", ((ModelConfig, None), (TrainConfig, None)), recipes=True),
    "eval": Command("Separate MUSDB18 tracks and score them with museval (BSSEval v4).",
                    ((EvalConfig, None), (ChunkConfig, None), (LoadConfig, None),
                     (SeparationConfig, None))),
    "export": Command("Write the network as an ONNX file.",
                      ((ExportConfig, None), (LoadConfig, ("model", "umx")),
                       (SeparationConfig, ("targets",)))),
    "synth": Command("Write a small generated MUSDB-like WAV data set.", ((SynthConfig, None),)),
    "demo": Command("The whole job, offline, on a CPU: generate data, train, separate, evaluate.",
                    ((DemoConfig, None),)),
}
#: Help groups, in the order they are shown.
GROUPS = ("input and output", "data", "model", "separation", "training", "evaluation",
          "generated data set", "demo", "runtime")
RECIPE_HELP = ("YAML recipe setting any training field by name: a file, or a recipe shipped with "
               "xumx (x-umx-musdb18: the published one; demo); flags given here override it")


def flagged_fields(cls, names: Optional[Sequence[str]] = None) -> list:
    """The dataclass fields of ``cls`` that have a flag (only ``names``, if given)."""
    out = [f for f in dataclasses.fields(cls) if "flag" in f.metadata]
    if names is not None:
        out = [f for f in out if f.name in names]
    return out


def command_fields(command: str) -> list:
    """(dataclass, field) of every flag of ``command``, in section order."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    return [(cls, f) for cls, names in COMMANDS[command].sections
            for f in flagged_fields(cls, names)]


def shown_fields(command: str) -> list:
    """(dataclass, field) of every flag of ``command`` in the order --help and docs/flags.md
    show them: by :data:`GROUPS`, then in section order."""
    fields = command_fields(command)
    missing = {f.metadata["flag"].group for _, f in fields} - set(GROUPS)
    assert not missing, f"flag groups not in GROUPS: {missing}"
    return sorted(fields, key=lambda cf: GROUPS.index(cf[1].metadata["flag"].group))


def _value_type(f) -> Tuple[Any, bool]:
    """(element type, is a list) of a field's annotation."""
    kind = f.type
    if typing.get_origin(kind) is typing.Union:   # Optional[X]
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) in (tuple, Tuple):
        return typing.get_args(kind)[0], True
    return kind, False


def default_text(f) -> str:
    """The default of a field as the help and docs/flags.md show it."""
    flag = f.metadata["flag"]
    if flag.required:
        return "required"
    if f.metadata["default_text"]:
        return f.metadata["default_text"]
    if f.default is False:
        return "off"
    if isinstance(f.default, tuple):
        return " ".join(map(str, f.default))
    return "none" if f.default is None else f"{f.default:g}" if isinstance(f.default, float) \
        else str(f.default)


class _Deprecated(argparse.Action):
    """Stores like the flag it stands for, with a warning naming that flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        import warnings
        warnings.warn(f"{option_string} is deprecated here: use {self.metavar}", XumxWarning)
        setattr(namespace, self.dest, values)


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``python -m xumx.<command>``, generated from :data:`COMMANDS`.

    Flags not given are absent from its namespace (defaults come from the dataclasses)."""
    from .cli import Parser
    parser = Parser(prog=f"python -m xumx.{command}", description=COMMANDS[command].summary,
                    argument_default=argparse.SUPPRESS)
    groups = {}
    for _, f in shown_fields(command):
        flag = f.metadata["flag"]
        group = groups.get(flag.group) or groups.setdefault(
            flag.group, parser.add_argument_group(flag.group))
        kind, many = _value_type(f)
        kw: Dict[str, Any] = {"dest": f.name}
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw.update(type=flag.parse or kind, metavar=flag.metavar if not flag.choices else None,
                      choices=flag.choices)
            if many:
                kw["nargs"] = flag.nargs or "+"
        if flag.required and not flag.positional:
            kw["required"] = True
        if flag.positional:   # also without the flag; given() joins the two
            group.add_argument(f"{POSITIONAL}{f.name}", nargs="*", type=kw["type"],
                               metavar=kw["metavar"], help=argparse.SUPPRESS, default=[])
        shown = "" if kind is bool or flag.required else f" (default: {default_text(f)})"
        group.add_argument(*flag.names, help=flag.help.replace("%", "%%") + shown, **kw)
        for old in flag.deprecated:
            group.add_argument(old, dest=f.name, action=_Deprecated, type=kind,
                               metavar=flag.names[0], help=argparse.SUPPRESS)
    if COMMANDS[command].recipes:
        parser.add_argument("--config", metavar="FILE.yaml", help=RECIPE_HELP)
    return parser


#: The destination prefix of a flag's positional form (:attr:`Flag.positional`).
POSITIONAL = "positional_"


def given(command: str, argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """{field name: value} of the flags on the command line ``argv`` (default: sys.argv[1:]);
    a positional form's values come before the flag's. Raises ConfigError for a bad command
    line (a required flag given neither way included)."""
    values = vars(build_parser(command).parse_intermixed_args(argv))
    for _, f in command_fields(command):
        flag = f.metadata["flag"]
        if not flag.positional:
            continue
        loose = list(values.pop(POSITIONAL + f.name, []))
        if loose or f.name in values:
            values[f.name] = loose + list(values.get(f.name, []))
        elif flag.required:
            raise ConfigError(f"the following arguments are required: {flag.names[0]} "
                              f"(or give them without it: python -m xumx.{command} "
                              f"{flag.metavar or f.name.upper()} ...)")
    return values


def build(command: str, values: Dict[str, Any]) -> tuple:
    """The dataclasses of ``command`` (:data:`COMMANDS` order) from {field name: value}; a
    field absent from ``values`` keeps its default. Raises ConfigError for invalid values."""
    values = dict(values)
    values.pop("config", None)
    out = []
    for cls, names in COMMANDS[command].sections:
        kw = {f.name: _coerce(f, values[f.name], f.name) for f in flagged_fields(cls, names)
              if f.name in values}
        try:
            out.append(cls(**kw))
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
    if command == "train":   # the bandwidth fixes the new model's max_bin
        model, train = out
        out[0] = dataclasses.replace(model, max_bin=bandwidth_to_max_bin(
            model.sample_rate, model.nfft, train.bandwidth))
    return tuple(out)


def parse(command: str, argv: Optional[Sequence[str]] = None) -> tuple:
    """The dataclasses of ``python -m xumx.<command> argv`` (see :data:`COMMANDS`); training
    recipes and resumed runs are read as :func:`train_values` says."""
    values = given(command, argv)
    if command == "train":
        values = train_values(values)
    return build(command, values)


def from_args(command: str, args: argparse.Namespace) -> tuple:
    """:func:`build` of a namespace of :func:`build_parser` (for callers that parsed themselves)."""
    return build(command, vars(args))


# --------------------------------------------------------------------------- recipes
#: The file in a training run's folder that records its effective configuration.
RUN_CONFIG = "config.yaml"
#: Fields a recipe does not set: where a run goes and what it continues are the command line's.
NOT_IN_RECIPES = ("resume",)


def _coerce(f, value, where: str):
    """``value`` (from argparse or YAML) as field ``f`` holds it; ConfigError naming ``where``."""
    kind, many = _value_type(f)
    if value is None:
        return None
    try:
        if many:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise TypeError("a list")
            return tuple(kind(v) for v in value)
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError("true or false")
            return value
        if kind in (int, float) and isinstance(value, bool):
            raise TypeError("a number")
        if kind is int and isinstance(value, float) and value != int(value):
            raise TypeError("a whole number")
        return kind(value)
    except (TypeError, ValueError) as e:
        want = e.args[0] if isinstance(e, TypeError) and e.args else kind.__name__
        raise ConfigError(f"{where}: expected {want}, not {value!r}") from None


def read_recipe(path: str, command: str = "train") -> Dict[str, Any]:
    """{field name: value} of a YAML recipe for ``command``; ConfigError naming the file and
    the key for a missing or malformed file, an unknown key or a bad value."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        from .files import os_reason
        raise ConfigError(f"{path}: cannot read the recipe ({os_reason(e)})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not a YAML recipe ({' '.join(str(e).split())[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of field names to values")
    fields = {f.name: f for _, f in command_fields(command) if f.name not in NOT_IN_RECIPES}
    out = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{path}: unknown key {key!r} (the keys are the flag names with "
                              f"'_' for '-': {', '.join(sorted(fields))})")
        out[key] = _coerce(fields[key], value, f"{path}: {key}")
    return out


def recipe_path(name: str) -> str:
    """The file of ``--config NAME``: a path, or the name of a recipe shipped with xumx
    (``x-umx-musdb18``, ``demo``: recipes/ of the repository, installed as ``xumx/recipes``)."""
    if os.path.exists(name) or os.sep in name:
        return name
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(here, "recipes"), os.path.join(os.path.dirname(here), "recipes")):
        path = os.path.join(folder, name if name.endswith(".yaml") else f"{name}.yaml")
        if os.path.isfile(path):
            return path
    return name   # read_recipe says that it cannot be read


def run_config_path(resume: str) -> str:
    """The recorded configuration of the run that ``--resume`` names (a folder or a file in it)."""
    folder = resume if os.path.isdir(resume) else os.path.dirname(resume)
    return os.path.join(folder, RUN_CONFIG)


def train_values(cli: Dict[str, Any]) -> Dict[str, Any]:
    """The training fields of a command line: the resumed run's ``config.yaml`` (with
    ``--resume``, when there is one), then the recipe (``--config``), then the flags given.
    Resuming a run folder keeps writing to it unless ``--output`` is given."""
    values: Dict[str, Any] = {}
    resume = cli.get("resume")
    if resume:
        recorded = run_config_path(resume)
        if os.path.isfile(recorded):
            values.update(read_recipe(recorded))
        if os.path.isdir(resume):
            values["output"] = resume
    if cli.get("config"):
        values.update(read_recipe(recipe_path(cli["config"])))
    values.update({k: v for k, v in cli.items() if k != "config"})
    return values


def recipe_text(model: ModelConfig, train: TrainConfig) -> str:
    """The YAML of every training field (what ``config.yaml`` of a run records), by name."""
    import yaml
    configs = {ModelConfig: model, TrainConfig: train}
    data = {}
    for cls, f in command_fields("train"):
        if f.name in NOT_IN_RECIPES:
            continue
        value = getattr(configs[cls], f.name)
        data[f.name] = list(value) if isinstance(value, tuple) else value
    return ("# the effective configuration of this run (python -m xumx.train --config this file)\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


# --------------------------------------------------------------------------- docs/flags.md
def flags_markdown(command: str) -> str:
    """The flag table of ``command``: flag(s), default, meaning (one format for every table)."""
    rows = ["| Flag | Default | Meaning |", "|---|---|---|"]
    for _, f in shown_fields(command):
        flag = f.metadata["flag"]
        kind, many = _value_type(f)
        arg = ("{" + ",".join(flag.choices) + "}" if flag.choices
               else "" if kind is bool else (flag.metavar or f.name.upper()))
        if many and arg:
            arg += f" [{arg} ...]"
        names = [f"`{flag.names[0]}{' ' + arg if arg else ''}`"] + [f"`{n}`" for n in flag.names[1:]]
        meaning = flag.help + (f" (old spelling: {', '.join(flag.deprecated)})"
                               if flag.deprecated else "")
        rows.append(f"| {', '.join(names)} | {default_text(f)} | {_md(meaning)} |")
    if COMMANDS[command].recipes:
        rows.append(f"| `--config FILE.yaml` | none | {_md(RECIPE_HELP)} |")
    return "\n".join(rows)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")


def flags_document() -> str:
    """docs/flags.md: every command's flag table (tests/test_readme.py keeps it in step)."""
    parts = ["# Flags of every command", "",
             "Generated from the parsers (`python scripts/flags_doc.py > docs/flags.md`; "
             "`tests/test_readme.py` checks that it is current). A flag that several commands "
             "have means the same in each. Exit statuses: README, \"Errors and exit statuses\"."]
    for command, spec in COMMANDS.items():
        parts += ["", f"## python -m xumx.{command}", "", spec.summary, "", flags_markdown(command)]
    return "\n".join(parts) + "\n"
