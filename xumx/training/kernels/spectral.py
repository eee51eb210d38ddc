"""STFT and masked inverse STFT by FFT (scipy's pocketfft), as nnabla functions.

Both follow nnabla's ``F.stft`` / ``F.istft`` with ``window_type='hanning'`` (periodic Hann),
``window_size = fft_size``, ``center=True``: the STFT reflect-pads ``n_fft // 2`` samples
at each end; the ISTFT overlap-adds the windowed frames, divides by the overlap-added squared window
(nnabla >= 1.24, as PyTorch) and drops ``n_fft // 2`` samples at each end, giving
``(N - 1) * n_hop`` samples. Spectrograms are frame-major, (N, B, C, F), the layout of
the model's input, so no transposes are needed; frames are transformed a block at a time.
Signals (rows of the STFT, batch items of the ISTFT) are independent: large calls split them
over the kernels' threads (:func:`~.base.for_parts`), FFTs and elementwise passes alike.

Shapes use: batch (B), channels (C), samples (T), frames (N), bins (F = n_fft // 2 + 1).
"""
import numpy as np
import scipy.fft

from .base import NumpyFunction, data, for_parts, grad_buffer, output, put_grad

#: Frames windowed and transformed at once (bounds the temporary frame buffers).
BLOCK = 64


def hann(n_fft: int) -> np.ndarray:
    """nnabla's Hann window: 0.5 - 0.5 cos(2 pi i / n_fft), i < n_fft (float64)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def envelope(n_fft: int, n_hop: int, nb_frames: int) -> np.ndarray:
    """nnabla's ISTFT normaliser of a centred signal of (N - 1) n_hop samples: the overlap-added
    squared window of the N frames, without the n_fft // 2 padding at each end (float64)."""
    w2 = hann(n_fft) ** 2
    env = np.zeros((1, (nb_frames - 1) * n_hop + n_fft))
    _overlap_add(env, np.broadcast_to(w2, (nb_frames, 1, n_fft)), 0, n_hop)
    pad = n_fft // 2
    return env[0, pad:pad + (nb_frames - 1) * n_hop]


def bin_weights(n_fft: int) -> np.ndarray:
    """irfft as a real linear map: 1/n for the DC and Nyquist bins, 2/n for the others."""
    c = np.full(n_fft // 2 + 1, 2.0 / n_fft)
    c[0] = 1.0 / n_fft
    if n_fft % 2 == 0:
        c[-1] = 1.0 / n_fft
    return c


def _frames(x: np.ndarray, n_fft: int, n_hop: int, nb_frames: int) -> np.ndarray:
    """Frame-major view (N, M, n_fft) of rows x (M, T') (no copy)."""
    view = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::n_hop][:, :nb_frames]
    return view.transpose(1, 0, 2)


