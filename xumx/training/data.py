"""Training data from musdb: the train/validation split, seeded excerpt sampling with the
published augmentations, and the input statistics.

Randomness: every (seed, epoch) fixes a shared, balanced assignment of tracks to excerpts, and
every (seed, epoch, rank) its own generator for excerpt positions and augmentations, so each MPI
rank draws different excerpts and a resumed run draws exactly what an uninterrupted one would.
"""
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..config import ModelConfig
from ..errors import DataError
from ..files import missing_folders, remove_empty

#: Without the MUSDB18 validation names, every ``HOLDOUT_EVERY``-th track (sorted by name, starting
#: with the last of each group) is held out for validation, at least one (MUSDB18: 14 of 100).
HOLDOUT_EVERY = 7
GAIN_RANGE = (0.25, 1.25)


# --------------------------------------------------------------------------- augmentations
def augment_gain(audio: np.ndarray, rng: np.random.RandomState, low: float = GAIN_RANGE[0],
                 high: float = GAIN_RANGE[1]) -> np.ndarray:
    """Scale by a uniform random gain in [low, high). Shapes: (C, T) -> (C, T)."""
    return audio * rng.uniform(low, high)


def augment_channelswap(audio: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Reverse the channel order with probability 1/2 (multichannel only). (C, T) -> (C, T)."""
    if audio.shape[0] > 1 and rng.uniform() < 0.5:
        return audio[::-1]
    return audio


AUGMENTATIONS = {"gain": augment_gain, "channelswap": augment_channelswap}


def augment(audio: np.ndarray, names: Sequence[str], rng: np.random.RandomState) -> np.ndarray:
    """Apply the named augmentations in order."""
    for name in names:
        audio = AUGMENTATIONS[name](audio, rng)
    return audio


def epoch_rng(seed: int, epoch: int, rank: Optional[int] = None) -> np.random.RandomState:
    """The generator of one epoch (shared by all ranks when ``rank`` is None, else the rank's own)."""
    key = (seed, epoch) if rank is None else (seed, epoch, rank + 1)
    return np.random.RandomState(np.random.SeedSequence(key).generate_state(4))


# --------------------------------------------------------------------------- dataset
@dataclass
class Split:
    train: list
    valid: list
    fixed: bool    # True: the MUSDB18 validation names; False: the deterministic hold-out


def holdout_indices(nb_tracks: int, every: int = HOLDOUT_EVERY) -> List[int]:
    """Indices (into the name-sorted tracks) held out for validation: every ``every``-th, >= 1."""
    if nb_tracks < 2:
        raise DataError(f"need at least 2 training tracks for a validation hold-out, found {nb_tracks}")
    picked = list(range(every - 1, nb_tracks, every))
    return picked or [nb_tracks - 1]


#: Where musdb puts the MUSDB18 7 s preview it downloads (``root=None, download=True``).
PREVIEW_ROOT = os.path.join("~", "MUSDB18", "MUSDB18-7")


def open_musdb(root: Optional[str], is_wav: bool):
    """All tracks of musdb's 'train' subset (downloading the 7 s preview when root is None)."""
    import musdb
    if root is None:
        made = missing_folders(PREVIEW_ROOT)
        try:
            return musdb.DB(root=None, download=True, subsets="train")
        except Exception as e:  # urllib/zip/OS errors: the preview cannot be fetched
            remove_empty(made)   # musdb makes the folder before it downloads
            raise DataError(f"no --root given and the MUSDB18 7 s preview cannot be downloaded "
                            f"({type(e).__name__}: {e}); pass --root DIR (e.g. from python -m xumx.synth)") from None
    if not os.path.isdir(os.path.join(root, "train")):
        raise DataError(f"{root}: no 'train' folder (expected a MUSDB18 root)")
    db = musdb.DB(root=root, is_wav=is_wav, subsets="train")
    if not db.tracks:
        from ..synth import no_tracks
        raise DataError(no_tracks(os.path.join(root, "train"), is_wav))
    return db


def split_tracks(tracks, validation_names: Sequence[str]) -> Split:
    """The fixed MUSDB18 split when its validation names are present, else the hold-out."""
    names = set(validation_names)
    valid = [t for t in tracks if t.name in names]
    if valid:
        return Split([t for t in tracks if t.name not in names], valid, True)
    ordered = sorted(tracks, key=lambda t: t.name)
    held = set(holdout_indices(len(ordered)))
    return Split([t for i, t in enumerate(ordered) if i not in held],
                 [t for i, t in enumerate(ordered) if i in held], False)


def read_source(track, source: Optional[str], start: float = 0.0,
                duration: Optional[float] = None) -> np.ndarray:
    """A source (or the mixture, source None) of a musdb track as (C, T) float32.

    WAV folders are read with soundfile (musdb would start ffmpeg for every excerpt); STEMS go
    through musdb's chunked decoding.
    """
    path = track.path if source is None else track.sources[source].path
    if str(path).lower().endswith(".wav"):
        import soundfile as sf
        with sf.SoundFile(path) as f:
            first = int(round(start * f.samplerate))
            count = -1 if duration is None else int(round(duration * f.samplerate))
            f.seek(first)
            audio = f.read(count, dtype="float32", always_2d=True)
        return np.ascontiguousarray(audio.T)
    track.chunk_start, track.chunk_duration = start, duration
    try:
        audio = track.audio if source is None else track.sources[source].audio
    finally:
        track.chunk_start, track.chunk_duration = 0, None
    return np.ascontiguousarray(audio.T.astype(np.float32))


def fit_channels(audio: np.ndarray, nb_channels: int) -> np.ndarray:
    """Downmix to mono or repeat mono to ``nb_channels``. (C_in, T) -> (nb_channels, T)."""
    if audio.shape[0] == nb_channels:
        return audio
    if nb_channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if audio.shape[0] == 1:
        return np.repeat(audio, nb_channels, axis=0)
    raise DataError(f"cannot turn {audio.shape[0]} channels into {nb_channels}")


class MusdbTraining:
    """Excerpts and validation tracks of a musdb dataset for one model configuration.

    Args:
        tracks: training tracks (musdb Track objects); valid: validation tracks.
        cfg: the model (sources, channels, sample rate).
        seq_dur: excerpt length in seconds; samples_per_track: excerpts per track per epoch.
        augmentations: names from :data:`AUGMENTATIONS`, applied per source.
    """

    def __init__(self, tracks, valid, cfg: ModelConfig, seq_dur: float, samples_per_track: int,
                 augmentations: Sequence[str] = ("gain", "channelswap")):
        if not tracks:
            raise DataError("no training tracks")
        for t in list(tracks) + list(valid):
            missing = [s for s in cfg.sources if s not in t.sources]
            if missing:
                raise DataError(f"track {t.name!r} has no stem for {missing}")
            if int(t.rate) != cfg.sample_rate:
                raise DataError(f"track {t.name!r} is at {t.rate} Hz but the model at {cfg.sample_rate} Hz "
                                f"(--sample-rate)")
        self.tracks, self.valid, self.cfg = list(tracks), list(valid), cfg
        self.seq_dur, self.samples_per_track = float(seq_dur), int(samples_per_track)
        self.augmentations = tuple(augmentations)
        self.nb_samples = int(round(seq_dur * cfg.sample_rate))
        short = [t.name for t in self.tracks if t.duration < seq_dur]
        if short:
            raise DataError(f"{len(short)} training tracks are shorter than --seq-dur {seq_dur} s, e.g. {short[0]!r}")

    @property
    def epoch_size(self) -> int:
        """Excerpts per epoch (all ranks together): tracks x samples per track."""
        return len(self.tracks) * self.samples_per_track

    def iterations(self, batch_size: int, n_procs: int = 1) -> int:
        """Steps per epoch and rank; at least one."""
        return max(1, self.epoch_size // (batch_size * n_procs))

    def assignment(self, epoch: int, seed: int) -> np.ndarray:
        """(epoch_size, S) track indices: per source an independent shuffle of every track repeated
        ``samples_per_track`` times (balanced; tracks mix at random, with replacement across sources)."""
        rng = epoch_rng(seed, epoch)
        base = np.repeat(np.arange(len(self.tracks)), self.samples_per_track)
        return np.stack([rng.permutation(base) for _ in self.cfg.sources], axis=1)

    def excerpt(self, track_ids: Sequence[int], rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray]:
        """One training example: mixture (C, T) = sum of the augmented stems, targets (S*C, T)."""
        stems = []
        for source, tid in zip(self.cfg.sources, track_ids):
            track = self.tracks[int(tid)]
            start = rng.uniform(0.0, max(track.duration - self.seq_dur, 0.0))
            audio = fit_channels(read_source(track, source, start, self.seq_dur), self.cfg.nb_channels)
            audio = audio[:, :self.nb_samples]
            if audio.shape[1] < self.nb_samples:
                audio = np.pad(audio, ((0, 0), (0, self.nb_samples - audio.shape[1])))
            stems.append(augment(audio, self.augmentations, rng))
        stems = np.stack(stems).astype(np.float32)  # (S, C, T)
        return stems.sum(axis=0), stems.reshape(-1, stems.shape[-1])

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0,
                n_procs: int = 1) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """This rank's batches of one epoch: (mixtures (B, C, T), targets (B, S*C, T)).

        The shared assignment is cut into disjoint per-rank slices; positions and augmentations
        come from the rank's own generator.
        """
        ids = self.assignment(epoch, seed)
        rng = epoch_rng(seed, epoch, rank)
        steps = self.iterations(batch_size, n_procs)
        for step in range(steps):
            rows = [ids[((step * n_procs + rank) * batch_size + b) % len(ids)] for b in range(batch_size)]
            pairs = [self.excerpt(r, rng) for r in rows]
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def validation_track(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Full validation track: the real mixture (C, T) and the targets (S*C, T)."""
        track = self.valid[index]
        mix = fit_channels(read_source(track, None), self.cfg.nb_channels)
        targets = [fit_channels(read_source(track, s), self.cfg.nb_channels) for s in self.cfg.sources]
        length = min([mix.shape[1]] + [t.shape[1] for t in targets])
        return mix[:, :length], np.concatenate([t[:, :length] for t in targets])


def validation_windows(length: int, window: int, min_len: int) -> List[Tuple[int, int]]:
    """(start, stop) windows covering all ``length`` samples: full windows of ``window`` samples
    and the last partial one (the published code dropped it). A remainder shorter than
    ``min_len`` joins the previous window instead of standing alone."""
    if length <= window:
        return [(0, length)]
    bounds = list(range(0, length, window)) + [length]
    if bounds[-1] - bounds[-2] < min_len:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


# --------------------------------------------------------------------------- statistics
class RunningMoments:
    """Streaming per-feature mean and variance (Chan et al. parallel update) of (n, F) rows."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def update(self, rows: np.ndarray):
        rows = np.asarray(rows, dtype=np.float64)
        n, mean = rows.shape[0], rows.mean(axis=0)
        m2 = ((rows - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


def input_statistics(mixtures, n_fft: int, n_hop: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per bin of the mono-downmixed STFT magnitude of the given
    mixtures (an iterable of (C, T) arrays), std floored at 1e-4 * max(std) (published
    ``get_statistics``). Returns two (F,) float32 arrays."""
    from ..dsp import stft_frames
    moments = RunningMoments()
    for audio in mixtures:
        frames = stft_frames(np.asarray(audio), n_fft, n_hop, dtype=np.complex64)  # (C, N, F)
        moments.update(np.abs(frames).mean(axis=0))   # (N, F)
    if moments.count == 0:
        raise DataError("no training audio for the input statistics")
    std = moments.std
    std = np.maximum(std, 1e-4 * std.max())
    return moments.mean.astype(np.float32), std.astype(np.float32)


def training_mixtures(data: MusdbTraining) -> Iterator[np.ndarray]:
    """Full mixtures of the training tracks (for :func:`input_statistics`)."""
    for track in data.tracks:
        yield fit_channels(read_source(track, None), data.cfg.nb_channels)
