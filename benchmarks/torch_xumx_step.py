"""The X-UMX training step in PyTorch: the reference side of ``benchmarks/train_step.py``.

Runs alone with only torch and numpy (any Python that has them; torch is never a dependency
of xumx). It builds the same network, loss and solver as ``xumx.training`` from the published
description (/work/shared/docs/xumx-reference.md sections 2-4): centred reflect-padded STFT,
per source input mean/scale, fc1 + BN + tanh, the first crossing average, a 3-layer
bidirectional LSTM (dropout 0.4 between layers, as cuDNN's), the skip concatenation, the
second crossing average, fc2 + BN + ReLU, fc3 + BN, output scale/mean and ReLU; ISTFT of the
masked mixture; the multi-domain loss over every proper source subset; Adam with L2 weight
decay. It times whole steps on random audio (after ``--warmup`` untimed ones) and prints one JSON line:
``{"s_per_step": [...], "cpu_per_step": [...], "vmhwm_mb": ..., "loss": ...}``.

    python benchmarks/torch_xumx_step.py --hidden-size 64 --nfft 1024 --nhop 256 \\
        --batch-size 8 --seq-dur 2 --steps 3
"""
import argparse
import itertools
import json
import os
import time

import numpy as np


def vmhwm_mb() -> float:
    """Peak resident memory of this process (VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def max_bin(rate, n_fft, bandwidth=16000):
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    return int(np.max(np.where(freqs <= bandwidth)[0])) + 1


def build(args):
    import torch
    from torch import nn

    sources, channels = 4, 2
    bins, cut = args.nfft // 2 + 1, max_bin(44100, args.nfft)
    hidden = args.hidden_size

    class XUMX(nn.Module):
        def __init__(self):
            super().__init__()
            self.mean_in = nn.Parameter(torch.zeros(sources, cut))
            self.scale_in = nn.Parameter(torch.ones(sources, cut))
            self.mean_out = nn.Parameter(torch.ones(sources, bins))
            self.scale_out = nn.Parameter(torch.ones(sources, bins))
            self.fc1 = nn.ModuleList(nn.Linear(channels * cut, hidden, bias=False) for _ in range(sources))
            self.bn1 = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(sources))
            self.lstm = nn.ModuleList(nn.LSTM(hidden, hidden // 2, num_layers=args.nb_layers,
                                              bidirectional=True, dropout=args.dropout if args.nb_layers > 1 else 0)
                                      for _ in range(sources))
            self.fc2 = nn.ModuleList(nn.Linear(2 * hidden, hidden, bias=False) for _ in range(sources))
            self.bn2 = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(sources))
            self.fc3 = nn.ModuleList(nn.Linear(hidden, channels * bins, bias=False) for _ in range(sources))
            self.bn3 = nn.ModuleList(nn.BatchNorm1d(channels * bins) for _ in range(sources))

        def forward(self, mag):  # (N, B, C, F) -> masks (S, N, B, C, F)
            n, b = mag.shape[:2]
            x = mag[..., :cut]
            enc = [torch.tanh(self.bn1[s](self.fc1[s](((x + self.mean_in[s]) * self.scale_in[s])
                                                      .reshape(n * b, -1))).reshape(n, b, hidden))
                   for s in range(sources)]
            shared = sum(enc) / sources
            skip = [torch.cat([enc[s], self.lstm[s](shared)[0]], dim=-1) for s in range(sources)]
            shared = (sum(skip) / sources).reshape(n * b, -1)
            masks = []
            for s in range(sources):
                h = torch.relu(self.bn2[s](self.fc2[s](shared)))
                y = self.bn3[s](self.fc3[s](h)).reshape(n, b, channels, bins)
                masks.append(torch.relu(y * self.scale_out[s] + self.mean_out[s]))
            return masks

    window = torch.hann_window(args.nfft)

    def stft(audio):  # (B, C, T) -> complex (N, B, C, F)
        b, c, t = audio.shape
        z = torch.stft(audio.reshape(b * c, t), args.nfft, args.nhop, window=window, center=True,
                       pad_mode="reflect", return_complex=True)
        return z.reshape(b, c, bins, -1).permute(3, 0, 1, 2)

    def istft(z):  # complex (N, B, C, F) -> (B, C, (N - 1) hop)
        n, b, c, f = z.shape
        y = torch.istft(z.permute(1, 2, 3, 0).reshape(b * c, f, n), args.nfft, args.nhop,
                        window=window, center=True, length=(n - 1) * args.nhop)
        return y.reshape(b, c, -1)

    combos = [c for k in range(1, sources) for c in itertools.combinations(range(sources), k)]

    def wsdr(mix, est, tgt, trim=200, eps=1e-10):
        mix, est, tgt = (v.reshape(-1, v.shape[-1])[:, trim:-trim] for v in (mix, est, tgt))
        noise, noise_est = mix - tgt, mix - est

        def cos(a, b_):
            return (a * b_).sum(1) / (torch.sqrt(eps + (a * a).sum(1)) * torch.sqrt(eps + (b_ * b_).sum(1)) + eps)
        e_t = (tgt * tgt).sum(1)
        alpha = e_t / (e_t + (noise * noise).sum(1) + eps)
        return 1 + torch.mean(-alpha * cos(est, tgt) - (1 - alpha) * cos(noise_est, noise))

    model = XUMX()

    def loss_fn(mixture, target):
        z = stft(mixture)
        mag = z.abs()
        with torch.no_grad():
            tmag = stft(target).abs()
        masks = model(mag)
        ests = [istft(m * z) for m in masks]
        length = ests[0].shape[-1]
        tg = [target[:, 2 * s:2 * s + 2, :length] for s in range(sources)]
        freq = sum(torch.mean((sum(masks[k] for k in c) * mag
                               - sum(tmag[:, :, 2 * k:2 * k + 2] for k in c)) ** 2) for c in combos)
        timed = sum(wsdr(mixture[..., :length], sum(ests[k] for k in c), sum(tg[k] for k in c))
                    for c in combos)
        return args.mcoef * timed / len(combos) + freq / len(combos)

    solver = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    return model, loss_fn, solver


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--nb-layers", type=int, default=3)
    p.add_argument("--nfft", type=int, default=4096)
    p.add_argument("--nhop", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-dur", type=float, default=6.0)
    p.add_argument("--mcoef", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=3, help="timed steps (default: 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default: 2)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    p.add_argument("--dropout", type=float, default=0.4, help="LSTM dropout between layers")
    args = p.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, loss_fn, solver = build(args)
    rng = np.random.RandomState(0)
    length = int(args.seq_dur * 44100)
    walls, cpus, loss = [], [], None
    for step in range(args.warmup + args.steps):
        y = torch.from_numpy((0.1 * rng.randn(args.batch_size, 8, length)).astype(np.float32))
        x = y.reshape(args.batch_size, 4, 2, length).sum(1)
        t0, c0 = time.perf_counter(), os.times()
        solver.zero_grad()
        loss = loss_fn(x, y)
        loss.backward()
        solver.step()
        c1 = os.times()
        if step >= args.warmup:
            walls.append(time.perf_counter() - t0)
            cpus.append((c1.user - c0.user) + (c1.system - c0.system))
    print(json.dumps({"s_per_step": walls, "cpu_per_step": cpus, "vmhwm_mb": vmhwm_mb(),
                      "loss": loss.item(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