def _overlap_add(out: np.ndarray, frames: np.ndarray, start: int, n_hop: int):
    """out (M, (N - 1) n_hop + n_fft) += frames (n, M, n_fft) placed at frames start..start+n-1
    (n_fft a multiple of n_hop: each hop of every frame is added at once)."""
    n, m, n_fft = frames.shape
    hops = out.reshape(m, -1, n_hop)
    for r in range(n_fft // n_hop):
        hops[:, start + r:start + r + n] += frames[:, :, r * n_hop:(r + 1) * n_hop].transpose(1, 0, 2)


def _check(n_fft: int, n_hop: int):
    if n_fft % 2 or n_fft % n_hop:
        raise ValueError(f"the FFT kernels need an even n_fft that is a multiple of n_hop "
                         f"(as nnabla's istft), not n_fft={n_fft}, n_hop={n_hop}")


class Spectrogram(NumpyFunction):
    """Centred STFT of audio (B, C, T) -> magnitude (N, B, C, F) and, with ``with_complex``,
    the real and imaginary parts (N, B, C, F) too (outputs: mag, real, imag)."""

    def __init__(self, ctx, n_fft: int, n_hop: int, with_complex: bool = True):
        super().__init__(ctx)
        _check(n_fft, n_hop)
        self.n_fft, self.n_hop, self.with_complex = n_fft, n_hop, with_complex
        self.window = hann(n_fft).astype(np.float32)

    @property
    def args(self):
        return dict(n_fft=self.n_fft, n_hop=self.n_hop, with_complex=self.with_complex)

    def min_outputs(self):
        return 3 if self.with_complex else 1

    def setup_impl(self, inputs, outputs):
        shape = tuple(inputs[0].shape)
        if len(shape) < 2 or shape[-1] <= self.n_fft // 2:
            raise ValueError(f"STFT input {shape}: need (..., T) with T > n_fft // 2 = {self.n_fft // 2}")
        n = 1 + shape[-1] // self.n_hop
        for out in outputs:
            out.reset_shape((n,) + shape[:-1] + (self.n_fft // 2 + 1,), True)

    def _blocks(self, rows, threads: int):
        """(start, complex spectrum (n, M, F)) of each block of frames of ``rows`` (M, T)."""
        padded = np.pad(rows, ((0, 0), (self.n_fft // 2, self.n_fft // 2)), mode="reflect")
        n = 1 + rows.shape[-1] // self.n_hop
        frames = _frames(padded, self.n_fft, self.n_hop, n)
        for start in range(0, n, BLOCK):
            block = frames[start:start + BLOCK] * self.window
            yield start, scipy.fft.rfft(block, axis=-1, workers=threads)

    def _work(self, rows) -> int:
        return (1 + rows.shape[-1] // self.n_hop) * rows.shape[0] * self.n_fft

    def forward_impl(self, inputs, outputs):
        rows = data(inputs[0]).reshape(-1, inputs[0].shape[-1])
        outs = [output(o).reshape(o.shape[0], -1, o.shape[-1]) for o in outputs]

        def part_rows(part, threads):
            for start, z in self._blocks(rows[part], threads):
                stop = start + z.shape[0]
                np.abs(z, out=outs[0][start:stop, part])
                if self.with_complex:
                    outs[1][start:stop, part] = z.real
                    outs[2][start:stop, part] = z.imag
        for_parts(rows.shape[0], self._work(rows), part_rows)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not propagate_down[0]:
            return
        rows = data(inputs[0]).reshape(-1, inputs[0].shape[-1])
        grads = [o.grad.data.reshape(o.shape[0], -1, o.shape[-1]) for o in outputs]
        dx = grad_buffer(inputs[0], accum[0]).reshape(rows.shape)

        def part_rows(part, threads):
            dx[part] = self._adjoint(rows[part], [g[:, part] for g in grads], threads)
        for_parts(rows.shape[0], self._work(rows), part_rows)
        put_grad(inputs[0], dx, accum[0])

    def _adjoint(self, rows, grads, threads: int) -> np.ndarray:
        """The gradient (M, T) of signals ``rows`` (M, T) given their outputs' gradients
        (N, M, F) (mag, then real and imag with ``with_complex``)."""
        n_fft, hop = self.n_fft, self.n_hop
        n = 1 + rows.shape[1] // hop
        ola = np.zeros((rows.shape[0], (n - 1) * hop + n_fft), np.float32)
        scale = np.full(n_fft // 2 + 1, n_fft / 2.0, np.float32)  # rfft adjoint = (n/2) irfft, DC/Nyquist x2
        scale[0] = scale[-1] = n_fft
        for start, z in self._blocks(rows, threads):
            stop = start + z.shape[0]
            mag = np.abs(z)
            gm = grads[0][start:stop] / np.where(mag > 0, mag, np.inf)  # d|z| = Re(conj(z) dz) / |z|
            g = z * gm
            if self.with_complex:
                g.real += grads[1][start:stop]
                g.imag += grads[2][start:stop]
            g *= scale
            frames = scipy.fft.irfft(g, n=n_fft, axis=-1, workers=threads)
            frames *= self.window
            _overlap_add(ola, frames, start, hop)
        pad = n_fft // 2
        length = rows.shape[1]
        dpad = np.zeros((rows.shape[0], length + n_fft), np.float32)  # the padded signal
        dpad[:, :ola.shape[1]] = ola
        dx = dpad[:, pad:pad + length].copy()
        dx[:, 1:pad + 1] += dpad[:, :pad][:, ::-1]                       # reflected left edge
        dx[:, length - 1 - pad:length - 1] += dpad[:, pad + length:][:, ::-1]  # right edge
        return dx


class MaskedIstft(NumpyFunction):
    """Inverse STFT of a masked spectrogram: mask (N, B, C or 1, F) times the complex
    spectrogram real + i imag (N, B, C, F) -> audio (B, C, (N - 1) n_hop); what
    ``F.istft(real * mask, imag * mask)`` gives in nnabla's (B, C, F, N) layout."""
    

    def __init__(self, ctx, n_fft: int, n_hop: int):
        super().__init__(ctx)
        _check(n_fft, n_hop)
        self.n_fft, self.n_hop = n_fft, n_hop
        self.window = hann(n_fft).astype(np.float32)
        weights = bin_weights(n_fft)
        # the adjoint's window with the inner bins' weight 2 / n_fft folded in; the DC and
        # Nyquist bins' (1 / n_fft) are then a half of it
        self.adjoint_window = (hann(n_fft) * weights[1]).astype(np.float32)
        self.edge_bins = [i for i in (0, n_fft // 2) if weights[i] != weights[1]]

    def _inverse_envelope(self, nb_frames):
        env = envelope(self.n_fft, self.n_hop, nb_frames)
        if env.min() < 1e-11:  # nnabla's NOLA check
            raise ValueError(f"ISTFT: the windows of n_fft={self.n_fft}, n_hop={self.n_hop} do not overlap-add to a nonzero envelope")
        return (1.0 / env).astype(np.float32)

    @property
    def args(self):
        return dict(n_fft=self.n_fft, n_hop=self.n_hop)

    def min_inputs(self):
        return 3

    def setup_impl(self, inputs, outputs):
        mask, re, im = (tuple(v.shape) for v in inputs)
        if re != im or len(re) != 4 or re[-1] != self.n_fft // 2 + 1:
            raise ValueError(f"ISTFT spectrogram {re}/{im}: need (N, B, C, {self.n_fft // 2 + 1})")
        if len(mask) != 4 or mask[:2] != re[:2] or mask[3] != re[3] or mask[2] not in (1, re[2]):
            raise ValueError(f"ISTFT mask {mask} does not fit the spectrogram {re}")
        outputs[0].reset_shape((re[1], re[2], (re[0] - 1) * self.n_hop), True)

    def forward_impl(self, inputs, outputs):
        mask, re, im = (data(v) for v in inputs)
        n, b, c, f = re.shape
        pad, hop = self.n_fft // 2, self.n_hop
        inverse, out = self._inverse_envelope(n), output(outputs[0])

        def items(part, threads):   # the batch items ``part``: frames windowed, overlap-added
            rows = (part.stop - part.start) * c
            ola = np.zeros((rows, (n - 1) * hop + self.n_fft), np.float32)
            for start in range(0, n, BLOCK):
                s = slice(start, start + BLOCK)
                z = np.empty(re[s, part].shape, np.complex64)
                np.multiply(re[s, part], mask[s, part], out=z.real)
                np.multiply(im[s, part], mask[s, part], out=z.imag)
                frames = scipy.fft.irfft(z.reshape(z.shape[0], rows, f), n=self.n_fft, axis=-1,
                                         workers=threads)
                frames *= self.window
                _overlap_add(ola, frames, start, hop)
            np.multiply(ola[:, pad:pad + (n - 1) * hop], inverse, out=out[part].reshape(rows, -1))
        for_parts(b, n * b * c * self.n_fft, items)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        if not any(propagate_down):
            return
        mask, re, im = (data(v) for v in inputs)
        n, b, c, f = re.shape
        pad, hop = self.n_fft // 2, self.n_hop
        inverse, grad_out = self._inverse_envelope(n), outputs[0].grad.data
        dmask, dre, dim = (grad_buffer(v, accum[j]) if propagate_down[j] else None
                           for j, v in enumerate(inputs))

        def items(part, threads):   # the gradients of the batch items ``part``
            rows = (part.stop - part.start) * c
            g = np.zeros((rows, (n - 1) * hop + self.n_fft), np.float32)
            np.multiply(grad_out[part].reshape(rows, -1), inverse, out=g[:, pad:pad + (n - 1) * hop])
            frames = _frames(g, self.n_fft, hop, n)
            for start in range(0, n, BLOCK):
                s = slice(start, start + BLOCK)
                dz = scipy.fft.rfft(frames[s] * self.adjoint_window, axis=-1, workers=threads)
                for i in self.edge_bins:
                    dz[..., i] *= 0.5
                r, m = re[s, part], mask[s, part]
                dz = dz.reshape(r.shape)
                if dmask is not None and mask.shape[2] == c:
                    np.multiply(dz.real, r, out=dmask[s, part])
                    dmask[s, part] += dz.imag * im[s, part]
                elif dmask is not None:
                    dmask[s, part] = (dz.real * r + dz.imag * im[s, part]).sum(axis=2, keepdims=True)
                if dre is not None:
                    np.multiply(dz.real, m, out=dre[s, part])
                if dim is not None:
                    np.multiply(dz.imag, m, out=dim[s, part])
        for_parts(b, n * b * c * self.n_fft, items)
        for j, g in enumerate((dmask, dre, dim)):
            if g is not None:
                put_grad(inputs[j], g, accum[j])


def spectrogram(x, n_fft: int, n_hop: int, with_complex: bool = True):
    """(mag, real, imag) (N, B, C, F) of audio (B, C, T); only mag without ``with_complex``."""
    import nnabla as nn
    if x.shape[-1] <= n_fft // 2:  # (also checked in setup, where nnabla would wrap the error)
        raise ValueError(f"STFT input {x.shape}: need more than n_fft // 2 = {n_fft // 2} samples")
    return Spectrogram(nn.get_current_context(), n_fft, n_hop, with_complex)(x)


def masked_istft(mask, real, imag, n_fft: int, n_hop: int):
    """Audio (B, C, (N - 1) n_hop) of mask (N, B, C|1, F) times real + i imag (N, B, C, F)."""
    import nnabla as nn
    return MaskedIstft(nn.get_current_context(), n_fft, n_hop)(mask, real, imag)
