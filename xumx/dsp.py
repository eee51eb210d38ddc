"""Short-time Fourier transforms, as pure functions.

All transforms use a periodic Hann window of ``n_fft`` samples, ``center=True`` with
reflection padding of ``n_fft // 2`` on each side and no normalisation: the convention of
nnabla's ``F.stft(..., window_type='hanning', center=True, pad_mode='reflect')`` that the
published X-UMX uses. A signal of T samples gives ``1 + T // n_hop`` frames. (Whole-signal ``stft``/``istft`` for
checking these live in tests/oracles.py.)

Shapes use these names: ``nb_channels`` (C), ``nb_timesteps`` (T), ``nb_bins`` (F =
n_fft // 2 + 1), ``nb_frames`` (N).
"""
import numpy as np
import scipy.fft


STFT_BLOCK = 512  # frames windowed and transformed at once


def hann(n_fft: int, dtype=np.float64) -> np.ndarray:
    """Periodic Hann window (numpy's symmetric window of n_fft + 1 points, last dropped)."""
    return np.hanning(n_fft + 1)[:-1].astype(dtype)


def nb_frames(nb_timesteps: int, n_hop: int) -> int:
    """Frames of a centred STFT of ``nb_timesteps`` samples."""
    return 1 + nb_timesteps // n_hop


def stft_frames(audio: np.ndarray, n_fft: int, n_hop: int, dtype=np.complex128) -> np.ndarray:
    """:func:`stft` in frame-major layout. Shapes: audio (C, T) -> (C, N, F) complex."""
    frames = StftFrames(audio, n_fft, n_hop, dtype, workers=-1)
    n, channels, bins = frames.shape
    out = np.empty((channels, n, bins), dtype)
    for start in range(0, n, STFT_BLOCK):  # windowed frames made a block at a time
        out[:, start:start + STFT_BLOCK] = frames[start:start + STFT_BLOCK].transpose(1, 0, 2)
    return out


