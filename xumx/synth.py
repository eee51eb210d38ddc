"""A MUSDB-like dataset of generated songs, for tests and offline demos.

``python -m xumx.synth --out DIR`` writes ``DIR/{train,test}/<Artist - Title>/`` folders with
``mixture.wav`` and one WAV per source (musdb's ``is_wav`` layout, 44.1 kHz stereo 16-bit), so
``musdb.DB(root=DIR, is_wav=True)`` and ``python -m xumx.train --root DIR --is-wav`` read it.
The mixture is the exact sum of the stems. The set appears whole, in a new or empty DIR only
(:func:`make_dataset`).

The four published sources differ in band, timbre and rhythm, so a small model can learn to
separate them on a CPU within minutes:

- bass: low sawtooth notes (40-110 Hz) on half-note rhythm with a plucked envelope;
- drums: kick thumps (falling sine), noise-burst snares and short high hi-hats on the beat grid;
- vocals: gliding, vibrato tones in the mid band, shaped by two formant peaks, in phrases;
- other: sustained chords of soft detuned partials (pads), one per bar.

Every song draws its key, tempo, gains and panning from a generator seeded by (seed, subset,
index), so the dataset is reproducible. Sources outside these four get a noise texture.
"""
import os
import sys
from typing import Dict, Sequence

import numpy as np

from .config import DEFAULT_NB_CHANNELS, DEFAULT_SAMPLE_RATE, DEFAULT_SOURCES
from .errors import ConfigError
from .files import replacing

SUBSETS = ("train", "test")


def no_tracks(folder: str, is_wav: bool) -> str:
    """The line for a MUSDB subset folder where musdb found no track: the layout it expects,
    and ``--is-wav`` when the folder holds WAV tracks (this module's layout) but it was not
    given."""
    if is_wav:
        return f"no tracks in {folder}: expected <track>/mixture.wav and one WAV per source"
    wav = os.path.isdir(folder) and any(os.path.isfile(os.path.join(folder, n, "mixture.wav"))
                                        for n in os.listdir(folder))
    hint = "they are WAV folders: add --is-wav" if wav else "for WAV folders add --is-wav"
    return f"no tracks in {folder}: expected <track>.stem.mp4 files; {hint}"


def _midi_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=float) - 69.0) / 12.0)


def _envelope(n, rate, attack, decay):
    t = np.arange(n) / rate
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def _place(out, x, start):
    end = min(len(out), start + len(x))
    if end > start:
        out[start:end] += x[:end - start]


def _bass(rng, t, rate, root, beat):
    out = np.zeros_like(t)
    step = int(2 * beat * rate)
    for k, start in enumerate(range(0, len(t), step)):
        m = root - 24 + rng.choice([0, 0, 5, 7, 3, 10])
        f = float(_midi_hz(m))
        n = min(step, len(t) - start)
        tt = np.arange(n) / rate
        saw = 2.0 * ((f * tt) % 1.0) - 1.0
        tone = 0.6 * saw + 0.8 * np.sin(2 * np.pi * f * tt)
        _place(out, tone * _envelope(n, rate, 0.01, 0.6 * beat * 2), start)
    # a 4th-order low-pass keeps the bass low
    from scipy.signal import butter, sosfilt
    return sosfilt(butter(4, 300.0, fs=rate, output="sos"), out)


def _drums(rng, t, rate, beat):
    from scipy.signal import lfilter
    out = np.zeros_like(t)
    half = int(beat * rate / 2)
    kick_n, snare_n, hat_n = int(0.25 * rate), int(0.18 * rate), int(0.05 * rate)
    tk = np.arange(kick_n) / rate
    kick = np.sin(2 * np.pi * np.cumsum(50.0 + 100.0 * np.exp(-tk / 0.03)) / rate) * np.exp(-tk / 0.09)
    pattern = rng.randint(0, 2, size=8)
    for k, start in enumerate(range(0, len(t), half)):
        pos = k % 8
        if pos in (0, 4) or (pos == 6 and pattern[pos]):
            _place(out, 1.2 * kick, start)
        if pos in (2, 6):
            noise = rng.standard_normal(snare_n) * _envelope(snare_n, rate, 0.001, 0.05)
            _place(out, 0.5 * noise, start)
        hat = lfilter([1, -1], [1], rng.standard_normal(hat_n)) * _envelope(hat_n, rate, 0.0005, 0.01)
        _place(out, 0.15 * hat, start)
    return out


def _vocals(rng, t, rate, root, beat):
    out = np.zeros_like(t)
    phrase = int(4 * beat * rate)
    formants = rng.uniform(500, 900), rng.uniform(1100, 2000)
    for start in range(0, len(t), phrase):
        n = min(int(phrase * rng.uniform(0.5, 0.9)), len(t) - start)
        if n <= 0:
            break
        notes = root + 12 + rng.choice([0, 2, 4, 5, 7, 9], size=4)
        # gliding pitch: interpolate between notes, plus vibrato
        knots = np.linspace(0, n, len(notes))
        pitch = np.interp(np.arange(n), knots, notes)
        tt = np.arange(n) / rate
        f = _midi_hz(pitch) * (1.0 + 0.012 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * tt))
        phase = 2 * np.pi * np.cumsum(f) / rate
        voice = np.zeros(n)
        for h in range(1, 9):
            fh = h * f
            weight = sum(np.exp(-0.5 * ((fh - c) / 150.0) ** 2) for c in formants) + 0.15 / h
            voice += weight * np.sin(h * phase)
        env = np.minimum(1.0, tt / 0.08) * np.minimum(1.0, (n / rate - tt) / 0.1)
        _place(out, 0.5 * voice * env, start)
    return out


