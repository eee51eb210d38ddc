"""Training X-UMX: static nnabla graphs, Adam, plateau LR decay, early stopping, validation,
atomic checkpoints and resume, data parallelism over MPI ranks.

The library entry point is :func:`train` (``python -m xumx.train`` only parses flags into
:class:`~xumx.config.ModelConfig` and :class:`~xumx.config.TrainConfig`).

Files in ``TrainConfig.output`` (only rank 0 writes, each atomically with :mod:`xumx.files`):

- ``best_xumx.h5`` + ``best_xumx.json``: the parameters of the best validation epoch with their
  configuration (``Separator.from_file`` / ``xumx.test`` load it with no size flags);
- ``checkpoint.h5``: parameters, Adam states, the epoch, scheduler, early-stopping and loss history
  (the data generators are functions of (seed, epoch, rank), so the epoch fixes them);
- ``config.yaml``: the effective configuration (every training field, as a recipe), which
  ``--resume <folder>`` reads back;
- ``history.json`` / ``history.csv``: per-epoch training and validation loss, learning rate, time;
- ``training.png``: the loss curves and the learning rate, redrawn every epoch.

A folder that holds another run is refused unless ``TrainConfig.force`` (which removes that
run's files first) or the run resumed is that one (:func:`xumx.recipes.replaced_run`).
"""
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from ..config import ModelConfig, TrainConfig
from ..recipes import HISTORY, PLOT, RUN_CONFIG, recipe_text, replaced_run
from .distributed import make_communicator, scaled_hyperparameters
from .losses import (SDR_EDGE_TRIM, freq_combination_loss, multi_domain_loss,
                     time_combination_loss)
from .. import interrupt
from ..files import replacing, write_text
from .schedule import EarlyStopping, ReduceLROnPlateau
from ..errors import WeightsError
from ..modelfiles import BEST_NAME, CHECKPOINT_NAME
from .checkpoints import read_checkpoint, write_checkpoint


@dataclass
class LossGraph:
    """A static loss graph; :meth:`feed` sets its inputs from a batch, then ``loss.forward()``."""
    cfg: ModelConfig
    mixture: object      # (B, C, T) audio
    target: object       # (B, S*C, T) audio
    loss: object
    dropout: object = None   # the LstmDropout of a training graph with dropout, else None

    def feed(self, mixture: np.ndarray, target: np.ndarray):
        self.mixture.d, self.target.d = mixture, target


def build_loss_graph(model, batch: int, length: int, mcoef: float, test: bool,
                     trim: int = SDR_EDGE_TRIM, dropout: float = 0.0) -> LossGraph:
    """The Multi-Domain Loss graph of ``model`` for (batch, length) inputs.

    ``dropout``: the rate between LSTM layers of a training graph (``test`` False); its masks
    come from the graph's :class:`~xumx.training.model.LstmDropout` (``LossGraph.dropout``,
    which the trainer reseeds every epoch).

    Shapes: mixture (B, C, T), target (B, S*C, T) with sources in ``model.cfg.sources`` order.
    The masks come from the mixture magnitude (:meth:`OpenUnmixCrossNet.masks`); the estimates
    are ISTFT(mask * mixture STFT), (B, C, L) with L = (N - 1) * nhop <= T; the mixture and
    targets are cut to L for the time-domain loss. The frequency-domain loss compares masked
    mixture magnitudes with the target magnitudes. On CPU contexts the STFTs, the LSTMs and
    both losses are the fused functions of :mod:`xumx.training.kernels`.
    """
    import nnabla as nn
    from .model import LstmDropout
    from .stft import graph_masked_istft, graph_spectrogram
    cfg = model.cfg
    drop = LstmDropout(dropout) if dropout and not test and cfg.nb_layers > 1 else None
    channels, nb_sources = cfg.nb_channels, len(cfg.sources)
    mixture = nn.Variable((batch, channels, length))
    target = nn.Variable((batch, nb_sources * channels, length))
    mix_spec, real, imag = graph_spectrogram(mixture, cfg.nfft, cfg.nhop)
    target_mag = graph_spectrogram(target, cfg.nfft, cfg.nhop, with_complex=False)
    masks = model.masks(mix_spec, test=test, dropout=drop)
    estimates = [graph_masked_istft(mask, real, imag, cfg.nfft, cfg.nhop) for mask in masks]
    freq = freq_combination_loss(mix_spec, masks, target_mag)
    timed = time_combination_loss(mixture, estimates, target, trim=trim)
    loss = multi_domain_loss(timed, freq, mcoef)
    loss.persistent = True
    return LossGraph(cfg, mixture, target, loss, drop)