class StftFrames:
    """The frames of :func:`stft_frames`, made when asked for: ``frames[a:b]`` is the STFT of
    frames a to b, frames first, (b - a, C, F) complex, the same numbers as
    ``stft_frames(audio, ...)[:, a:b].transpose(1, 0, 2)``; ``shape`` is (N, C, F). Holds the
    padded signal only (a quarter of the spectrogram's size at complex64), so that a pass over
    blocks of frames needs no whole spectrogram. Shapes: audio (C, T). ``workers``: scipy.fft's
    threads per call (-1: every core)."""

    def __init__(self, audio: np.ndarray, n_fft: int, n_hop: int, dtype=np.complex128,
                 workers: int = 1):
        audio = np.asarray(audio)
        if audio.ndim != 2:
            raise ValueError(f"stft expects (nb_channels, nb_timesteps), got shape {audio.shape}")
        real = np.float32 if dtype == np.complex64 else np.float64
        pad = n_fft // 2
        self.n_hop, self.dtype, self.workers = n_hop, dtype, workers
        self.padded = np.pad(audio.astype(real, copy=False), ((0, 0), (pad, pad)), mode="reflect")
        self.window = hann(n_fft, real)
        self.shape = (nb_frames(audio.shape[1], n_hop), audio.shape[0], n_fft // 2 + 1)

    def __getitem__(self, frames: slice) -> np.ndarray:
        a, b, step = frames.indices(self.shape[0])
        if step != 1:
            raise IndexError("StftFrames takes a slice of consecutive frames")
        n_fft = self.window.shape[0]
        seg = self.padded[:, a * self.n_hop:max(b - 1, a) * self.n_hop + n_fft]
        wins = np.lib.stride_tricks.sliding_window_view(seg, n_fft, axis=1)[:, ::self.n_hop]
        out = scipy.fft.rfft(wins[:, :max(b - a, 0)] * self.window, axis=-1, workers=self.workers)
        return out.astype(self.dtype, copy=False).transpose(1, 0, 2)


class OverlapAdd:
    """The inverse STFT built incrementally from blocks of frames (bounded extra memory).

    Args: nb_channels (C), n_fft, n_hop, nb_frames (N) of the whole spectrogram, length of
    the signal to restore, dtype of the accumulated signal. The signal is accumulated
    channel-major; :meth:`result` is a (length, C) view of it, not a copy.

    :meth:`frames` (the windowed inverse FFTs, pure, so it may run on worker threads) and
    :meth:`add_frames` (the overlap-add) together are :meth:`add`. When ``n_hop`` divides
    ``n_fft`` (R = n_fft / n_hop), frames k, k + R, k + 2R, ... tile the signal without
    overlapping, so each of the R residues is one contiguous add per channel.
    """

    def __init__(self, nb_channels: int, n_fft: int, n_hop: int, nb_frames: int, length: int,
                 dtype=np.float64):
        if n_fft + n_hop * (nb_frames - 1) < n_fft // 2 + length:
            raise ValueError(f"istft: {nb_frames} frames cannot give {length} samples")
        self.n_fft, self.n_hop, self.nb_frames, self.length = n_fft, n_hop, nb_frames, length
        self.window = hann(n_fft)
        self.out = np.zeros((nb_channels, n_fft + n_hop * (nb_frames - 1)), dtype)

    def frames(self, spec: np.ndarray) -> np.ndarray:
        """Windowed inverse FFTs. Shapes: spec (..., n, F) complex -> (..., n, n_fft) real
        (float32 for complex64 input or a float32 signal, else float64)."""
        if spec.shape[-1] != self.n_fft // 2 + 1:
            raise ValueError(f"istft: {spec.shape[-1]} bins do not match n_fft={self.n_fft}")
        if self.out.dtype == np.float32:
            spec = spec.astype(np.complex64, copy=False)
        wav = scipy.fft.irfft(spec, n=self.n_fft, axis=-1)
        wav *= self.window.astype(wav.dtype)
        return wav

    def add_frames(self, start: int, wav: np.ndarray):
        """Overlap-add windowed frames start, start + 1, ... Shapes: wav (C, n, n_fft) real."""
        add_frames(self.out, start, self.n_hop, wav)

    def segment(self, spec: np.ndarray) -> np.ndarray:
        """The windowed inverse FFTs of consecutive frames, overlap-added among themselves
        (pure, so it may run on worker threads; :meth:`add_segment` places it).
        Shapes: spec (C, n, F) complex -> (C, n_fft + (n - 1) n_hop) real."""
        wav = self.frames(spec)
        seg = np.zeros(wav.shape[:-2] + (self.n_fft + self.n_hop * (wav.shape[-2] - 1),),
                       wav.dtype)
        add_frames(seg, 0, self.n_hop, wav)
        return seg

    def add_segment(self, start: int, seg: np.ndarray):
        """Add a :meth:`segment` of frames start, start + 1, ... Shapes: seg (C, L) real."""
        pos = start * self.n_hop
        self.out[:, pos:pos + seg.shape[-1]] += seg

    def add(self, start: int, frames: np.ndarray):
        """Add frames start, start + 1, ... Shapes: frames (C, n, F) complex."""
        self.add_frames(start, self.frames(frames))

    def result(self) -> np.ndarray:
        """The restored signal, (length, C), normalised by the summed squared window."""
        norm = np.zeros((1, self.out.shape[1]))
        sq = self.window ** 2
        add_frames(norm, 0, self.n_hop, np.broadcast_to(sq, (1, self.nb_frames, self.n_fft)))
        pad = self.n_fft // 2
        out, norm = self.out[:, pad:pad + self.length], norm[0, pad:pad + self.length]
        out /= np.where(norm > 1e-10, norm, 1.0).astype(out.dtype)
        return out.T


def add_frames(out: np.ndarray, start: int, hop: int, wav: np.ndarray):
    """Overlap-add: ``out[c, (start + k) hop : (start + k) hop + n_fft] += wav[c, k]``.

    Shapes: out (C, L), wav (C, n, n_fft). With R = n_fft / hop whole, frames k = r (mod R)
    do not overlap: one add per residue r and channel, of a contiguous run of ``out``.
    """
    channels, n, n_fft = wav.shape
    if n_fft % hop:
        for k in range(n):
            pos = (start + k) * hop
            out[:, pos:pos + n_fft] += wav[:, k]
        return
    for r in range(min(n_fft // hop, n)):
        rows = wav[:, r::n_fft // hop]            # frames r, r + R, ...: (C, m, n_fft)
        pos = (start + r) * hop
        run = out[:, pos:pos + rows.shape[1] * n_fft].reshape(channels, rows.shape[1], n_fft)
        run += rows
