"""Adam on the CPU as nnabla's solver computes it, in cache-sized blocks over threads.

nnabla's CPU Adam (and its weight decay) runs on one thread, one pass per parameter: at 35.5 M
parameters (hidden 512) about 0.28 s of a training step. :class:`FusedAdam` computes the same
float32 arithmetic in the same order, element by element:

    g     = g + decay * theta                         (weight_decay(decay), when not 0)
    m     = beta1 * m + (1 - beta1) * g
    v     = beta2 * v + ((1 - beta2) * g) * g
    theta = theta - (alpha_t * m) / (sqrt(v) + eps)
    alpha_t = alpha * float32(sqrt(1 - beta2^t) / (1 - beta1^t))   (the powers in double)

in blocks of :data:`BLOCK` elements (the block's operands stay in the core's cache between the
passes), the blocks of all parameters split over the process's CPUs (numpy releases the GIL).
The states are nnabla's: a wrapped ``nnabla.solvers.Adam`` holds every parameter's ``mean`` and
``var`` (updated in place through numpy views) and its step ``t`` is kept in step by
:meth:`FusedAdam.get_states`, so checkpoints (``get_states`` / ``set_states``) read and write
what nnabla's solver does. One difference: nnabla skips a parameter whose gradient was not
computed since ``zero_grad``; this one updates every parameter (the X-UMX loss graph computes
every gradient).

:func:`make_solver` picks it on contexts where :func:`xumx.training.kernels.enabled` (CPU), and
nnabla's own Adam elsewhere (GPU contexts keep nnabla's CUDA solver).
"""
import math

import numpy as np

#: Elements of one block: its operands stay in the caches between the passes, and each numpy
#: call is long enough that threads seldom wait for the GIL (2^15: no gain from a second thread).
BLOCK = 1 << 16
#: Largest step count (nnabla's State.t saturates at int max).
T_MAX = 2 ** 31 - 1


def make_solver(lr: float):
    """Adam with learning rate ``lr`` for graphs of the current context: :class:`FusedAdam`
    where the CPU kernels apply, nnabla's ``Adam`` otherwise."""
    import nnabla.solvers as S
    from . import kernels
    return FusedAdam(lr) if kernels.enabled() else S.Adam(lr)


def adam_block(theta, g, m, v, alpha_t, beta1, beta2, eps, decay, tmp, tmp2):
    """One block of the update, in place on float32 views of equal length (``tmp``, ``tmp2``:
    scratch of that length); the scalars are float32. See the module docstring."""
    one = np.float32(1)
    if decay:
        np.multiply(theta, decay, out=tmp)
        g += tmp
    m *= beta1
    np.multiply(g, one - beta1, out=tmp)
    m += tmp
    v *= beta2
    np.multiply(g, one - beta2, out=tmp)
    tmp *= g
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += eps
    np.multiply(m, alpha_t, out=tmp2)
    tmp2 /= tmp
    theta -= tmp2


class FusedAdam:
    """nnabla's ``Adam`` (same constructor arguments, states and results) with a blocked,
    threaded update; used like an nnabla solver by the trainer: ``set_parameters``,
    ``zero_grad``, ``weight_decay`` (applied inside the next ``update``), ``update``,
    ``set_learning_rate`` / ``learning_rate``, ``get_states`` / ``set_states``, ``info``."""

    def __init__(self, alpha: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, threads: int = None):
        import nnabla.solvers as S
        self._solver = S.Adam(alpha, beta1, beta2, eps)
        f32 = np.float32
        self._alpha, self._beta1, self._beta2, self._eps = f32(alpha), f32(beta1), f32(beta2), f32(eps)
        self._threads = threads
        self._params = {}
        self._t = {}
        self._decay = f32(0)

    # ------------------------------------------------------------- nnabla's solver interface
    @property
    def name(self):
        return "FusedAdam"

    @property
    def info(self):
        return self._solver.info

    def set_parameters(self, params):
        self._solver.set_parameters(params)
        self._params.update(params)
        states = self._solver.get_states()
        for key in params:
            self._t[key] = states[key].t

    def get_parameters(self):
        return dict(self._params)

    def zero_grad(self):
        self._solver.zero_grad()

    def learning_rate(self):
        return self._solver.learning_rate()

    def set_learning_rate(self, lr: float):
        self._solver.set_learning_rate(lr)
        self._alpha = np.float32(lr)

    def get_states(self):
        """nnabla's states ({name: SolverState}), their ``t`` this solver's steps."""
        states = self._solver.get_states()
        for key, state in states.items():
            state.t = self._t[key]
        return states

    def set_states(self, states):
        self._solver.set_states(states)
        for key, state in states.items():
            self._t[key] = int(state.t)

    def weight_decay(self, decay_rate: float):
        """Add ``decay_rate * theta`` to every gradient: inside the next :meth:`update` (a
        second call before it applies the pending one first, as nnabla's would have)."""
        if self._decay:
            self._apply_decay()
        self._decay = np.float32(decay_rate)

    def update(self):
        decay, self._decay = self._decay, np.float32(0)
        self._run(decay, adam=True)

    # ------------------------------------------------------------- the work
    def _apply_decay(self):
        decay, self._decay = self._decay, np.float32(0)
        self._run(decay, adam=False)

    def _run(self, decay, adam: bool):
        states = self._solver.get_states()
        b1, b2 = float(self._beta1), float(self._beta2)
        blocks = []
        for key, p in self._params.items():
            theta, g = p.data.data.reshape(-1), p.grad.data.reshape(-1)
            if adam:
                pstate = states[key].pstate
                m, v = pstate["mean"].data.data.reshape(-1), pstate["var"].data.data.reshape(-1)
                self._t[key] = t = min(self._t[key] + 1, T_MAX)
                correction = np.float32(math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))
                alpha_t = self._alpha * correction
            else:
                m = v = alpha_t = None
            for lo in range(0, theta.size, BLOCK):
                hi = lo + BLOCK
                blocks.append((theta[lo:hi], g[lo:hi], m if m is None else m[lo:hi],
                               v if v is None else v[lo:hi], alpha_t))
        from .kernels.base import cell_workers, for_groups
        beta1, beta2, eps = self._beta1, self._beta2, self._eps

        def part(sl):
            tmp, tmp2 = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32)
            for theta, g, m, v, alpha_t in blocks[sl]:
                n = theta.size
                if not adam:
                    np.multiply(theta, decay, out=tmp[:n])
                    g += tmp[:n]
                    continue
                adam_block(theta, g, m, v, alpha_t, beta1, beta2, eps, decay, tmp[:n], tmp2[:n])
        for_groups(len(blocks), self._threads or cell_workers(), part)