def min_window(cfg: ModelConfig, trim: int = SDR_EDGE_TRIM) -> int:
    """The shortest signal the loss graph accepts (STFT padding and the SDR edge trim)."""
    return max(cfg.nfft, 2 * trim + 2 * cfg.nhop)


# --------------------------------------------------------------------------- checkpoint I/O
def model_arrays(model) -> Dict[str, np.ndarray]:
    return {k: np.array(v.d, copy=True) for k, v in model.get_parameters().items()}


def solver_arrays(solver) -> Dict[str, np.ndarray]:
    """{'<param>/<state>': array, '<param>/t': step} of an nnabla solver."""
    out = {}
    for name, state in solver.get_states().items():
        for key, var in state.pstate.items():
            out[f"{name}/{key}"] = np.array(var.d, copy=True)
        out[f"{name}/t"] = np.array(state.t, dtype=np.int64)
    return out


def restore_solver(solver, arrays: Dict[str, np.ndarray]):
    states = solver.get_states()
    for name, state in states.items():
        for key in list(state.pstate) + ["t"]:
            if f"{name}/{key}" not in arrays:
                raise ValueError(f"the checkpoint has no solver state '{name}/{key}'")
        for key, var in state.pstate.items():
            var.d = arrays[f"{name}/{key}"]
        state.t = int(arrays[f"{name}/t"])
    solver.set_states(states)