def _other(rng, t, rate, root, beat):
    out = np.zeros_like(t)
    bar = int(4 * beat * rate)
    chords = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4)]
    for k, start in enumerate(range(0, len(t), bar)):
        n = min(bar, len(t) - start)
        tt = np.arange(n) / rate
        chord = chords[rng.randint(len(chords))]
        pad = np.zeros(n)
        for m in chord:
            f = float(_midi_hz(root + m))
            for detune in (0.997, 1.003):
                pad += np.sin(2 * np.pi * f * detune * tt) + 0.3 * np.sin(4 * np.pi * f * detune * tt)
        env = np.minimum(1.0, tt / 0.3) * np.minimum(1.0, (n / rate - tt) / 0.3)
        _place(out, 0.12 * pad * env, start)
    return out


def _texture(rng, t, rate):
    return 0.05 * rng.standard_normal(len(t))


def song_stems(rng: np.random.RandomState, duration: float, rate: int = DEFAULT_SAMPLE_RATE,
               sources: Sequence[str] = DEFAULT_SOURCES, nb_channels: int = DEFAULT_NB_CHANNELS) -> Dict[str, np.ndarray]:
    """One generated song: {source: (T, nb_channels) float64}, each source panned and scaled."""
    t = np.arange(int(round(duration * rate))) / rate
    root = 57 + rng.randint(0, 12)
    beat = 60.0 / rng.uniform(85, 140)
    makers = {"bass": lambda: _bass(rng, t, rate, root, beat),
              "drums": lambda: _drums(rng, t, rate, beat),
              "vocals": lambda: _vocals(rng, t, rate, root, beat),
              "other": lambda: _other(rng, t, rate, root, beat)}
    stems = {}
    for source in sources:
        mono = makers.get(source, lambda: _texture(rng, t, rate))()
        mono = mono / (np.max(np.abs(mono)) + 1e-9) * rng.uniform(0.5, 1.0)
        # linear panning over the channel positions 0..1 (stereo: gains 1 - pan and pan)
        pan = rng.uniform(0.2, 0.8)
        gains = 1.0 - np.abs(np.linspace(0.0, 1.0, nb_channels) - pan) if nb_channels > 1 else np.ones(1)
        stems[source] = mono[:, None] * (gains[None, :] / gains.max())
    return stems


def write_song(folder: str, stems: Dict[str, np.ndarray], rate: int):
    """Write the stems and their exact sum as 16-bit WAVs (mixture = sum of the quantised
    stems) into the new folder ``folder``."""
    import soundfile as sf
    total = sum(stems.values())
    scale = 0.9 / max(np.max(np.abs(total)), 1e-9)
    ints = {s: np.round(a * scale * 32767).astype(np.int32) for s, a in stems.items()}
    mix = sum(ints.values())
    os.makedirs(folder)
    for name, a in list(ints.items()) + [("mixture", mix)]:
        sf.write(os.path.join(folder, f"{name}.wav"), a.astype(np.int16), rate, subtype="PCM_16")


def song_name(subset: str, index: int, seed: int) -> str:
    return f"Synth {subset.capitalize()} {index:02d} - Seed {seed}"


def make_dataset(out: str, nb_train: int = 8, nb_test: int = 3, duration: float = 12.0,
                 seed: int = 0, rate: int = DEFAULT_SAMPLE_RATE,
                 sources: Sequence[str] = DEFAULT_SOURCES, nb_channels: int = DEFAULT_NB_CHANNELS) -> Dict[str, list]:
    """Write the dataset as the folder ``out``; return {subset: [track folder, ...]}.

    The set appears whole: it is written into a temporary folder beside ``out``, which then
    takes its place (an interrupted run leaves no ``out``). ``out`` must not exist or be
    empty: a folder holding anything is refused (ConfigError), so no set is ever mixed with
    the songs of another."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"{out} is not empty: give a new or empty --out (the data set is "
                          f"written whole, never mixed with what a folder holds)")
    written = {subset: [] for subset in SUBSETS}
    with replacing(out, folder=True) as tmp:
        for subset, count in zip(SUBSETS, (nb_train, nb_test)):
            os.makedirs(os.path.join(tmp, subset))
            for index in range(count):
                rng = np.random.RandomState(np.random.SeedSequence(
                    (seed, SUBSETS.index(subset), index)).generate_state(1)[0])
                name = song_name(subset, index, seed)
                write_song(os.path.join(tmp, subset, name),
                           song_stems(rng, duration, rate, sources, nb_channels), rate)
                written[subset].append(os.path.join(out, subset, name))
    return written


def main(argv=None) -> int:
    from .cli import run
    return run("synth", _synth, argv, "no data set was written (it appears whole or not at all)")


def _synth(argv) -> int:
    from .parsing import parse
    (cfg,) = parse("synth", argv)
    written = make_dataset(cfg.out, cfg.train, cfg.test, cfg.song_dur, cfg.seed)
    print(f"wrote {len(written['train'])} train and {len(written['test'])} test songs to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