def write_history(output: str, history: List[dict]):
    """history.json and history.csv (one row per epoch)."""
    write_text(os.path.join(output, f"{HISTORY}.json"), json.dumps(history, indent=1))
    buf = io.StringIO()
    fields = ["epoch", "train_loss", "valid_loss", "lr", "best", "seconds"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text(os.path.join(output, f"{HISTORY}.csv"), buf.getvalue())


def plot_history(path: str, history: List[dict]):
    """training.png: training/validation loss (top) and learning rate (bottom) per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="training")
    ax_loss.plot(epochs, [h["valid_loss"] for h in history], "o-", label="validation")
    ax_loss.set_ylabel("loss (mcoef·TD + FD)")
    ax_loss.legend()
    ax_lr.plot(epochs, [h["lr"] for h in history], "o-", color="tab:green")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- the trainer
def resolve_resume(path: str) -> str:
    """A folder means its checkpoint."""
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no checkpoint to resume from")
    return path


class Trainer:
    """One training run (see :func:`train`)."""

    def _log(self, msg: str):
        """A line on stderr from the first process, unless ``cfg.quiet``."""
        if self.comm.rank == 0 and not self.cfg.quiet:
            print(msg, file=sys.stderr, flush=True)

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data=None, progress: bool = True):
        from . import data as datamod
        self.cfg, self.progress = cfg, progress
        self.comm, self.ctx = make_communicator(cfg.context, cfg.device_id)
        self.replaced = replaced_run(cfg)   # every rank refuses before any writes (a barrier)
        self.state = None
        resume = None
        if cfg.resume:
            resume = self._load_resume(resolve_resume(cfg.resume))
            model_cfg = resume[0]
        self.model_cfg = model_cfg
        if data is None:
            db = datamod.open_musdb(cfg.root, cfg.is_wav)
            split = datamod.split_tracks(db.tracks, db.setup.get("validation_tracks", []))
            self._log(f"{len(split.train)} training and {len(split.valid)} validation tracks "
                            f"({'MUSDB18 validation split' if split.fixed else 'hold-out of every %dth track by name' % datamod.HOLDOUT_EVERY})")
            data = datamod.MusdbTraining(split.train, split.valid, model_cfg, cfg.seq_dur,
                                         cfg.samples_per_track, cfg.source_augmentations)
        self.data = data
        self.lr, self.weight_decay = scaled_hyperparameters(cfg.lr, cfg.weight_decay, self.comm.n_procs)
        self._resume = resume

    def _load_resume(self, path):
        from ..modelfiles import ModelFiles
        ck = read_checkpoint(path)
        if ck is None:  # a plain weights file: start from its weights
            cfg, arrays = ModelFiles(path).read()
            return cfg, arrays, None, None
        params, solver, meta = ck
        return ModelConfig.from_dict(meta["model"]), params, solver, meta

    def _statistics(self):
        from .data import input_statistics, training_mixtures
        stats = None
        if self.comm.rank == 0:
            self._log(f"input statistics over {len(self.data.tracks)} training mixtures")
            stats = input_statistics(training_mixtures(self.data), self.model_cfg.nfft, self.model_cfg.nhop)
        if self.comm.n_procs > 1:
            if self.comm.rank != 0:
                nb = self.model_cfg.nb_bins
                stats = (np.zeros(nb, np.float32), np.zeros(nb, np.float32))
            stats = self.comm.bcast(stats)
        return stats

    def run(self) -> dict:
        import nnabla as nn
        with nn.context_scope(self.ctx):
            return self._run()

    def _run(self) -> dict:
        from .adam import make_solver
        from .model import OpenUnmixCrossNet
        cfg, mcfg, comm = self.cfg, self.model_cfg, self.comm
        comm.barrier()   # every rank has checked the folder (replaced_run) before it changes
        if comm.rank == 0:   # --force: the other run goes; then the effective configuration,
            for path in self.replaced:   # which --resume reads back
                os.unlink(path)
            write_text(os.path.join(cfg.output, RUN_CONFIG), recipe_text(mcfg, cfg))
        meta = None
        if self._resume is None:
            mean, std = self._statistics()
            model = OpenUnmixCrossNet(mcfg, mean, std, rng=np.random.RandomState(cfg.seed))
        else:
            _, params, solver_state, meta = self._resume
            model = OpenUnmixCrossNet(mcfg, rng=np.random.RandomState(cfg.seed))
            model.set_parameters(params)
        graph = build_loss_graph(model, cfg.batch_size, self.data.nb_samples, cfg.mcoef, test=False,
                                 dropout=cfg.dropout)
        self._say_dropout(graph)
        self.model = model
        solver = make_solver(self.lr)
        trainable = model.get_parameters(grad_only=True)
        solver.set_parameters(trainable)
        params = list(trainable.values())
        # batch-norm running statistics: averaged over the ranks after each step
        self._buffers = [v for k, v in model.get_parameters().items() if k not in trainable]
        scheduler = ReduceLROnPlateau(self.lr, factor=cfg.lr_decay_gamma, patience=cfg.lr_decay_patience)
        stopper = EarlyStopping(patience=cfg.patience)
        history, start = [], 1
        if meta is not None:
            restore_solver(solver, solver_state)
            scheduler = ReduceLROnPlateau.from_state(meta["scheduler"])
            stopper = EarlyStopping.from_state(meta["early_stopping"])
            history, start = meta["history"], meta["epoch"] + 1
            solver.set_learning_rate(scheduler.lr)
            self._log(f"resuming after epoch {meta['epoch']} (lr {scheduler.lr:g})")
        steps = self.data.iterations(cfg.batch_size, comm.n_procs)
        from .. import threads
        self._log(f"{comm.n_procs} process(es), {steps} steps of {cfg.batch_size} excerpts per epoch "
                  f"and process, lr {self.lr:g}, weight decay {self.weight_decay:g}"
                  + (f", {threads.APPLIED} CPU thread(s) each" if threads.APPLIED else ""))
        stopped = False
        for epoch in range(start, cfg.epochs + 1):
            t0 = time.time()
            train_loss = self._train_epoch(epoch, graph, solver, params, steps)
            valid_loss = self.validate(model)
            lr = scheduler.step(valid_loss)
            solver.set_learning_rate(lr)
            stopped = stopper.step(valid_loss)
            history.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                            "lr": lr, "best": bool(stopper.improved), "seconds": time.time() - t0})
            if comm.rank == 0:
                self._write_epoch(model, solver, scheduler, stopper, history, epoch)
            self._log(f"epoch {epoch}: train {train_loss:.5f} valid {valid_loss:.5f} lr {lr:g}"
                       + (" (best)" if stopper.improved else ""))
            if stopped:
                self._log(f"early stopping after epoch {epoch}: no improvement for {cfg.patience} "
                           "epochs" if not math.isnan(valid_loss) else "stopping: the validation loss is NaN")
                break
        comm.barrier()
        return {"history": history, "stopped": stopped, "best": os.path.join(cfg.output, BEST_NAME),
                "rank": comm.rank}

    def _say_dropout(self, graph):
        """One line when the recipe's LSTM dropout cannot apply: nnabla's own CPU LSTM
        (``XUMX_KERNELS=nnabla``) ignores it."""
        from . import kernels
        if graph.dropout is None or kernels.enabled(self.ctx):
            return
        if all(b.split(":")[0] == "cpu" for b in self.ctx.backend):
            self._log(f"note: nnabla's own CPU LSTM ({kernels.ENV}=nnabla) applies no dropout: "
                      f"this run trains without the dropout {graph.dropout.rate:g} between "
                      f"LSTM layers (the fast CPU kernels and cuDNN apply it)")

    def _train_epoch(self, epoch, graph, solver, params, steps) -> float:
        from ..progress import progress_bar
        from .model import LstmDropout
        cfg, comm = self.cfg, self.comm
        if graph.dropout is not None:   # the masks of an epoch are a function of (seed, epoch, rank)
            graph.dropout.reseed((cfg.seed, epoch, comm.rank + 1, LstmDropout.STREAM))
        total, count = 0.0, 0
        bar = progress_bar(steps, f"epoch {epoch}", comm.rank != 0 or not self.progress, "step",
                           leave=False, lines=False)   # each epoch's own line says it
        for x, y in self.data.batches(epoch, cfg.seed, cfg.batch_size, comm.rank, comm.n_procs):
            graph.feed(x, y)
            solver.zero_grad()
            graph.loss.forward(clear_no_need_grad=True)
            graph.loss.backward(clear_buffer=True)
            comm.all_reduce_grads(params)
            solver.weight_decay(self.weight_decay)
            solver.update()
            comm.all_reduce_data(self._buffers)
            total += float(graph.loss.d)
            count += 1
            interrupt.check()   # a signal whose KeyboardInterrupt a kernel's callback lost
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        return float(comm.all_reduce_mean([total / max(count, 1)])[0])

    def validate(self, model) -> float:
        """Mean over the validation tracks (split over the ranks) of the length-weighted mean loss
        over windows of ``valid_dur`` seconds, the last partial window included (its own graph)."""
        from .data import validation_windows
        cfg, comm, data = self.cfg, self.comm, self.data
        window = int(round(cfg.valid_dur * self.model_cfg.sample_rate))
        graphs = {}
        losses = []
        for index in range(comm.rank, len(data.valid), comm.n_procs):
            mix, targets = data.validation_track(index)
            weighted, total = 0.0, 0
            for a, b in validation_windows(mix.shape[1], window, min_window(self.model_cfg)):
                if b - a not in graphs:
                    if len(graphs) > 1:  # keep the full-window graph, rebuild the odd ones
                        graphs = {window: graphs[window]} if window in graphs else {}
                    graphs[b - a] = build_loss_graph(model, 1, b - a, cfg.mcoef, test=True)
                g = graphs[b - a]
                g.feed(mix[None, :, a:b], targets[None, :, a:b])
                g.loss.forward(clear_buffer=True)
                weighted += float(g.loss.d) * (b - a)
                total += b - a
                interrupt.check()
            losses.append(weighted / total)
        # every rank contributes (sum, count) so uneven splits average over tracks exactly
        s, n = comm.all_reduce_mean([float(np.sum(losses)), float(len(losses))])
        return s / n if n else float("nan")

    def _write_epoch(self, model, solver, scheduler, stopper, history, epoch):
        from ..weights import save_model
        out = self.cfg.output
        arrays = model_arrays(model)
        if stopper.improved:
            save_model(os.path.join(out, BEST_NAME), self.model_cfg, arrays)
        meta = {"epoch": epoch, "model": json.loads(self.model_cfg.to_json()),
                "scheduler": scheduler.state_dict(), "early_stopping": stopper.state_dict(),
                "history": history, "generators": {"seed": self.cfg.seed, "next_epoch": epoch + 1,
                                                   "rule": "RandomState(SeedSequence((seed, epoch[, rank+1]))); "
                                                           "LSTM dropout: PCG64(SeedSequence((seed, epoch, rank+1, 1)))"},
                "n_procs": self.comm.n_procs}
        write_checkpoint(os.path.join(out, CHECKPOINT_NAME), arrays, solver_arrays(solver), meta)
        write_history(out, history)
        plot_history(os.path.join(out, PLOT), history)


def train(model_cfg: ModelConfig, cfg: TrainConfig, data=None, progress: bool = True) -> dict:
    """Train (or resume, ``cfg.resume``) and return {'history', 'stopped', 'best' path, 'rank'}."""
    from .backend import require_nnabla
    require_nnabla("training")
    return Trainer(model_cfg, cfg, data=data, progress=progress).run()
